/* rows.c: the Rows type, one read's keys and values in one block (what
 * tx:rows() returns, and the chunks that pairs() walks). */
#include "binding.h"

#include <string.h>

static char *rows_data(lrows *rows)
{
    return (char *)&rows->bounds[2 * rows->n + 1];
}

/* A Rows holding a copy of r: one allocation, no finalizer. */
lrows *bl_push_rows(lua_State *L, bk_result *r)
{
    size_t n = r->count;
    lrows *rows = bl_new_ud(L, sizeof *rows + (2 * n + 1) * sizeof(size_t) + r->used, 0, T_ROWS);
    rows->n = n;
    for (size_t i = 0; i < n; i++) {   /* keys and values lie in order in r->data */
        rows->bounds[2 * i] = r->offs[4 * i];
        rows->bounds[2 * i + 1] = r->offs[4 * i + 2];
    }
    rows->bounds[2 * n] = r->used;
    if (r->used)
        memcpy(rows_data(rows), r->data, r->used);
    bl_scratch_done(r);
    return rows;
}

/* Part j of the rows: key i is part 2i, its value 2i + 1. */
bk_slice bl_rows_part(lrows *rows, size_t j)
{
    bk_slice s = { rows_data(rows) + rows->bounds[j], rows->bounds[j + 1] - rows->bounds[j] };
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
