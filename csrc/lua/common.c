/* common.c: what every type of the binding uses (binding.h): errors and
 * argument checks, the types' metatables and the upvalues that find them,
 * the scratch buffer that reads fill, and calls back into Lua. */
#include "binding.h"

#include <stdarg.h>
#include <string.h>

const char *const TYPES[NTYPES] = {
    [T_BACKEND] = "backend.Backend", [T_BATCH] = "backend.BatchTx",
    [T_READ] = "backend.ReadTx", [T_CRT] = "backend.ConcurrentReadTx",
    [T_ROWS] = "backend.Rows", [T_SNAP] = "backend.Snapshot", [T_BOLT] = "backend.BoltFile",
    [T_JOB] = "backend.DefragJob", [T_GROUP] = "backend.ViewGroup",
};

/* ---- errors and arguments ---- */

int bl_fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushliteral(L, "backend: ");
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

int bl_raise(lua_State *L, const bk_error *err)
{
    return bl_fail(L, "%s", err->msg);
}

int bl_bad_arg(lua_State *L, int i, const char *fname, const char *why)
{
    lua_Debug ar;
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.namewhat &&
        !strcmp(ar.namewhat, "method") && --i == 0)
        return bl_fail(L, "calling '%s' on bad self (%s)", fname, why);
    return bl_fail(L, "bad argument #%d to '%s' (%s)", i, fname, why);
}

int bl_arg_error(lua_State *L, int i, const char *fname, const char *expected)
{
    const char *got = lua_isnone(L, i) ? "nil" : luaL_typename(L, i);
    return bl_bad_arg(L, i, fname, lua_pushfstring(L, "%s expected, got %s", expected, got));
}

/* Raises unless be is open in this process: "backend is closed", or why
 * it is another process's. */
void bl_check_open(lua_State *L, const bk_backend *be)
{
    bk_error err;
    if (!be)
        bl_fail(L, "backend is closed");
    if (bk_check_open(be, &err))
        bl_raise(L, &err);
}

/* A file name: a string, not empty, no zero byte (C would cut it there). */
const char *bl_check_path(lua_State *L, int i, const char *fname)
{
    size_t len;
    if (lua_type(L, i) != LUA_TSTRING)
        bl_arg_error(L, i, fname, "string");
    const char *path = lua_tolstring(L, i, &len);
    if (len == 0 || strlen(path) != len)
        bl_bad_arg(L, i, fname, len ? "path must not contain zero bytes" : "path must not be empty");
    return path;
}

void bl_check_type(lua_State *L, int i, int type, const char *fname)
{
    if (lua_type(L, i) != type)
        bl_arg_error(L, i, fname, lua_typename(L, type));
}

bk_slice bl_check_str(lua_State *L, int i, const char *fname)
{
    bk_slice s;
    if (lua_type(L, i) != LUA_TSTRING)
        bl_arg_error(L, i, fname, "string");
    s.data = lua_tolstring(L, i, &s.len);
    return s;
}

/* An optional integer (nil: 0); an integral float is an integer. */
int64_t bl_opt_integer(lua_State *L, int i, const char *fname)
{
    if (lua_isnoneornil(L, i))
        return 0;
    int ok;
    lua_Integer n = lua_tointegerx(L, i, &ok);
    if (!ok || lua_type(L, i) != LUA_TNUMBER)
        bl_arg_error(L, i, fname, "integer");
    return (int64_t)n;
}

/* ---- types ---- */

/* The key of the value at f in the table at t, pushed; 0 if none. */
static int find_key(lua_State *L, int f, int t)
{
    t = lua_absindex(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_rawequal(L, -1, f) && lua_type(L, -2) == LUA_TSTRING) {
            lua_pop(L, 1);
            return 1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* The name the running method has in its type, for an error: called
 * through pcall, a C function has no call-site name. The name stays
 * alive as the key in its table. */
static const char *method_name(lua_State *L)
{
    lua_Debug ar;
    const char *name = NULL;
    int top = lua_gettop(L);
    if (!lua_getstack(L, 0, &ar) || !lua_getinfo(L, "nf", &ar))
        return "?";
    for (int t = 0; t < NTYPES && !name; t++) {
        luaL_getmetatable(L, TYPES[t]);
        if (find_key(L, top + 1, -1) ||
            (lua_getfield(L, -1, "__index") == LUA_TTABLE && find_key(L, top + 1, -1)))
            name = lua_tostring(L, -1);
    }
    lua_settop(L, top);
    return name ? name : ar.name ? ar.name : "?";
}

void *bl_check_ud(lua_State *L, int i, int t)
{
    const lshared *sh = lua_touserdata(L, lua_upvalueindex(UP_SHARED));
    void *p = lua_touserdata(L, i);
    if (p && sh && lua_getmetatable(L, i)) {
        int same = lua_topointer(L, -1) == sh->mts[t];
        lua_pop(L, 1);
        if (same)
            return p;
    }
    if (!(p = luaL_testudata(L, i, TYPES[t])))
        bl_arg_error(L, i, method_name(L), TYPES[t]);
    return p;
}

void *bl_new_ud(lua_State *L, size_t size, int nuv, int t)
{
    void *p = lua_newuserdatauv(L, size, nuv);
    if (lua_type(L, lua_upvalueindex(UP_TYPES)) == LUA_TTABLE &&
        lua_rawgeti(L, lua_upvalueindex(UP_TYPES), t + 1) == LUA_TTABLE)
        lua_setmetatable(L, -2);
    else
        luaL_setmetatable(L, TYPES[t]);   /* a function without the upvalues */
    return p;
}

void bl_new_weak_table(lua_State *L, int narr)
{
    lua_createtable(L, narr, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_setmetatable(L, -2);   /* its own metatable */
}

static int result_gc(lua_State *L)
{
    bk_result *r = luaL_testudata(L, 1, MT_RESULT);
    if (r)
        bk_result_free(r);
    return 0;
}

#define REG_TYPES "backend.types"

/* The table of metatables and the lshared, its entry after the types. */
void bl_push_upvalues(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, REG_TYPES);
    if (lua_rawgeti(L, -1, NTYPES + 1) == LUA_TNIL) {
        lua_pop(L, 1);
        lshared *sh = lua_newuserdatauv(L, sizeof *sh, 0);
        memset(sh, 0, sizeof *sh);
        bk_result_init(&sh->scratch);
        if (luaL_newmetatable(L, MT_RESULT)) {
            lua_pushcfunction(L, result_gc);
            lua_setfield(L, -2, "__gc");
        }
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, NTYPES + 1);
    }
}

void bl_new_type(lua_State *L, int t, const luaL_Reg *methods, const luaL_Reg *meta)
{
    luaL_newmetatable(L, TYPES[t]);   /* kept if it exists: reloads are fine */
    bl_push_upvalues(L);              /* mt, types, shared */
    ((lshared *)lua_touserdata(L, -1))->mts[t] = lua_topointer(L, -3);
    lua_pushvalue(L, -3);
    lua_rawseti(L, -3, t + 1);
    luaL_setfuncs(L, meta, UP_COUNT);
    if (lua_getfield(L, -1, "__index") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "__index");
    }
    bl_push_upvalues(L);              /* mt, __index, types, shared */
    luaL_setfuncs(L, methods, UP_COUNT);
    lua_pop(L, 2);
}

/* ---- calling back into Lua ---- */

/* Runs body(L) on the first nargs arguments with *busy raised, protected:
 * while a method's callbacks run, close() on its object raises (it would
 * free what the body still uses), and however the body ends (a callback's
 * error, a yield refused across the C call) *busy comes down before the
 * error goes on. The arguments stay on this frame, keeping the object. */
int bl_busy_call(lua_State *L, int nargs, int *busy, lua_CFunction body)
{
    lua_settop(L, nargs);
    lua_pushcfunction(L, body);
    for (int i = 1; i <= nargs; i++)
        lua_pushvalue(L, i);
    ++*busy;
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
    --*busy;
    if (rc != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - nargs;
}

/* progress(done, total) at stack slot fn (0: none): LUA_OK, or an error
 * with its value pushed. */
int bl_call_progress(lua_State *L, int fn, uint64_t done, uint64_t total)
{
    if (!fn)
        return LUA_OK;
    lua_pushvalue(L, fn);
    lua_pushinteger(L, (lua_Integer)done);
    lua_pushinteger(L, (lua_Integer)total);
    return lua_pcall(L, 2, 0, 0);
}

int bl_progress(void *ctx, uint64_t done, uint64_t total)
{
    bl_progress_ctx *p = ctx;
    if (bl_call_progress(p->L, p->fn, done, total) != LUA_OK)
        return 1;
    if (p->stream && !p->stream->closef) {
        lua_pushliteral(p->L, "backend: the file was closed during write_to");
        return 1;
    }
    return 0;
}

void bl_set_integer(lua_State *L, const char *k, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* ---- reads: the core fills the scratch buffer (with its locks held), the
 * binding makes Lua values of it afterwards (with none held: making a value
 * can run the collector, whose __gc may close a view). A __gc may also read
 * into the scratch meanwhile: what is made from it is checked against
 * bl_scratch_fills and made again from a new read if the count moved. ---- */

/* The scratch buffer, for a read into it. */
bk_result *bl_scratch(lua_State *L)
{
    lshared *sh = lua_touserdata(L, lua_upvalueindex(UP_SHARED));
    sh->fills++;
    return &sh->scratch;
}

unsigned bl_scratch_fills(lua_State *L)
{
    const lshared *sh = lua_touserdata(L, lua_upvalueindex(UP_SHARED));
    return sh->fills;
}

/* The scratch buffer's memory goes back once a read made it big. */
void bl_scratch_done(bk_result *r)
{
    if (r->size > ((size_t)4 << 20))
        bk_result_free(r);
}

/* The value of the first entry of r, or nil. */
void bl_push_first_value(lua_State *L, bk_result *r)
{
    if (r->count) {
        bk_slice v = bk_result_value(r, 0);
        lua_pushlstring(L, v.data, v.len);
    } else {
        lua_pushnil(L);
    }
    bl_scratch_done(r);
}

/* __tostring of an object that a defrag can invalidate, rc its check. */
int bl_push_state(lua_State *L, int type, const void *p, int rc)
{
    if (rc == BK_EINVALID)
        lua_pushfstring(L, "%s (invalidated)", TYPES[type]);
    else if (rc == BK_OK)
        lua_pushfstring(L, "%s (%p)", TYPES[type], p);
    else
        lua_pushfstring(L, "%s (closed)", TYPES[type]);
    return 1;
}
