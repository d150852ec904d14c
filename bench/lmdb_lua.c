/* Plain LMDB called from Lua, for the benchmark's floors (bench/README.md):
 * the thinnest binding of what the suite times, with none of the engine (no
 * buffers, locks, checks or copies), so that a workload's Lua loop can run
 * against LMDB itself in the same process, heap and run as ours.
 *   open(path, bucket): a file our engine wrote, read only, with
 *     MDB_RDONLY | MDB_NOLOCK (no lock file, so no lock of the engine's is
 *     touched) while nothing writes it: get, lookup, scan.
 *   create(path, bucket): a new file of its own: put, as bench/lmdb_bench.c
 *     writes (a committed txn of TXN_OPS puts, LMDB's default durability).
 *   alloc(s): a new userdata holding a copy of string s, with no engine at
 *     all: one allocation and one copy, as a Rows makes (W4's floors).
 * Not installed; `make bench` builds it. */
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lmdb.h>
#include <lua.h>

#define MT "bench.lmdb"
#define TXN_OPS 10000        /* puts per write txn, as lmdb_bench.c's */
#define MAP_SIZE ((size_t)16 << 30)

typedef struct {
    MDB_env *env;    /* NULL once closed */
    MDB_txn *txn;    /* open: the long-lived read txn get and scan use;
                      * create: the write txn being filled, or NULL */
    MDB_txn *view;   /* open: lookup's, reset between lookups (LMDB's cheapest) */
    MDB_cursor *cur; /* open: scan's, in txn, kept so no error can leak one */
    MDB_dbi dbi;
    int writable;
    int view_live;   /* lookup renewed view and was stopped before its reset */
    size_t puts;
} plain;

static int fail(lua_State *L, const char *what, int rc)
{
    return luaL_error(L, "%s: %s", what, mdb_strerror(rc));
}

static plain *check_open(lua_State *L, int writable)
{
    plain *p = luaL_checkudata(L, 1, MT);
    luaL_argcheck(L, p->env != NULL, 1, "closed");
    luaL_argcheck(L, p->writable == writable, 1, writable ? "opened read only" : "created for puts");
    return p;
}

static MDB_val arg_val(lua_State *L, int i)
{
    MDB_val v;
    /* LMDB's MDB_val is not const; LMDB does not write through a key */
    v.mv_data = (void *)(uintptr_t)luaL_checklstring(L, i, &v.mv_size);
    return v;
}

/* Ends p; commits the puts not yet committed when asked to. */
static int end(plain *p, int commit)
{
    int rc = 0;
    if (!p->env)
        return 0;
    if (p->cur)
        mdb_cursor_close(p->cur);
    if (p->txn)
        rc = commit && p->writable ? mdb_txn_commit(p->txn) : (mdb_txn_abort(p->txn), 0);
    if (p->view)
        mdb_txn_abort(p->view);
    mdb_env_close(p->env);
    p->env = NULL;
    p->txn = p->view = NULL;
    p->cur = NULL;
    return rc;
}

/* p:close(): commits the last puts; __gc and __close drop them. */
static int plain_close(lua_State *L)
{
    int rc = end(luaL_checkudata(L, 1, MT), 1);
    return rc ? fail(L, "mdb_txn_commit", rc) : 0;
}

static int plain_gc(lua_State *L)
{
    end(luaL_checkudata(L, 1, MT), 0);
    return 0;
}

/* The bucket's handle, made shared by a commit (as LMDB asks) so that
 * every later txn can use it. */
static int open_dbi(plain *p, const char *bucket, unsigned flags)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(p->env, NULL, flags & MDB_CREATE ? 0 : MDB_RDONLY, &txn);
    if (rc)
        return rc;
    if ((rc = mdb_dbi_open(txn, bucket, flags, &p->dbi))) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* open or create (writable): a new object (made closed first, as liolib
 * makes a file), then its env on path and the bucket's handle; for reads
 * also its two read txns. */
static int start(lua_State *L, int writable)
{
    const char *path = luaL_checkstring(L, 1), *bucket = luaL_checkstring(L, 2);
    plain *p = lua_newuserdatauv(L, sizeof *p, 0);
    p->env = NULL;
    p->txn = p->view = NULL;
    p->cur = NULL;
    p->writable = writable;
    p->view_live = 0;
    p->puts = 0;
    luaL_setmetatable(L, MT);
    int rc = mdb_env_create(&p->env);
    if (rc) {
        p->env = NULL;
        return fail(L, "mdb_env_create", rc);
    }
    unsigned flags = writable ? MDB_NOSUBDIR : MDB_RDONLY | MDB_NOLOCK | MDB_NOSUBDIR;
    if (!(rc = mdb_env_set_maxdbs(p->env, 64)) && !(rc = mdb_env_set_mapsize(p->env, MAP_SIZE)) &&
        !(rc = mdb_env_open(p->env, path, flags, 0644)) &&
        !(rc = open_dbi(p, bucket, writable ? MDB_CREATE : 0)) && !writable &&
        !(rc = mdb_txn_begin(p->env, NULL, MDB_RDONLY, &p->txn)) &&
        !(rc = mdb_cursor_open(p->txn, p->dbi, &p->cur)) &&
        !(rc = mdb_txn_begin(p->env, NULL, MDB_RDONLY, &p->view)))
        mdb_txn_reset(p->view);
    if (rc) {
        end(p, 0);
        return fail(L, path, rc);
    }
    return 1;
}

static int plain_open(lua_State *L)
{
    return start(L, 0);
}

static int plain_create(lua_State *L)
{
    return start(L, 1);
}

static void push_val(lua_State *L, const MDB_val *v)
{
    lua_pushlstring(L, v->mv_data, v->mv_size);
}

/* p:get(key): the value, or nil; in the long-lived txn (W3). */
static int plain_get(lua_State *L)
{
    plain *p = check_open(L, 0);
    MDB_val k = arg_val(L, 2), v;
    int rc = mdb_get(p->txn, p->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return lua_pushnil(L), 1;
    if (rc)
        return fail(L, "mdb_get", rc);
    push_val(L, &v);
    return 1;
}

/* p:lookup(key): the same in a read txn of its own, renewed for the
 * lookup and reset after it (W3b). */
static int plain_lookup(lua_State *L)
{
    plain *p = check_open(L, 0);
    MDB_val k = arg_val(L, 2), v;
    if (p->view_live)   /* the last lookup's push raised (out of memory) */
        mdb_txn_reset(p->view);
    int rc = mdb_txn_renew(p->view);
    if (rc)
        return fail(L, "mdb_txn_renew", rc);
    p->view_live = 1;
    rc = mdb_get(p->view, p->dbi, &k, &v);
    if (rc == 0)
        push_val(L, &v);   /* copied before the reset: the map may change after */
    mdb_txn_reset(p->view);
    p->view_live = 0;
    if (rc == MDB_NOTFOUND)
        lua_pushnil(L);
    else if (rc)
        return fail(L, "mdb_get", rc);
    return 1;
}

/* p:scan(from, limit): keys, values: two tables of at most limit (>= 1)
 * rows from the first key >= from, pushed straight from the map (W4), with
 * the object's one cursor (a push that raises leaves nothing to free). */
static int plain_scan(lua_State *L)
{
    plain *p = check_open(L, 0);
    MDB_val k = arg_val(L, 2), v;
    lua_Integer limit = luaL_checkinteger(L, 3);
    luaL_argcheck(L, limit >= 1, 3, "at least 1");
    int hint = limit < 4096 ? (int)limit : 4096;   /* a size hint, not a promise */
    lua_createtable(L, hint, 0);
    lua_createtable(L, hint, 0);
    lua_Integer n = 0;
    /* LMDB refuses an empty key to seek to: "" is the first key */
    int rc = mdb_cursor_get(p->cur, &k, &v, k.mv_size ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0 && n < limit) {
        n++;
        push_val(L, &k);
        lua_rawseti(L, -3, n);
        push_val(L, &v);
        lua_rawseti(L, -2, n);
        if (n < limit)
            rc = mdb_cursor_get(p->cur, &k, &v, MDB_NEXT);
    }
    if (rc && rc != MDB_NOTFOUND)
        return fail(L, "mdb_cursor_get", rc);
    return 2;
}

/* p:put(key, value): appended (keys in increasing order, as W2's), in the
 * write txn, committed every TXN_OPS puts (W2). */
static int plain_put(lua_State *L)
{
    plain *p = check_open(L, 1);
    MDB_val k = arg_val(L, 2), v = arg_val(L, 3);
    int rc = p->txn ? 0 : mdb_txn_begin(p->env, NULL, 0, &p->txn);
    if (rc)
        return fail(L, "mdb_txn_begin", rc);
    if ((rc = mdb_put(p->txn, p->dbi, &k, &v, MDB_APPEND)))
        return fail(L, "mdb_put", rc);
    if (++p->puts % TXN_OPS == 0) {
        rc = mdb_txn_commit(p->txn);
        p->txn = NULL;
        if (rc)
            return fail(L, "mdb_txn_commit", rc);
    }
    return 0;
}

static int plain_alloc(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    memcpy(lua_newuserdatauv(L, n, 0), s, n);
    return 1;
}

int luaopen_lmdb_plain(lua_State *L);
int luaopen_lmdb_plain(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "get", plain_get }, { "lookup", plain_lookup }, { "scan", plain_scan },
        { "put", plain_put }, { "close", plain_close }, { NULL, NULL },
    };
    static const luaL_Reg functions[] = {
        { "open", plain_open }, { "create", plain_create }, { "alloc", plain_alloc }, { NULL, NULL },
    };
    luaL_newmetatable(L, MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, plain_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, plain_gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    return 1;
}
