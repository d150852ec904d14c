/* lbackend.c: the Lua binding (module backend.core), the only C that knows
 * Lua. It translates: arguments are checked strictly (no number-to-string
 * coercion), core errors are raised as "backend: ..." messages, and every
 * object is a userdata with a named metatable, created closed before the
 * core resource is taken (liolib's pattern). Children hold their own core
 * reference, so Lua's collection order can never free a backend under them. */
#include "core/backend.h"
#include "bolt/bolt.h"
#include "interrupt.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MT_BACKEND "backend.Backend"
#define MT_BATCH "backend.BatchTx"
#define MT_READ "backend.ReadTx"
#define MT_CRT "backend.ConcurrentReadTx"
#define MT_SNAP "backend.Snapshot"
#define MT_RESULT "backend.Result"
#define MT_BOLT "backend.BoltFile"
#define MT_ROWS "backend.Rows"

/* The upvalues of every method (set_funcs): its name, the metatables of
 * the types below by their place in TYPES, and an lshared. No string is
 * made or hashed to find a metatable. */
enum { UP_NAME = 1, UP_TYPES, UP_SHARED };
static const char *const TYPES[] = { MT_BACKEND, MT_BATCH, MT_READ, MT_CRT, MT_ROWS };
#define NTYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

/* One per Lua state. A read fills the scratch buffer, and the binding
 * makes Lua values of it before it returns (first member: MT_RESULT's
 * __gc frees it). check_ud compares metatables by address, with mts:
 * they live as long as the registry. */
typedef struct lshared {
    bk_result scratch;
    const void *mts[NTYPES + 1];
} lshared;

/* mt's place in TYPES, from 1; 0 if it has none. */
static int type_index(const char *mt)
{
    for (int i = 0; i < NTYPES; i++)
        if (TYPES[i] == mt)
            return i + 1;
    return 0;
}

/* Backend user values. The BatchTx has one, UV_TIES: a table with weak
 * values, [TIE_OWNER] the coroutine that took the lock, [TIE_BACKEND] the
 * Backend (for its logger; the tx does not keep it alive). */
enum { UV_BATCH = 1, UV_READ, UV_LOGGER, UV_COUNT = UV_LOGGER };
enum { UV_TIES = 1, TIE_OWNER = 1, TIE_BACKEND = 2 };

typedef struct lbackend {
    bk_backend *be;
    int delivering;      /* the logger is being called (deliver_logs) */
} lbackend;
typedef struct ltx {
    bk_backend *be;      /* own reference; NULL in a CRT (its view has one) */
    bk_view *view;       /* ReadTx between rlock and runlock; CRT until close */
    int rlocks;
} ltx;
/* Rows: the result of one read, in one block: key i (from 0) is
 * data[bounds[2i], bounds[2i + 1]), its value runs to bounds[2i + 2]. */
typedef struct lrows {
    size_t n;
    size_t bounds[];     /* 2n + 1, then the data */
} lrows;
/* busy: calls running that call back into Lua (busy_call) */
typedef struct lsnap { bk_snapshot *snap; int busy; } lsnap;
typedef struct lbolt { bk_bolt *bolt; int busy; } lbolt;

/* ---- errors and arguments ---- */

/* Like luaL_error, without the caller's position: every message starts
 * with "backend: ", as the API promises. */
static int fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushliteral(L, "backend: ");
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

static int raise(lua_State *L, const bk_error *err)
{
    return fail(L, "%s", err->msg);
}

/* "bad argument #i to 'fname' (why)", numbered as Lua numbers them: a
 * method call does not count self. */
static int bad_arg(lua_State *L, int i, const char *fname, const char *why)
{
    lua_Debug ar;
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.namewhat &&
        !strcmp(ar.namewhat, "method") && --i == 0)
        return fail(L, "calling '%s' on bad self (%s)", fname, why);
    return fail(L, "bad argument #%d to '%s' (%s)", i, fname, why);
}

static int arg_error(lua_State *L, int i, const char *fname, const char *expected)
{
    const char *got = lua_isnone(L, i) ? "nil" : luaL_typename(L, i);
    return bad_arg(L, i, fname, lua_pushfstring(L, "%s expected, got %s", expected, got));
}

/* A file name: a string, not empty, no zero byte (C would cut it there). */
static const char *check_path(lua_State *L, int i, const char *fname)
{
    size_t len;
    if (lua_type(L, i) != LUA_TSTRING)
        arg_error(L, i, fname, "string");
    const char *path = lua_tolstring(L, i, &len);
    if (len == 0 || strlen(path) != len)
        bad_arg(L, i, fname, len ? "path must not contain zero bytes" : "path must not be empty");
    return path;
}

/* The metatable named mt, pushed: from the method's upvalue when it has
 * one (no string made or hashed), else from the registry. */
static void push_metatable(lua_State *L, const char *mt)
{
    int types = lua_upvalueindex(UP_TYPES), i = type_index(mt);
    if (i && lua_type(L, types) == LUA_TTABLE) {
        if (lua_rawgeti(L, types, i) == LUA_TTABLE)
            return;
        lua_pop(L, 1);
    }
    luaL_getmetatable(L, mt);
}

/* A new userdata of type mt, pushed. */
static void *new_ud(lua_State *L, size_t size, int nuv, const char *mt)
{
    void *p = lua_newuserdatauv(L, size, nuv);
    push_metatable(L, mt);
    lua_setmetatable(L, -2);
    return p;
}

static void *check_ud(lua_State *L, int i, const char *mt)
{
    const lshared *sh = lua_touserdata(L, lua_upvalueindex(UP_SHARED));
    void *p = lua_touserdata(L, i);
    int t = type_index(mt);
    if (p && sh && t && lua_getmetatable(L, i)) {
        int same = lua_topointer(L, -1) == sh->mts[t];
        lua_pop(L, 1);
        if (same)
            return p;
    }
    p = luaL_testudata(L, i, mt);
    if (!p) {
        /* Methods carry their name as upvalue 1 (set_funcs): called through
         * pcall, a C function has no call-site name. */
        lua_Debug ar;
        const char *fname = lua_tostring(L, lua_upvalueindex(1));
        if (!fname)
            fname = lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name
                ? ar.name : "?";
        arg_error(L, i, fname, mt);
    }
    return p;
}

static void check_type(lua_State *L, int i, int type, const char *fname)
{
    if (lua_type(L, i) != type)
        arg_error(L, i, fname, lua_typename(L, type));
}

static bk_slice check_str(lua_State *L, int i, const char *fname)
{
    bk_slice s;
    if (lua_type(L, i) != LUA_TSTRING)
        arg_error(L, i, fname, "string");
    s.data = lua_tolstring(L, i, &s.len);
    return s;
}

/* An optional integer (nil: 0); an integral float is an integer. */
static int64_t opt_integer(lua_State *L, int i, const char *fname)
{
    if (lua_isnoneornil(L, i))
        return 0;
    int ok;
    lua_Integer n = lua_tointegerx(L, i, &ok);
    if (!ok || lua_type(L, i) != LUA_TNUMBER)
        arg_error(L, i, fname, "integer");
    return (int64_t)n;
}

/* ---- calling back into Lua ---- */

/* Runs body(L) on the first nargs arguments with *busy raised, protected:
 * while a method's callbacks run, close() on its object raises (it would
 * free what the body still uses), and however the body ends (a callback's
 * error, a yield refused across the C call) *busy comes down before the
 * error goes on. The arguments stay on this frame, keeping the object. */
static int busy_call(lua_State *L, int nargs, int *busy, lua_CFunction body)
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

/* ---- logging: core messages are delivered here, on the Lua thread ---- */

/* A delivery's backend and the entry it found first. */
typedef struct delivery {
    bk_backend *be;
    bk_log_entry first;
} delivery;

/* lua.c's Ctrl-C error ("interrupted!", maybe after "chunk:line: "), which
 * a pcall around the logger must let through (backend.interrupted). */
static int is_interrupt(lua_State *L, int idx)
{
    static const char tail[] = ": interrupted!";
    size_t len, n = sizeof tail - 1;
    const char *msg = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    if (!msg || !strcmp(msg, tail + 2))
        return msg != NULL;
    /* "...:<line>: interrupted!" on one line */
    if (len < n + 2 || memchr(msg, '\n', len) || strcmp(msg + len - n, tail))
        return 0;
    size_t i = len - n;
    while (i > 0 && msg[i - 1] >= '0' && msg[i - 1] <= '9')
        i--;
    return i < len - n && i > 0 && msg[i - 1] == ':';
}

/* interrupted(err): the facade's backend.interrupted, the one definition. */
static int l_interrupted(lua_State *L)
{
    lua_pushboolean(L, is_interrupt(L, 1));
    return 1;
}

/* (backend, delivery): takes every queued entry first and only then calls
 * the logger, so the backend is not touched once the logger has run (it
 * may close or collect it) and what the logger's own calls log waits for
 * the next call instead of feeding this one without end. */
static int deliver_queued(lua_State *L)
{
    delivery *d = lua_touserdata(L, 2);
    int has_logger = lua_getiuservalue(L, 1, UV_LOGGER) == LUA_TFUNCTION;   /* 3 */
    bk_log_entry e = d->first;
    lua_newtable(L);   /* 4: level, message, level, message, ... */
    lua_Integer n = 0;
    do {
        if (!has_logger)
            continue;   /* drained silently */
        lua_pushstring(L, e.level);
        lua_rawseti(L, 4, ++n);
        lua_pushstring(L, e.message);
        lua_rawseti(L, 4, ++n);
    } while (bk_log_pop(d->be, &e));
    int interrupted = 0;
    for (lua_Integer i = 1; i < n; i += 2) {
        lua_pushvalue(L, 3);
        lua_rawgeti(L, 4, i);
        lua_rawgeti(L, 4, i + 1);
        lua_newtable(L);   /* fields: the message says it all so far */
        if (lua_pcall(L, 3, 0, 0) == LUA_OK)
            continue;
        if (!interrupted && is_interrupt(L, -1))
            interrupted = lua_gettop(L);   /* raised once all are delivered */
        else
            lua_pop(L, 1);   /* a failing logger must not fail storage */
    }
    return interrupted ? lua_error(L) : 0;
}

/* Calls the logger with what the core queued, unless a delivery is already
 * running further up the stack (the logger called the backend): that one
 * leaves the rest for the next call. */
static void deliver_logs(lua_State *L, int backend_idx)
{
    lbackend *lb = lua_touserdata(L, backend_idx);
    delivery d;
    if (!lb->be || lb->delivering || !bk_log_pop(lb->be, &d.first))
        return;
    d.be = lb->be;
    backend_idx = lua_absindex(L, backend_idx);
    lua_pushcfunction(L, deliver_queued);
    lua_pushvalue(L, backend_idx);
    lua_pushlightuserdata(L, &d);
    lb->delivering = 1;
    int rc = lua_pcall(L, 2, 0, 0);   /* out of memory: the entries are lost */
    lb->delivering = 0;
    if (rc != LUA_OK && is_interrupt(L, -1))
        lua_error(L);   /* Ctrl-C, maybe during the logger: not a logger's failure */
    if (rc != LUA_OK)
        lua_pop(L, 1);
}

/* ---- Backend ---- */

static lbackend *check_backend(lua_State *L, int i)
{
    lbackend *lb = check_ud(L, i, MT_BACKEND);
    deliver_logs(L, i);   /* first: the logger may close the backend */
    if (!lb->be || bk_is_closed(lb->be))
        fail(L, "backend is closed");
    return lb;
}

static int field_number(lua_State *L, int t, const char *name, double *out)
{
    int type = lua_getfield(L, t, name);
    if (type == LUA_TNUMBER)
        *out = lua_tonumber(L, -1);
    else if (type != LUA_TNIL)
        fail(L, "config.%s must be a number", name);
    lua_pop(L, 1);
    return type == LUA_TNUMBER;
}

static void field_integer(lua_State *L, int t, const char *name, uint64_t *out)
{
    int type = lua_getfield(L, t, name), ok = 0;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (type == LUA_TNUMBER && ok && n >= 0)
        *out = (uint64_t)n;
    else if (type != LUA_TNIL)
        fail(L, "config.%s must be a non-negative integer", name);
    lua_pop(L, 1);
}

static void field_bool(lua_State *L, int t, const char *name, int *out)
{
    int type = lua_getfield(L, t, name);
    if (type == LUA_TBOOLEAN)
        *out = lua_toboolean(L, -1);
    else if (type != LUA_TNIL)
        fail(L, "config.%s must be a boolean", name);
    lua_pop(L, 1);
}

/* core.open(config): the facade has checked the field names. */
/* The config table at i (checked by the facade) into cfg; its path string
 * is left on the stack, which keeps cfg->path alive. */
static void read_config(lua_State *L, int i, const char *fname, bk_config *cfg)
{
    size_t len;
    check_type(L, i, LUA_TTABLE, fname);
    bk_config_default(cfg);
    if (lua_getfield(L, i, "path") != LUA_TSTRING)
        fail(L, "config.path must be a string");
    cfg->path = lua_tolstring(L, -1, &len);
    if (strlen(cfg->path) != len)
        fail(L, "config.path must not contain zero bytes");
    field_number(L, i, "batch_interval", &cfg->batch_interval);
    field_integer(L, i, "batch_limit", &cfg->batch_limit);
    field_integer(L, i, "mmap_size", &cfg->mmap_size);
    field_integer(L, i, "max_buffered_bytes", &cfg->max_buffered_bytes);
    uint64_t readers = cfg->max_readers;   /* 0 too goes to bk_open, which refuses it */
    field_integer(L, i, "max_readers", &readers);
    cfg->max_readers = readers > 100000 ? 100001 : (unsigned)readers;
    field_bool(L, i, "no_fsync", &cfg->no_fsync);
    field_bool(L, i, "readonly", &cfg->readonly);
    field_bool(L, i, "remove_on_close", &cfg->owns_dir);
}

static int l_open(lua_State *L)
{
    bk_config cfg;
    bk_error err;
    read_config(L, 1, "open", &cfg);
    int logger = lua_getfield(L, 1, "logger");
    if (logger != LUA_TNIL && logger != LUA_TFUNCTION)
        return fail(L, "config.logger must be a function");

    lbackend *lb = lua_newuserdatauv(L, sizeof *lb, UV_COUNT);
    lb->be = NULL;   /* closed until the core has opened */
    lb->delivering = 0;
    luaL_setmetatable(L, MT_BACKEND);
    lua_rotate(L, -2, 1);
    lua_setiuservalue(L, -2, UV_LOGGER);
    if (bk_open(&cfg, &lb->be, &err))
        return raise(L, &err);
    return 1;
}

static int l_backend_close(lua_State *L)
{
    lbackend *lb = check_ud(L, 1, MT_BACKEND);
    bk_error err;
    if (!lb->be)
        return 0;
    int rc = bk_close(lb->be, 0, &err);
    deliver_logs(L, 1);
    if (rc)
        return raise(L, &err);
    return 0;
}

static int l_backend_gc(lua_State *L)
{
    lbackend *lb = check_ud(L, 1, MT_BACKEND);
    bk_error err;
    if (!lb->be)
        return 0;
    bk_close(lb->be, 1, &err);   /* nobody is left to report a failure to */
    deliver_logs(L, 1);
    bk_free(lb->be);
    lb->be = NULL;
    return 0;
}

static int l_backend_tostring(lua_State *L)
{
    lbackend *lb = check_ud(L, 1, MT_BACKEND);
    if (!lb->be || bk_is_closed(lb->be))
        lua_pushstring(L, "backend.Backend (closed)");
    else
        lua_pushfstring(L, "backend.Backend (%s)", bk_path(lb->be));
    return 1;
}

/* The BatchTx and the ReadTx are one per backend, kept as user values. */
static int cached_tx(lua_State *L, int uv, const char *mt, int nuv)
{
    lbackend *lb = check_backend(L, 1);
    if (lua_getiuservalue(L, 1, uv) == LUA_TUSERDATA)
        return 1;
    lua_pop(L, 1);
    ltx *t = lua_newuserdatauv(L, sizeof *t, nuv);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, mt);
    t->be = lb->be;
    bk_ref(t->be);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, uv);
    return 1;
}

static int l_batch_tx(lua_State *L)
{
    if (cached_tx(L, UV_BATCH, MT_BATCH, 1) && lua_getiuservalue(L, -1, UV_TIES) == LUA_TNIL) {
        lua_createtable(L, 2, 0);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, TIE_BACKEND);
        lua_setiuservalue(L, -3, UV_TIES);
    }
    lua_pop(L, 1);
    return 1;
}

static int l_read_tx(lua_State *L)
{
    return cached_tx(L, UV_READ, MT_READ, 0);
}

static int l_concurrent_read_tx(lua_State *L)
{
    lbackend *lb = check_backend(L, 1);
    bk_error err;
    ltx *t = new_ud(L, sizeof *t, 0, MT_CRT);
    memset(t, 0, sizeof *t);
    if (bk_view_open(lb->be, &t->view, &err))
        return raise(L, &err);
    return 1;
}

static int l_snapshot(lua_State *L)
{
    lbackend *lb = check_backend(L, 1);
    bk_error err;
    lsnap *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->snap = NULL;
    s->busy = 0;
    luaL_setmetatable(L, MT_SNAP);
    int rc = bk_snapshot_open(lb->be, &s->snap, &err);
    deliver_logs(L, 1);
    if (rc)
        return raise(L, &err);
    return 1;
}

static int l_hash(lua_State *L)
{
    lbackend *lb = check_backend(L, 1);
    bk_error err;
    uint32_t crc;
    size_t n = 0;
    if (!lua_isnoneornil(L, 2)) {
        check_type(L, 2, LUA_TTABLE, "hash");
        /* Count, then collect {bucket, key} pairs whose value is true. */
        for (int pass = 0; pass < 2; pass++) {
            bk_slice *pairs = pass ? lua_newuserdatauv(L, (n ? n : 1) * 2 * sizeof *pairs, 0) : NULL;
            int pairs_idx = lua_gettop(L);
            size_t i = 0;
            lua_pushnil(L);
            while (lua_next(L, 2)) {
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE)
                    return fail(L, "hash ignores must map bucket names to tables");
                lua_pushnil(L);
                while (lua_next(L, -2)) {
                    if (lua_type(L, -2) != LUA_TSTRING)
                        return fail(L, "hash ignores: keys must be strings");
                    if (lua_type(L, -1) != LUA_TBOOLEAN)
                        return fail(L, "hash ignores: values must be booleans");
                    if (lua_toboolean(L, -1) && pass) {
                        pairs[2 * i].data = lua_tolstring(L, -4, &pairs[2 * i].len);
                        pairs[2 * i + 1].data = lua_tolstring(L, -2, &pairs[2 * i + 1].len);
                    }
                    i += lua_toboolean(L, -1);
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            }
            if (!pass) {
                n = i;
                continue;
            }
            /* The strings stay alive: table 2 holds them. */
            if (bk_hash(lb->be, pairs, n, &crc, &err))
                return raise(L, &err);
            lua_settop(L, pairs_idx - 1);
        }
    } else if (bk_hash(lb->be, NULL, 0, &crc, &err)) {
        return raise(L, &err);
    }
    lua_pushinteger(L, (lua_Integer)crc);
    return 1;
}

static int stats_or_raise(lua_State *L, bk_stats *st)
{
    lbackend *lb = check_backend(L, 1);
    bk_error err;
    if (bk_stats_get(lb->be, st, &err))
        return raise(L, &err);
    return 0;
}

#define STAT_GETTER(fname, field)                                \
    static int fname(lua_State *L)                               \
    {                                                            \
        bk_stats st;                                             \
        stats_or_raise(L, &st);                                  \
        lua_pushinteger(L, (lua_Integer)st.field);               \
        return 1;                                                \
    }
STAT_GETTER(l_size, size)
STAT_GETTER(l_size_in_use, size_in_use)
STAT_GETTER(l_open_read_tx_n, open_read_tx_n)
STAT_GETTER(l_commits, commits)

static void set_integer(lua_State *L, const char *k, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* { count, sum, buckets = { { le = bound, count = cumulative }... } } */
static void push_hist(lua_State *L, const bk_hist *h, const char *name)
{
    lua_createtable(L, 0, 3);
    set_integer(L, "count", h->count);
    lua_pushnumber(L, h->sum);
    lua_setfield(L, -2, "sum");
    lua_createtable(L, h->n, 0);
    uint64_t below = 0;
    double bound = h->first;
    for (int i = 0; i < h->n; i++, bound *= 2) {
        below += h->counts[i];
        lua_createtable(L, 0, 2);
        lua_pushnumber(L, bound);
        lua_setfield(L, -2, "le");
        set_integer(L, "count", below);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "buckets");
    lua_setfield(L, -2, name);
}

static int l_stats(lua_State *L)
{
    bk_stats st;
    stats_or_raise(L, &st);
    struct { const char *name; uint64_t v; } ints[] = {
        { "commits", st.commits }, { "pending", st.pending },
        { "buffered_writes", st.buffered_writes }, { "buffered_bytes", st.buffered_bytes },
        { "queued_batches", st.queued_batches }, { "map_size", st.map_size },
        { "page_size", st.page_size }, { "size", st.size },
        { "size_in_use", st.size_in_use }, { "open_read_tx_n", st.open_read_tx_n },
        { "map_grows", st.map_grows }, { "commit_failures", st.commit_failures },
        { "rollbacks", st.rollbacks }, { "backpressure_waits", st.backpressure_waits },
    };
    struct { const char *name; double v; } secs[] = {
        { "last_commit_seconds", st.last_commit_seconds },
        { "total_commit_seconds", st.total_commit_seconds },
        { "defrag_seconds", st.defrag_seconds }, { "snapshot_seconds", st.snapshot_seconds },
        { "backpressure_seconds", st.backpressure_seconds },
    };
    lua_createtable(L, 0, 24);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        lua_pushinteger(L, (lua_Integer)ints[i].v);
        lua_setfield(L, -2, ints[i].name);
    }
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        lua_pushnumber(L, secs[i].v);
        lua_setfield(L, -2, secs[i].name);
    }
    lua_pushboolean(L, st.defrag_inflight);
    lua_setfield(L, -2, "defrag_inflight");
    push_hist(L, &st.commit_hist, "commit_histogram");
    push_hist(L, &st.defrag_hist, "defrag_histogram");
    push_hist(L, &st.snapshot_hist, "snapshot_histogram");
    return 1;
}

static int simple_op(lua_State *L, int (*op)(bk_backend *, bk_error *))
{
    lbackend *lb = check_backend(L, 1);
    bk_error err;
    int rc = op(lb->be, &err);
    deliver_logs(L, 1);
    if (rc)
        return raise(L, &err);
    return 0;
}

static int l_force_commit(lua_State *L)
{
    return simple_op(L, bk_force_commit);
}

static int l_defrag(lua_State *L)
{
    return simple_op(L, bk_defrag);
}

static int l_path(lua_State *L)
{
    lbackend *lb = check_backend(L, 1);
    lua_pushstring(L, bk_path(lb->be));
    return 1;
}

/* ---- reads: the core fills the scratch buffer (with its locks held),
 * the binding makes Lua values of it afterwards (with none held: making a
 * value can run the collector, whose __gc may close a view) ---- */

static bk_result *scratch(lua_State *L)
{
    lshared *sh = lua_touserdata(L, lua_upvalueindex(UP_SHARED));
    return &sh->scratch;
}

/* The scratch buffer's memory goes back once a read made it big. */
static void scratch_done(bk_result *r)
{
    if (r->size > ((size_t)4 << 20))
        bk_result_free(r);
}

static int l_result_gc(lua_State *L)
{
    bk_result *r = luaL_testudata(L, 1, MT_RESULT);
    if (r)
        bk_result_free(r);
    return 0;
}

/* The value of the first entry of r, or nil. */
static void push_first_value(lua_State *L, bk_result *r)
{
    if (r->count) {
        bk_slice v = bk_result_value(r, 0);
        lua_pushlstring(L, v.data, v.len);
    } else {
        lua_pushnil(L);
    }
    scratch_done(r);
}

static int l_committed_get(lua_State *L)
{
    lbackend *lb = check_backend(L, 1);
    bk_slice bucket = check_str(L, 2, "_committed_get"), key = check_str(L, 3, "_committed_get");
    bk_error err;
    if (bk_committed_get(lb->be, bucket, key, scratch(L), &err))
        return raise(L, &err);
    push_first_value(L, scratch(L));
    return 1;
}

/* be:bucket_stats(): LMDB's numbers for each bucket, committed first. */
static int l_bucket_stats(lua_State *L)
{
    lbackend *lb = check_backend(L, 1);
    bk_bucket_stat *all = lua_newuserdatauv(L, BK_MAX_BUCKETS * sizeof *all, 0);
    size_t n;
    bk_error err;
    if (bk_bucket_stats(lb->be, all, BK_MAX_BUCKETS, &n, &err))
        return raise(L, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushlstring(L, all[i].name.data, all[i].name.len);
        lua_setfield(L, -2, "name");
        set_integer(L, "entries", all[i].entries);
        set_integer(L, "depth", all[i].depth);
        set_integer(L, "branch_pages", all[i].branch_pages);
        set_integer(L, "leaf_pages", all[i].leaf_pages);
        set_integer(L, "overflow_pages", all[i].overflow_pages);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* ---- transactions ---- */

static ltx *check_tx(lua_State *L, const char *mt, const char *what)
{
    ltx *t = check_ud(L, 1, mt);
    if (!t->be || bk_is_closed(t->be))
        fail(L, "%s is closed", what);
    return t;
}

static ltx *check_batch(lua_State *L)
{
    return check_tx(L, MT_BATCH, "backend");
}

/* The shared ReadTx: rlock() takes a view, the last runlock() ends it. */
static ltx *check_read(lua_State *L)
{
    return check_tx(L, MT_READ, "backend");
}

/* ConcurrentReadTx: a view from creation to close (or runlock). */
static ltx *check_crt(lua_State *L)
{
    ltx *t = check_ud(L, 1, MT_CRT);
    if (!t->view)
        fail(L, "concurrent read tx is closed");
    return t;
}

/* What tx:_check() raises beyond the checks above: a read can go on only
 * if these return. Iterators call them at every step, so a closed or
 * invalidated tx stops them at once. */
static void view_ready(lua_State *L, ltx *t)
{
    bk_error err;
    if (!t->view)
        fail(L, "read tx is not locked (call rlock() first)");
    if (bk_view_check(t->view, &err))
        raise(L, &err);
}

static void batch_ready(lua_State *L, ltx *t)
{
    if (!t->be || bk_is_closed(t->be))
        fail(L, "backend is closed");
    if (!bk_locked_by_me(t->be))
        fail(L, "batch tx is not locked");
}

static void read_ready(lua_State *L, ltx *t)
{
    if (!t->be || bk_is_closed(t->be))
        fail(L, "backend is closed");
    view_ready(L, t);
}

static void crt_ready(lua_State *L, ltx *t)
{
    if (!t->view)
        fail(L, "concurrent read tx is closed");
    view_ready(L, t);
}

/* Reads through a tx (q NULL: the bucket names). */
static int batch_read(ltx *t, const bk_query *q, bk_result *out, bk_error *err)
{
    return bk_tx_read(t->be, q, out, err);
}

static int view_read(ltx *t, const bk_query *q, bk_result *out, bk_error *err)
{
    if (!t->view) {
        err->code = BK_ENOTLOCKED;
        snprintf(err->msg, sizeof err->msg, "read tx is not locked (call rlock() first)");
        return err->code;
    }
    return bk_view_read(t->view, q, out, err);
}

/* What the read methods of the three tx types differ in. */
typedef struct tx_kind {
    ltx *(*check)(lua_State *L);            /* self: the type, and not closed */
    void (*ready)(lua_State *L, ltx *t);
    int (*read)(ltx *t, const bk_query *q, bk_result *out, bk_error *err);
} tx_kind;
enum { K_BATCH, K_READ, K_CRT };
static const tx_kind KINDS[] = {
    [K_BATCH] = { check_batch, batch_ready, batch_read },
    [K_READ] = { check_read, read_ready, view_read },
    [K_CRT] = { check_crt, crt_ready, view_read },
};

/* The read, into the scratch buffer (returned), or raises. */
static bk_result *read_scratch(lua_State *L, const tx_kind *k, ltx *t, const bk_query *q)
{
    bk_error err;
    bk_result *r = scratch(L);
    if (k->read(t, q, r, &err))
        raise(L, &err);
    return r;
}

/* range's and rows' arguments (bucket, key, end_key, limit) as a query;
 * *to holds the end key. */
static void check_query(lua_State *L, const char *fname, bk_query *q, bk_slice *to)
{
    q->bucket = check_str(L, 2, fname);
    q->from = check_str(L, 3, fname);
    q->to = NULL;
    if (!lua_isnoneornil(L, 4)) {
        *to = check_str(L, 4, fname);
        q->to = to;
    }
    q->open_end = q->after = 0;
    q->limit = opt_integer(L, 5, fname);
}

/* keys, values: two tables. */
static void push_results(lua_State *L, bk_result *r)
{
    lua_createtable(L, (int)r->count, 0);
    lua_createtable(L, (int)r->count, 0);
    for (size_t i = 0; i < r->count; i++) {
        bk_slice k = bk_result_key(r, i), v = bk_result_value(r, i);
        lua_pushlstring(L, k.data, k.len);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        lua_pushlstring(L, v.data, v.len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    scratch_done(r);
}

static char *rows_data(lrows *rows)
{
    return (char *)&rows->bounds[2 * rows->n + 1];
}

/* A Rows holding a copy of r: one allocation, no finalizer. */
static lrows *push_rows(lua_State *L, bk_result *r)
{
    size_t n = r->count;
    lrows *rows = new_ud(L, sizeof *rows + (2 * n + 1) * sizeof(size_t) + r->used, 0, MT_ROWS);
    rows->n = n;
    for (size_t i = 0; i < n; i++) {   /* keys and values lie in order in r->data */
        rows->bounds[2 * i] = r->offs[4 * i];
        rows->bounds[2 * i + 1] = r->offs[4 * i + 2];
    }
    rows->bounds[2 * n] = r->used;
    if (r->used)
        memcpy(rows_data(rows), r->data, r->used);
    scratch_done(r);
    return rows;
}

/* Part j of the rows: key i is part 2i, its value 2i + 1. */
static bk_slice rows_part(lrows *rows, size_t j)
{
    bk_slice s = { rows_data(rows) + rows->bounds[j], rows->bounds[j + 1] - rows->bounds[j] };
    return s;
}

static void push_part(lua_State *L, lrows *rows, size_t j)
{
    bk_slice s = rows_part(rows, j);
    lua_pushlstring(L, s.data, s.len);
}

static int do_range(lua_State *L, const tx_kind *k)
{
    ltx *t = k->check(L);
    bk_query q;
    bk_slice to;
    check_query(L, "range", &q, &to);
    push_results(L, read_scratch(L, k, t, &q));
    return 2;
}

static int do_rows(lua_State *L, const tx_kind *k)
{
    ltx *t = k->check(L);
    bk_query q;
    bk_slice to;
    check_query(L, "rows", &q, &to);
    push_rows(L, read_scratch(L, k, t, &q));
    return 1;
}

static int do_get(lua_State *L, const tx_kind *k)
{
    ltx *t = k->check(L);
    bk_query q = { check_str(L, 2, "get"), check_str(L, 3, "get"), NULL, 0, 0, 0 };
    push_first_value(L, read_scratch(L, k, t, &q));
    return 1;
}

static int do_buckets(lua_State *L, const tx_kind *k)
{
    ltx *t = k->check(L);
    push_results(L, read_scratch(L, k, t, NULL));
    lua_pop(L, 1);   /* the names only */
    return 1;
}

static int do_check(lua_State *L, const tx_kind *k)
{
    k->ready(L, k->check(L));
    return 0;
}

/* ---- pairs: a C closure, as string.gmatch. No cursor lives between
 * steps (a commit may grow the map meanwhile): it reads a chunk of rows
 * at a time, each after the last key of the one before. ---- */

#define PAIRS_FIRST 32     /* rows in the first chunk: a loop may break early */
#define PAIRS_MAX 1024     /* the chunks double up to this */

/* The iterator's upvalues follow a method's (its reads use the scratch). */
enum { IT_TX = UP_SHARED + 1, IT_BUCKET, IT_TO, IT_ROWS, IT_POS, IT_LIMIT, IT_KIND, IT_COUNT = IT_KIND };

static lrows *read_chunk(lua_State *L, const tx_kind *k, ltx *t, bk_slice bucket,
                         bk_slice from, int after, const bk_slice *to, int64_t limit)
{
    bk_query q = { bucket, from, to, 1, after, limit };
    return push_rows(L, read_scratch(L, k, t, &q));
}

static int pairs_end(lua_State *L)
{
    lua_pushnil(L);
    lua_replace(L, lua_upvalueindex(IT_ROWS));
    return 0;
}

static int pairs_step(lua_State *L)
{
    lrows *rows = lua_touserdata(L, lua_upvalueindex(IT_ROWS));
    if (!rows)
        return 0;   /* ended */
    const tx_kind *k = &KINDS[lua_tointeger(L, lua_upvalueindex(IT_KIND))];
    ltx *t = lua_touserdata(L, lua_upvalueindex(IT_TX));
    k->ready(L, t);
    size_t pos = (size_t)lua_tointeger(L, lua_upvalueindex(IT_POS));
    if (pos == rows->n) {
        lua_Integer limit = lua_tointeger(L, lua_upvalueindex(IT_LIMIT));
        if ((lua_Integer)rows->n < limit)
            return pairs_end(L);
        bk_slice bucket, to, *top = NULL;
        bucket.data = lua_tolstring(L, lua_upvalueindex(IT_BUCKET), &bucket.len);
        if (lua_type(L, lua_upvalueindex(IT_TO)) == LUA_TSTRING) {
            to.data = lua_tolstring(L, lua_upvalueindex(IT_TO), &to.len);
            top = &to;
        }
        limit = limit * 2 < PAIRS_MAX ? limit * 2 : PAIRS_MAX;
        /* The last key stays in the old chunk, an upvalue until replaced. */
        rows = read_chunk(L, k, t, bucket, rows_part(rows, 2 * rows->n - 2), 1, top, limit);
        lua_replace(L, lua_upvalueindex(IT_ROWS));
        lua_pushinteger(L, limit);
        lua_replace(L, lua_upvalueindex(IT_LIMIT));
        pos = 0;
        if (rows->n == 0)
            return pairs_end(L);
    }
    push_part(L, rows, 2 * pos);
    push_part(L, rows, 2 * pos + 1);
    lua_pushinteger(L, (lua_Integer)pos + 1);
    lua_replace(L, lua_upvalueindex(IT_POS));
    return 2;
}

/* tx:pairs(bucket [, from [, to]]): the first chunk is read at once, so a
 * tx that cannot be read raises here. */
static int do_pairs(lua_State *L, int kind)
{
    const tx_kind *k = &KINDS[kind];
    ltx *t = k->check(L);
    bk_slice bucket = check_str(L, 2, "pairs"), from = { "", 0 }, to;
    if (!lua_isnoneornil(L, 3))
        from = check_str(L, 3, "pairs");
    int has_to = !lua_isnoneornil(L, 4);
    if (has_to)
        to = check_str(L, 4, "pairs");
    for (int i = UP_NAME; i <= UP_SHARED; i++)
        lua_pushvalue(L, lua_upvalueindex(i));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    if (has_to)
        lua_pushvalue(L, 4);
    else
        lua_pushnil(L);
    read_chunk(L, k, t, bucket, from, 0, has_to ? &to : NULL, PAIRS_FIRST);
    lua_pushinteger(L, 0);
    lua_pushinteger(L, PAIRS_FIRST);
    lua_pushinteger(L, kind);
    lua_pushcclosure(L, pairs_step, IT_COUNT);
    return 1;
}

/* The read methods of each tx type. */
#define TX_READS(prefix, kind)                                                      \
    static int prefix##_range(lua_State *L) { return do_range(L, &KINDS[kind]); }   \
    static int prefix##_rows(lua_State *L) { return do_rows(L, &KINDS[kind]); }     \
    static int prefix##_get(lua_State *L) { return do_get(L, &KINDS[kind]); }       \
    static int prefix##_buckets(lua_State *L) { return do_buckets(L, &KINDS[kind]); } \
    static int prefix##_check(lua_State *L) { return do_check(L, &KINDS[kind]); }   \
    static int prefix##_pairs(lua_State *L) { return do_pairs(L, kind); }
TX_READS(l_batch, K_BATCH)
TX_READS(l_read, K_READ)
TX_READS(l_crt, K_CRT)

/* ---- Rows ---- */

static lrows *check_rows(lua_State *L)
{
    return check_ud(L, 1, MT_ROWS);
}

/* Argument 2: a row number, 1 .. #rows; returns it from 0. */
static size_t check_row(lua_State *L, const lrows *rows, const char *fname)
{
    int ok;
    lua_Integer i = lua_tointegerx(L, 2, &ok);
    if (!ok || lua_type(L, 2) != LUA_TNUMBER)
        arg_error(L, 2, fname, "integer");
    if (i < 1 || (lua_Unsigned)i > rows->n)
        bad_arg(L, 2, fname, rows->n ? lua_pushfstring(L, "row %I out of range 1..%I", i,
                                                       (lua_Integer)rows->n)
                                     : lua_pushfstring(L, "row %I out of range: no rows", i));
    return (size_t)i - 1;
}

static int l_rows_key(lua_State *L)
{
    lrows *rows = check_rows(L);
    push_part(L, rows, 2 * check_row(L, rows, "key"));
    return 1;
}

static int l_rows_value(lua_State *L)
{
    lrows *rows = check_rows(L);
    push_part(L, rows, 2 * check_row(L, rows, "value") + 1);
    return 1;
}

/* Every key (which 0) or every value (1), as a table. */
static int push_column(lua_State *L, int which)
{
    lrows *rows = check_rows(L);
    lua_createtable(L, (int)rows->n, 0);
    for (size_t i = 0; i < rows->n; i++) {
        push_part(L, rows, 2 * i + (size_t)which);
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
    lua_pushfstring(L, MT_ROWS " (%I rows)", (lua_Integer)check_rows(L)->n);
    return 1;
}

/* ---- the batch tx's section and the coroutine that owns it ---- */

/* Pushes the BatchTx's (at index 1) tie: nil once collected. */
static int push_tie(lua_State *L, int tie)
{
    lua_getiuservalue(L, 1, UV_TIES);
    int type = lua_rawgeti(L, -1, tie);
    lua_remove(L, -2);
    return type;
}

static void set_owner(lua_State *L, int self)
{
    lua_getiuservalue(L, 1, UV_TIES);
    if (self)
        lua_pushthread(L);
    else
        lua_pushnil(L);
    lua_rawseti(L, -2, TIE_OWNER);
    lua_pop(L, 1);
}

/* A coroutine that can still run (lcorolib's auxstatus, less "dead"). */
static int alive(lua_State *L, lua_State *co)
{
    lua_Debug ar;
    if (co == L)
        return 1;
    switch (lua_status(co)) {
    case LUA_YIELD:
        return 1;
    case LUA_OK:   /* resuming another one, or not started yet */
        return lua_getstack(co, 0, &ar) || lua_gettop(co) > 0;
    default:       /* ended by an error */
        return 0;
    }
}

/* This thread's lock, taken by the coroutine running now (the section a
 * <close> variable or update's guard may end). */
static int owned_here(lua_State *L, ltx *t)
{
    if (!bk_locked_by_me(t->be))
        return 0;
    push_tie(L, TIE_OWNER);
    int here = lua_tothread(L, -1) == L;
    lua_pop(L, 1);
    return here;
}

static int end_section(lua_State *L, ltx *t, int rollback, const char *why)
{
    bk_error err;
    int rc = rollback ? bk_rollback(t->be, why, &err) : bk_unlock(t->be, &err);
    set_owner(L, 0);
    if (push_tie(L, TIE_BACKEND) == LUA_TUSERDATA)
        deliver_logs(L, -1);
    lua_pop(L, 1);
    return rc ? raise(L, &err) : 0;
}

static int l_batch_lock(lua_State *L)
{
    ltx *t = check_batch(L);
    bk_error err;
    if (bk_locked_by_me(t->be)) {
        /* Held by a coroutine that can never end its section: nobody can
         * commit or lock until it is gone. */
        push_tie(L, TIE_OWNER);
        lua_State *owner = lua_tothread(L, -1);
        lua_pop(L, 1);
        if (!owner || !alive(L, owner))
            end_section(L, t, 1, owner ? "the coroutine holding the lock is dead"
                                       : "the coroutine holding the lock was collected");
    }
    if (bk_lock(t->be, &err))
        return raise(L, &err);
    set_owner(L, 1);
    lua_settop(L, 1);
    return 1;
}

static int l_batch_unlock(lua_State *L)
{
    return end_section(L, check_batch(L), 0, NULL);
}

static int l_batch_rollback(lua_State *L)
{
    return end_section(L, check_batch(L), 1, NULL);
}

/* tx:_held(): whether this coroutine's section is open (update's guard;
 * false once the backend is closed, which ended the section). */
static int l_batch_held(lua_State *L)
{
    ltx *t = check_ud(L, 1, MT_BATCH);
    lua_pushboolean(L, t->be && !bk_is_closed(t->be) && owned_here(L, t));
    return 1;
}

/* <close>: leaving the scope by an error rolls the section back, leaving
 * it normally (coroutine.close too) unlocks; a section already ended, or
 * another coroutine's, is left alone. */
static int l_batch_close(lua_State *L)
{
    ltx *t = check_ud(L, 1, MT_BATCH);
    if (!t->be || bk_is_closed(t->be) || !owned_here(L, t))
        return 0;
    return end_section(L, t, !lua_isnil(L, 2), NULL);
}

static int batch_write(lua_State *L, const char *fname, int nargs,
                       int (*op1)(bk_backend *, bk_slice, bk_error *),
                       int (*op2)(bk_backend *, bk_slice, bk_slice, bk_error *),
                       int (*op3)(bk_backend *, bk_slice, bk_slice, bk_slice, bk_error *))
{
    ltx *t = check_batch(L);
    bk_slice a[3];
    bk_error err;
    for (int i = 0; i < nargs; i++)
        a[i] = check_str(L, i + 2, fname);
    int rc = op1 ? op1(t->be, a[0], &err) : op2 ? op2(t->be, a[0], a[1], &err)
                                                : op3(t->be, a[0], a[1], a[2], &err);
    if (rc)
        return raise(L, &err);
    return 0;
}

static int l_create_bucket(lua_State *L)
{
    return batch_write(L, "create_bucket", 1, bk_create_bucket, NULL, NULL);
}

static int l_delete_bucket(lua_State *L)
{
    return batch_write(L, "delete_bucket", 1, bk_delete_bucket, NULL, NULL);
}

static int l_put(lua_State *L)
{
    return batch_write(L, "put", 3, NULL, NULL, bk_put);
}

static int l_seq_put(lua_State *L)
{
    /* The committer applies every batch in key order and appends once past
     * the last key, so the sequential hint needs nothing more. */
    return batch_write(L, "seq_put", 3, NULL, NULL, bk_put);
}

static int l_delete(lua_State *L)
{
    return batch_write(L, "delete", 2, NULL, bk_delete, NULL);
}

static int commit(lua_State *L, int stop)
{
    ltx *t = check_batch(L);
    bk_error err;
    if (bk_commit(t->be, stop, &err))
        return raise(L, &err);
    return 0;
}

static int l_commit(lua_State *L)
{
    return commit(L, 0);
}

static int l_commit_and_stop(lua_State *L)
{
    return commit(L, 1);
}

static int l_pending(lua_State *L)
{
    ltx *t = check_batch(L);
    lua_pushinteger(L, (lua_Integer)bk_pending(t->be));
    return 1;
}

/* __gc of the three tx types: each checks its own (a metamethod can be
 * called by hand, with anything). */
static int tx_free(ltx *t)
{
    bk_view_close(t->view);
    t->view = NULL;
    bk_free(t->be);
    t->be = NULL;
    return 0;
}

static int l_batch_gc(lua_State *L)
{
    return tx_free(check_ud(L, 1, MT_BATCH));
}

static int l_read_gc(lua_State *L)
{
    return tx_free(check_ud(L, 1, MT_READ));
}

static int tx_tostring(lua_State *L, const char *mt)
{
    ltx *t = check_ud(L, 1, mt);
    if (!t->be || bk_is_closed(t->be))
        lua_pushfstring(L, "%s (closed)", mt);
    else
        lua_pushfstring(L, "%s (%p)", mt, (void *)t);
    return 1;
}

static int l_batch_tostring(lua_State *L)
{
    return tx_tostring(L, MT_BATCH);
}

static int l_read_rlock(lua_State *L)
{
    ltx *t = check_read(L);
    bk_error err;
    if (!t->view && bk_view_open(t->be, &t->view, &err))
        return raise(L, &err);
    t->rlocks++;
    lua_settop(L, 1);
    return 1;
}

static int l_read_runlock(lua_State *L)
{
    ltx *t = check_ud(L, 1, MT_READ);
    if (t->rlocks == 0)
        return fail(L, "read tx is not locked (call rlock() first)");
    if (--t->rlocks == 0) {
        bk_view_close(t->view);
        t->view = NULL;
    }
    return 0;
}

static int l_read_tostring(lua_State *L)
{
    return tx_tostring(L, MT_READ);
}

/* rlock, lock, unlock: nothing to do, but not on a view that is gone. */
static int l_crt_noop(lua_State *L)
{
    do_check(L, &KINDS[K_CRT]);
    lua_settop(L, 1);
    return 1;
}

static int l_crt_close(lua_State *L)
{
    return tx_free(check_ud(L, 1, MT_CRT));
}

static int l_crt_tostring(lua_State *L)
{
    ltx *t = check_ud(L, 1, MT_CRT);
    bk_error err;
    int rc = t->view ? bk_view_check(t->view, &err) : BK_ECLOSED;
    if (rc == BK_EINVALID)
        lua_pushliteral(L, MT_CRT " (invalidated)");
    else if (rc == BK_OK)
        lua_pushfstring(L, MT_CRT " (%p)", (void *)t);
    else
        lua_pushliteral(L, MT_CRT " (closed)");
    return 1;
}

/* ---- Snapshot ---- */

static lsnap *check_snap(lua_State *L)
{
    lsnap *s = check_ud(L, 1, MT_SNAP);
    if (!s->snap)
        fail(L, "snapshot is closed");
    return s;
}

static int l_snap_size(lua_State *L)
{
    lsnap *s = check_snap(L);
    bk_error err;
    if (bk_snapshot_check(s->snap, &err))
        return raise(L, &err);
    lua_pushinteger(L, (lua_Integer)bk_snapshot_size(s->snap));
    return 1;
}

/* progress(done, total) if given: LUA_OK, or an error with its value pushed. */
static int call_progress(lua_State *L, int fn, uint64_t done, uint64_t total)
{
    if (!fn)
        return LUA_OK;
    lua_pushvalue(L, fn);
    lua_pushinteger(L, (lua_Integer)done);
    lua_pushinteger(L, (lua_Integer)total);
    return lua_pcall(L, 2, 0, 0);
}

/* Progress is reported after each chunk. */
#define COPY_CHUNK ((size_t)8 << 20)
#define READ_CHUNK ((size_t)1 << 20)

/* Copy to an fd at its position: a Lua file's (stream) or, if tmp is
 * given, a new file of ours that any error (progress's too) closes and
 * removes first. */
static int write_fd(lua_State *L, bk_snapshot *snap, int fd, int progress,
                    const luaL_Stream *stream, bk_tmp *tmp)
{
    uint64_t total = bk_snapshot_size(snap), done = 0;
    bk_error err;
    while (done < total) {
        size_t n = total - done < COPY_CHUNK ? (size_t)(total - done) : COPY_CHUNK;
        int rc = bk_snapshot_copy_fd(snap, fd, done, n, &err);
        if (rc) {
            lua_pushfstring(L, "backend: %s", err.msg);
        } else {
            done += n;
            rc = call_progress(L, progress, done, total);
        }
        /* Progress closed the file: its descriptor may be another's by now. */
        if (!rc && stream && !stream->closef) {
            lua_pushliteral(L, "backend: the file was closed during write_to");
            rc = 1;
        }
        if (rc) {
            if (tmp) {
                close(fd);
                bk_tmp_discard(tmp);
            }
            return lua_error(L);
        }
    }
    return 0;
}

/* write_to's work, under busy_call (args checked): (snap, dest, progress). */
static int snap_write(lua_State *L)
{
    lsnap *s = lua_touserdata(L, 1);
    int progress = lua_isnil(L, 3) ? 0 : 3;
    uint64_t total = bk_snapshot_size(s->snap);
    luaL_Stream *stream;
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *path = lua_tostring(L, 2);
        /* A new file only, never through a link: an existing one may be the
         * database itself, which truncating would corrupt under its readers.
         * Written beside it and renamed into place once whole. */
        struct stat exists;
        bk_tmp tmp;
        bk_error err;
        if (lstat(path, &exists) == 0)
            return fail(L, "%s already exists (write_to does not overwrite files: "
                        "remove it first, or pass an open file)", path);
        if (bk_tmp_create(&tmp, path, &err))
            return raise(L, &err);
        int fd = open(tmp.file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            int e = errno;
            bk_tmp_discard(&tmp);
            return fail(L, "%s: %s", tmp.file, strerror(e));
        }
        write_fd(L, s->snap, fd, progress, NULL, &tmp);
        int saved = fsync(fd) < 0 ? errno : 0;
        if (close(fd) < 0 && !saved)
            saved = errno;
        int rc = saved ? BK_EIO : bk_tmp_publish(&tmp, path, &err);
        bk_tmp_discard(&tmp);
        if (saved)
            return fail(L, "%s: %s", path, strerror(saved));
        if (rc)
            return raise(L, &err);
    } else if ((stream = luaL_testudata(L, 2, LUA_FILEHANDLE))) {
        if (!stream->closef)
            return fail(L, "attempt to use a closed file");
        FILE *f = stream->f;
        if (fflush(f) != 0)
            return fail(L, "writing snapshot: %s", strerror(errno));
        write_fd(L, s->snap, fileno(f), progress, stream, NULL);
        fseeko(f, 0, SEEK_CUR);   /* the stream learns the new position */
    } else {
        char *buf = lua_newuserdatauv(L, READ_CHUNK, 0);
        bk_error err;
        for (uint64_t done = 0; done < total;) {
            size_t n = total - done < READ_CHUNK ? (size_t)(total - done) : READ_CHUNK;
            if (bk_snapshot_read(s->snap, done, buf, n, &err))
                return raise(L, &err);
            lua_pushvalue(L, 2);
            lua_pushlstring(L, buf, n);
            lua_call(L, 1, 0);
            done += n;
            if (call_progress(L, progress, done, total) != LUA_OK)
                return lua_error(L);
        }
    }
    lua_pushinteger(L, (lua_Integer)total);
    return 1;
}

static int l_snap_write_to(lua_State *L)
{
    lsnap *s = check_snap(L);
    if (!lua_isnoneornil(L, 3))
        check_type(L, 3, LUA_TFUNCTION, "write_to");
    if (lua_type(L, 2) == LUA_TSTRING)
        check_path(L, 2, "write_to");
    else if (lua_type(L, 2) != LUA_TFUNCTION && !luaL_testudata(L, 2, LUA_FILEHANDLE))
        return arg_error(L, 2, "write_to", "path, file or function");
    return busy_call(L, 3, &s->busy, snap_write);
}

static int l_snap_close(lua_State *L)
{
    lsnap *s = check_ud(L, 1, MT_SNAP);
    if (s->busy)
        return fail(L, "snapshot is busy (write_to in progress)");
    bk_snapshot_close(s->snap);
    s->snap = NULL;
    return 0;
}

static int l_snap_tostring(lua_State *L)
{
    lsnap *s = check_ud(L, 1, MT_SNAP);
    bk_error err;
    int rc = s->snap ? bk_snapshot_check(s->snap, &err) : BK_ECLOSED;
    if (rc == BK_EINVALID)
        lua_pushliteral(L, MT_SNAP " (invalidated)");
    else if (rc == BK_OK)
        lua_pushfstring(L, MT_SNAP " (%p)", (void *)s);
    else
        lua_pushliteral(L, MT_SNAP " (closed)");
    return 1;
}

/* ---- etcd's data files (bbolt) ---- */

static lbolt *check_bolt(lua_State *L)
{
    lbolt *f = check_ud(L, 1, MT_BOLT);
    if (!f->bolt)
        fail(L, "etcd file is closed");
    return f;
}

static int l_open_bolt(lua_State *L)
{
    const char *path = check_path(L, 1, "open_bolt");
    lbolt *f = lua_newuserdatauv(L, sizeof *f, 0);
    f->bolt = NULL;   /* closed until the file is open */
    f->busy = 0;
    luaL_setmetatable(L, MT_BOLT);
    bk_error err;
    if (bk_bolt_open(path, &f->bolt, &err))
        return raise(L, &err);
    return 1;
}

static int l_bolt_info(lua_State *L)
{
    bk_bolt_info i;
    bk_bolt_info_get(check_bolt(L)->bolt, &i);
    lua_createtable(L, 0, 8);
    set_integer(L, "page_size", i.page_size);
    set_integer(L, "meta", (uint64_t)i.meta);
    set_integer(L, "txid", i.txid);
    set_integer(L, "high_water", i.high_water);
    set_integer(L, "total_size", i.total_size);
    set_integer(L, "file_size", i.file_size);
    lua_pushboolean(L, i.sha256_trailer);
    lua_setfield(L, -2, "sha256_trailer");
    return 1;
}

/* walk's callbacks call Lua protected: an error (or a failed allocation)
 * must not unwind through the C walk; it is raised once the walk returns. */
typedef struct walk_ctx {
    lua_State *L;
    int fn[2];          /* stack slots of on_bucket, on_kv; 0: none */
    int names;          /* stack slot of a table: depth -> that bucket's name */
    size_t depth;       /* the bucket's, or the key's bucket's */
    const bk_slice *args;   /* the bucket's name; or the key and its value */
    int is_kv;
} walk_ctx;

/* (ctx, fn or nil, names). A bucket's name becomes a Lua string once and
 * the calls for its keys share it: a hostile file pairs a long name with
 * many keys, and a copy per key would cost their product. */
static int walk_call(lua_State *L)
{
    walk_ctx *w = lua_touserdata(L, 1);
    if (w->is_kv) {
        if (w->depth)
            lua_rawgeti(L, 3, (lua_Integer)w->depth);
        else
            lua_pushliteral(L, "");   /* a plain key at the top level */
        for (int i = 0; i < 2; i++)
            lua_pushlstring(L, w->args[i].data, w->args[i].len);
    } else {
        lua_pushlstring(L, w->args[0].data, w->args[0].len);
        lua_pushvalue(L, -1);
        lua_rawseti(L, 3, (lua_Integer)w->depth);
    }
    if (lua_isnil(L, 2))
        return 0;
    lua_pushvalue(L, 2);
    lua_insert(L, 4);
    lua_call(L, lua_gettop(L) - 4, 0);
    return 0;
}

static int walk_run(walk_ctx *w, int is_kv, size_t depth, const bk_slice *args)
{
    w->is_kv = is_kv;
    w->depth = depth;
    w->args = args;
    lua_pushcfunction(w->L, walk_call);
    lua_pushlightuserdata(w->L, w);
    if (w->fn[is_kv])
        lua_pushvalue(w->L, w->fn[is_kv]);
    else
        lua_pushnil(w->L);
    lua_pushvalue(w->L, w->names);
    return lua_pcall(w->L, 3, 0, 0) != LUA_OK;   /* the error stays on the stack */
}

static int walk_bucket(void *ctx, const bk_slice *path, size_t depth)
{
    walk_ctx *w = ctx;
    if (!w->fn[0] && !w->fn[1])
        return 0;
    return walk_run(w, 0, depth, &path[depth - 1]);
}

static int walk_kv(void *ctx, const bk_slice *path, size_t depth, bk_slice key, bk_slice value)
{
    walk_ctx *w = ctx;
    bk_slice args[2] = { key, value };
    (void)path;
    if (!w->fn[1])
        return 0;
    return walk_run(w, 1, depth, args);
}

/* walk's work, under busy_call (args checked): (f, on_bucket, on_kv). */
static int bolt_walk(lua_State *L)
{
    lbolt *f = lua_touserdata(L, 1);
    walk_ctx w = { L, { lua_isnil(L, 2) ? 0 : 2, lua_isnil(L, 3) ? 0 : 3 }, 4, 0, NULL, 0 };
    lua_newtable(L);   /* 4: names */
    bk_error err;
    int rc = bk_bolt_walk(f->bolt, walk_bucket, walk_kv, &w, &err);
    if (rc && lua_gettop(L) > 4)
        return lua_error(L);   /* a callback's error */
    if (rc)
        return raise(L, &err);
    return 0;
}

/* f:walk(on_bucket, on_kv): buckets in name order, each followed by its keys. */
static int l_bolt_walk(lua_State *L)
{
    lbolt *f = check_bolt(L);
    for (int i = 2; i <= 3; i++)
        if (!lua_isnoneornil(L, i))
            check_type(L, i, LUA_TFUNCTION, "walk");
    return busy_call(L, 3, &f->busy, bolt_walk);
}

static int l_bolt_close(lua_State *L)
{
    lbolt *f = check_ud(L, 1, MT_BOLT);
    if (f->busy)
        return fail(L, "etcd file is busy (walk in progress)");
    bk_bolt_close(f->bolt);
    f->bolt = NULL;
    return 0;
}

static int l_bolt_tostring(lua_State *L)
{
    lbolt *f = check_ud(L, 1, MT_BOLT);
    if (f->bolt)
        lua_pushfstring(L, MT_BOLT " (%p)", (void *)f);
    else
        lua_pushliteral(L, MT_BOLT " (closed)");
    return 1;
}

/* What an import or export copied: { buckets, keys, bytes, hash }. */
static void push_copied(lua_State *L, uint64_t buckets, uint64_t keys, uint64_t bytes,
                        uint32_t hash)
{
    lua_createtable(L, 0, 5);
    set_integer(L, "buckets", buckets);
    set_integer(L, "keys", keys);
    set_integer(L, "bytes", bytes);
    set_integer(L, "hash", hash);
}

/* import_bolt(src, config): a new backend database with src's buckets. */
static int l_import_bolt(lua_State *L)
{
    const char *src = check_path(L, 1, "import_bolt");
    bk_config cfg;
    read_config(L, 2, "import_bolt", &cfg);
    bk_bolt_import_stats st;
    bk_error err;
    if (bk_bolt_import(src, &cfg, &st, &err))
        return raise(L, &err);
    push_copied(L, st.buckets, st.keys, st.bytes, st.hash);
    return 1;
}

/* export_bolt's progress: the Lua function at fn, protected; its error
 * stays on the stack and stops the export. */
typedef struct export_ctx {
    lua_State *L;
    int fn;
} export_ctx;

static int export_progress(void *ctx, uint64_t done, uint64_t total)
{
    export_ctx *e = ctx;
    return call_progress(e->L, e->fn, done, total) != LUA_OK;
}

/* core.export_bolt(src, dst, trailer, progress): src a path or a Backend
 * (the facade has checked the options). */
static int l_export_bolt(lua_State *L)
{
    lbackend *lb = luaL_testudata(L, 1, MT_BACKEND);
    if (!lb && lua_type(L, 1) != LUA_TSTRING)
        return arg_error(L, 1, "export_bolt", "path or " MT_BACKEND);
    const char *src = lb ? NULL : check_path(L, 1, "export_bolt");
    const char *dst = check_path(L, 2, "export_bolt");
    check_type(L, 3, LUA_TBOOLEAN, "export_bolt");
    if (!lua_isnoneornil(L, 4))
        check_type(L, 4, LUA_TFUNCTION, "export_bolt");
    lua_settop(L, 4);
    export_ctx ctx = { L, 4 };
    bk_bolt_export_opts opts = { lua_toboolean(L, 3), NULL, &ctx };
    if (!lua_isnil(L, 4))
        opts.progress = export_progress;
    bk_bolt_export_stats st;
    bk_error err;
    int rc;
    if (lb) {
        check_backend(L, 1);
        rc = bk_bolt_export(lb->be, dst, &opts, &st, &err);
        deliver_logs(L, 1);
    } else {
        rc = bk_bolt_export_path(src, dst, &opts, &st, &err);
    }
    if (rc && lua_gettop(L) > 4)
        return lua_error(L);   /* progress's error */
    if (rc)
        return raise(L, &err);
    push_copied(L, st.buckets, st.keys, st.bytes, st.hash);
    set_integer(L, "size", st.file_size);
    return 1;
}

/* ---- module functions ---- */

static int l_crc32c(lua_State *L)
{
    bk_slice s = check_str(L, 1, "crc32c");
    int64_t crc = opt_integer(L, 2, "crc32c");   /* 1.0 is 1, as for string.rep */
    if (crc < 0 || crc > 0xFFFFFFFF)
        return fail(L, "bad argument #2 to 'crc32c' (crc out of range)");
    lua_pushinteger(L, (lua_Integer)bk_crc32c((uint32_t)crc, s.data, s.len));
    return 1;
}

/* Seconds on CLOCK_MONOTONIC: Lua has no wall clock finer than os.time. */
static int l_monotonic(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static int l_mkdtemp(lua_State *L)
{
    const char *tmpdir = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/backend-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(buf))
        return fail(L, "creating a temporary directory: %s", strerror(errno));
    lua_pushstring(L, buf);
    return 1;
}

/* ---- interrupts (Ctrl-C) ---- */

/* lua.c turns one SIGINT into an "interrupted!" error while it runs a script,
 * then leaves SIGINT's default action. catch_interrupt() arms the same again
 * (bk_interrupt_arm: one-shot, reads return), so that a REPL can cancel a line
 * and go on. The error is raised in the main thread of the state that armed it. */
static lua_State *volatile interrupt_L;

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void on_interrupt(void)   /* in the signal handler: lua.c's laction */
{
    lua_sethook(interrupt_L, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static lua_State *main_thread(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    return main;
}

/* The state is closing: a SIGINT must no longer reach it. */
static int l_interrupt_gc(lua_State *L)
{
    if (interrupt_L == main_thread(L))
        bk_interrupt_disarm();
    return 0;
}

#define INTERRUPT_GUARD "backend.interrupt_guard"

static int l_catch_interrupt(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, INTERRUPT_GUARD) == LUA_TNIL) {
        lua_newuserdatauv(L, 0, 0);   /* in the registry: collected as the state closes */
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, l_interrupt_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, INTERRUPT_GUARD);
    }
    interrupt_L = main_thread(L);
    if (bk_interrupt_arm(on_interrupt) < 0)
        return fail(L, "catching SIGINT: %s", strerror(errno));
    return 0;
}

#define REG_TYPES "backend.types"

/* A method's upvalues UP_TYPES and UP_SHARED, pushed: kept in the
 * registry (reloads reuse them), the lshared as the table's entry after
 * the types. */
static lshared *push_shared(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, REG_TYPES);
    if (lua_rawgeti(L, -1, NTYPES + 1) == LUA_TNIL) {
        lua_pop(L, 1);
        lshared *sh = lua_newuserdatauv(L, sizeof *sh, 0);
        memset(sh, 0, sizeof *sh);
        bk_result_init(&sh->scratch);
        luaL_setmetatable(L, MT_RESULT);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, NTYPES + 1);
    }
    return lua_touserdata(L, -1);
}

/* luaL_setfuncs, each function with the upvalues UP_NAME (its name, for
 * check_ud), UP_TYPES and UP_SHARED. */
static void set_funcs(lua_State *L, const luaL_Reg *l)
{
    for (; l->name; l++) {
        lua_pushstring(L, l->name);
        push_shared(L);
        lua_pushcclosure(L, l->func, UP_SHARED);
        lua_setfield(L, -2, l->name);
    }
}

static void new_type(lua_State *L, const char *name, const luaL_Reg *methods,
                     const luaL_Reg *meta)
{
    luaL_newmetatable(L, name);   /* kept if it exists: reloads are fine */
    int t = type_index(name);
    if (t) {
        lshared *sh = push_shared(L);
        lua_pushvalue(L, -3);
        lua_rawseti(L, -3, t);
        sh->mts[t] = lua_topointer(L, -3);
        lua_pop(L, 2);
    }
    set_funcs(L, meta);
    if (lua_getfield(L, -1, "__index") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "__index");
    }
    set_funcs(L, methods);
    lua_setfield(L, -3, name + sizeof "backend." - 1);   /* methods.<Type> */
    lua_pop(L, 1);
}

int luaopen_backend_core(lua_State *L);
int luaopen_backend_core(lua_State *L)
{
    static const luaL_Reg backend_m[] = {
        { "batch_tx", l_batch_tx }, { "read_tx", l_read_tx },
        { "concurrent_read_tx", l_concurrent_read_tx }, { "snapshot", l_snapshot },
        { "hash", l_hash }, { "size", l_size }, { "size_in_use", l_size_in_use },
        { "open_read_tx_n", l_open_read_tx_n }, { "commits", l_commits },
        { "defrag", l_defrag }, { "force_commit", l_force_commit },
        { "close", l_backend_close }, { "stats", l_stats }, { "path", l_path },
        { "bucket_stats", l_bucket_stats }, { "_committed_get", l_committed_get },
        { NULL, NULL } };
    static const luaL_Reg backend_meta[] = {
        { "__gc", l_backend_gc }, { "__close", l_backend_gc },
        { "__tostring", l_backend_tostring }, { NULL, NULL } };
    static const luaL_Reg batch_m[] = {
        { "lock", l_batch_lock }, { "unlock", l_batch_unlock },
        { "rollback", l_batch_rollback }, { "_held", l_batch_held },
        { "create_bucket", l_create_bucket }, { "delete_bucket", l_delete_bucket },
        { "put", l_put }, { "seq_put", l_seq_put }, { "delete", l_delete },
        { "range", l_batch_range }, { "rows", l_batch_rows }, { "get", l_batch_get },
        { "pairs", l_batch_pairs }, { "buckets", l_batch_buckets }, { "commit", l_commit },
        { "commit_and_stop", l_commit_and_stop }, { "pending", l_pending },
        { "_check", l_batch_check }, { NULL, NULL } };
    static const luaL_Reg batch_meta[] = {
        { "__gc", l_batch_gc }, { "__close", l_batch_close },
        { "__tostring", l_batch_tostring }, { NULL, NULL } };
    static const luaL_Reg read_m[] = {
        { "rlock", l_read_rlock }, { "runlock", l_read_runlock },
        { "lock", l_read_rlock }, { "unlock", l_read_runlock },
        { "range", l_read_range }, { "rows", l_read_rows }, { "get", l_read_get },
        { "pairs", l_read_pairs }, { "buckets", l_read_buckets }, { "_check", l_read_check },
        { NULL, NULL } };
    static const luaL_Reg read_meta[] = {
        { "__gc", l_read_gc }, { "__tostring", l_read_tostring }, { NULL, NULL } };
    static const luaL_Reg crt_m[] = {
        { "rlock", l_crt_noop }, { "lock", l_crt_noop }, { "unlock", l_crt_noop },
        { "runlock", l_crt_close }, { "close", l_crt_close },
        { "range", l_crt_range }, { "rows", l_crt_rows }, { "get", l_crt_get },
        { "pairs", l_crt_pairs }, { "buckets", l_crt_buckets }, { "_check", l_crt_check },
        { NULL, NULL } };
    static const luaL_Reg crt_meta[] = {
        { "__gc", l_crt_close }, { "__close", l_crt_close },
        { "__tostring", l_crt_tostring }, { NULL, NULL } };
    static const luaL_Reg rows_m[] = {
        { "key", l_rows_key }, { "value", l_rows_value },
        { "keys", l_rows_keys }, { "values", l_rows_values }, { NULL, NULL } };
    static const luaL_Reg rows_meta[] = {
        { "__len", l_rows_len }, { "__tostring", l_rows_tostring }, { NULL, NULL } };
    static const luaL_Reg snap_m[] = {
        { "size", l_snap_size }, { "write_to", l_snap_write_to },
        { "close", l_snap_close }, { NULL, NULL } };
    static const luaL_Reg snap_meta[] = {
        { "__gc", l_snap_close }, { "__close", l_snap_close },
        { "__tostring", l_snap_tostring }, { NULL, NULL } };
    static const luaL_Reg bolt_m[] = {
        { "info", l_bolt_info }, { "walk", l_bolt_walk }, { "close", l_bolt_close },
        { NULL, NULL } };
    static const luaL_Reg bolt_meta[] = {
        { "__gc", l_bolt_close }, { "__close", l_bolt_close },
        { "__tostring", l_bolt_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "open", l_open }, { "crc32c", l_crc32c }, { "mkdtemp", l_mkdtemp },
        { "open_bolt", l_open_bolt }, { "import_bolt", l_import_bolt },
        { "export_bolt", l_export_bolt },
        { "monotonic", l_monotonic }, { "catch_interrupt", l_catch_interrupt },
        { "interrupted", l_interrupted },
        { NULL, NULL } };

    luaL_newmetatable(L, MT_RESULT);
    lua_pushcfunction(L, l_result_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_newtable(L);   /* methods: the facade adds Lua methods here */
    new_type(L, MT_BACKEND, backend_m, backend_meta);
    new_type(L, MT_BATCH, batch_m, batch_meta);
    new_type(L, MT_READ, read_m, read_meta);
    new_type(L, MT_CRT, crt_m, crt_meta);
    new_type(L, MT_ROWS, rows_m, rows_meta);
    new_type(L, MT_SNAP, snap_m, snap_meta);
    new_type(L, MT_BOLT, bolt_m, bolt_meta);
    lua_setfield(L, -2, "methods");
    lua_pushliteral(L, BK_VERSION);
    lua_setfield(L, -2, "version");
    int major, minor, patch;
    bk_lmdb_version(&major, &minor, &patch);
    lua_pushfstring(L, "%d.%d.%d", major, minor, patch);
    lua_setfield(L, -2, "lmdb_version");
    size_t max_key = bk_lmdb_max_key_size();   /* the key limit of this LMDB build */
    if (max_key) {
        lua_pushinteger(L, (lua_Integer)max_key);
        lua_setfield(L, -2, "max_key_size");
    }
    return 1;
}
