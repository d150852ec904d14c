/* rows.c: the Rows type, one read's keys and values in one block (what
 * tx:rows() returns, and the chunks that pairs() walks). */
#include "binding.h"

#include <string.h>

/* The bytes r takes as a block: its bounds, then its data. */
static size_t block_size(const bk_result *r)
{
    return (2 * r->count + 1) * sizeof(size_t) + r->used;
}

static char *rows_data(const lrows *rows)
{
    return (char *)&rows->block[2 * rows->n + 1];
}

/* A copy of r into the block, which is big enough. */
static void fill(lrows *rows, bk_result *r)
{
    size_t n = r->count;
    rows->n = n;
    for (size_t i = 0; i < n; i++) {   /* keys and values lie in order in r->data */
        rows->block[2 * i] = r->offs[4 * i];
        rows->block[2 * i + 1] = r->offs[4 * i + 2];
    }
    rows->block[2 * n] = r->used;
    if (r->used)
        memcpy(rows_data(rows), r->data, r->used);
    bl_scratch_done(r);
}

/* A Rows holding a copy of r: one allocation, no finalizer. NULL, with
 * nothing pushed, if the allocation ran a __gc that read into the scratch:
 * r is another read now, which the block may not hold. */
lrows *bl_push_rows(lua_State *L, bk_result *r)
{
    unsigned fills = bl_scratch_fills(L);
    size_t size = block_size(r);
    lrows *rows = bl_new_ud(L, sizeof *rows + size, 1, T_ROWS);
    if (bl_scratch_fills(L) != fills) {
        lua_pop(L, 1);
        return NULL;
    }
    rows->cap = size;
    rows->block = rows->inline_block;
    fill(rows, r);
    return rows;
}

/* The Rows at idx (absolute or an upvalue) made a copy of r instead: no
 * allocation when r fits in its block, so the memory stays warm from one
 * chunk to the next. The new block is made before anything changes (it
 * may raise); the old one goes with the user value it replaces. 0, with
 * nothing changed, if making the block ran a __gc that read into the
 * scratch (as bl_push_rows). */
int bl_refill_rows(lua_State *L, int idx, bk_result *r)
{
    lrows *rows = lua_touserdata(L, idx);
    size_t size = block_size(r);
    if (size > rows->cap) {
        unsigned fills = bl_scratch_fills(L);
        size_t *block = lua_newuserdatauv(L, size, 0);
        if (bl_scratch_fills(L) != fills) {
            lua_pop(L, 1);
            return 0;
        }
        lua_setiuservalue(L, idx, 1);
        rows->block = block;
        rows->cap = size;
    }
    fill(rows, r);
    return 1;
}

/* Part j of the rows: key i is part 2i, its value 2i + 1. */
bk_slice bl_rows_part(lrows *rows, size_t j)
{
    bk_slice s = { rows_data(rows) + rows->block[j], rows->block[j + 1] - rows->block[j] };
    return s;
}

void bl_push_part(lua_State *L, lrows *rows, size_t j)
{
    bk_slice s = bl_rows_part(rows, j);
    lua_pushlstring(L, s.data, s.len);
}

/* ---- its methods ---- */

static lrows *check_rows(lua_State *L)
{
    return bl_check_ud(L, 1, T_ROWS);
}

/* Argument 2: a row number, 1 .. #rows; returns it from 0. */
static size_t check_row(lua_State *L, const lrows *rows, const char *fname)
{
    int ok;
    lua_Integer i = lua_tointegerx(L, 2, &ok);
    if (!ok || lua_type(L, 2) != LUA_TNUMBER)
        bl_arg_error(L, 2, fname, "integer");
    if (i < 1 || (lua_Unsigned)i > rows->n)
        bl_bad_arg(L, 2, fname, rows->n ? lua_pushfstring(L, "row %I out of range 1..%I", i,
                                                       (lua_Integer)rows->n)
                                     : lua_pushfstring(L, "row %I out of range: no rows", i));
    return (size_t)i - 1;
}

static int l_rows_key(lua_State *L)
{
    lrows *rows = check_rows(L);
    bl_push_part(L, rows, 2 * check_row(L, rows, "key"));
    return 1;
}

static int l_rows_value(lua_State *L)
{
    lrows *rows = check_rows(L);
    bl_push_part(L, rows, 2 * check_row(L, rows, "value") + 1);
    return 1;
}

/* Every key (which 0) or every value (1), as a table. */
static int push_column(lua_State *L, int which)
{
    lrows *rows = check_rows(L);
    lua_createtable(L, (int)rows->n, 0);
    for (size_t i = 0; i < rows->n; i++) {
        bl_push_part(L, rows, 2 * i + (size_t)which);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_rows_keys(lua_State *L)
{
    return push_column(L, 0);
}

static int l_rows_values(lua_State *L)
{
    return push_column(L, 1);
}

static int l_rows_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_rows(L)->n);
    return 1;
}

static int l_rows_tostring(lua_State *L)
{
    lua_pushfstring(L, "%s (%I rows)", TYPES[T_ROWS], (lua_Integer)check_rows(L)->n);
    return 1;
}

void bl_open_rows(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "key", l_rows_key }, { "value", l_rows_value },
        { "keys", l_rows_keys }, { "values", l_rows_values }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__len", l_rows_len }, { "__tostring", l_rows_tostring }, { NULL, NULL } };
    bl_new_type(L, T_ROWS, methods, meta);
}
