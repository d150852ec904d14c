/* backend_ud.c: the Backend type (core.open, its config, its methods) and
 * the children it makes: the BatchTx and ReadTx it keeps, ConcurrentReadTxs,
 * Snapshots. */
#include "binding.h"

#include <string.h>

lbackend *bl_check_backend(lua_State *L, int i)
{
    lbackend *lb = bl_check_ud(L, i, T_BACKEND);
    bl_deliver_logs(L, i);   /* first: the logger may close the backend */
    bl_check_open(L, lb->be);
    return lb;
}

static int field_number(lua_State *L, int t, const char *name, double *out)
{
    int type = lua_getfield(L, t, name);
    if (type == LUA_TNUMBER)
        *out = lua_tonumber(L, -1);
    else if (type != LUA_TNIL)
        bl_fail(L, "config.%s must be a number", name);
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
        bl_fail(L, "config.%s must be a non-negative integer", name);
    lua_pop(L, 1);
}

static void field_bool(lua_State *L, int t, const char *name, int *out)
{
    int type = lua_getfield(L, t, name);
    if (type == LUA_TBOOLEAN)
        *out = lua_toboolean(L, -1);
    else if (type != LUA_TNIL)
        bl_fail(L, "config.%s must be a boolean", name);
    lua_pop(L, 1);
}

/* The config table at i (checked by the facade) into cfg; its path string
 * is left on the stack, which keeps cfg->path alive. */
void bl_read_config(lua_State *L, int i, const char *fname, bk_config *cfg)
{
    size_t len;
    bl_check_type(L, i, LUA_TTABLE, fname);
    bk_config_default(cfg);
    if (lua_getfield(L, i, "path") != LUA_TSTRING)
        bl_fail(L, "config.path must be a string");
    cfg->path = lua_tolstring(L, -1, &len);
    if (strlen(cfg->path) != len)
        bl_fail(L, "config.path must not contain zero bytes");
    field_number(L, i, "batch_interval", &cfg->batch_interval);
    field_integer(L, i, "batch_limit", &cfg->batch_limit);
    field_integer(L, i, "mmap_size", &cfg->mmap_size);
    field_integer(L, i, "max_buffered_bytes", &cfg->max_buffered_bytes);
    uint64_t readers = cfg->max_readers;   /* 0 too goes to bk_open, which refuses it */
    field_integer(L, i, "max_readers", &readers);
    cfg->max_readers = readers > 100000 ? 100001 : (unsigned)readers;
    field_bool(L, i, "no_fsync", &cfg->no_fsync);
    field_bool(L, i, "readonly", &cfg->readonly);
    field_bool(L, i, "owns_dir", &cfg->owns_dir);
}

/* core.open(config): the facade has checked the field names. */
int bl_open(lua_State *L)
{
    bk_config cfg;
    bk_error err;
    bl_read_config(L, 1, "open", &cfg);
    int logger = lua_getfield(L, 1, "logger");
    if (logger != LUA_TNIL && logger != LUA_TFUNCTION)
        return bl_fail(L, "config.logger must be a function");

    lbackend *lb = bl_new_ud(L, sizeof *lb, UV_COUNT, T_BACKEND);
    lb->be = NULL;   /* closed until the core has opened */
    lb->delivering = 0;
    lua_rotate(L, -2, 1);
    lua_setiuservalue(L, -2, UV_LOGGER);
    if (bk_open(&cfg, &lb->be, &err))
        return bl_raise(L, &err);
    return 1;
}

static int l_backend_close(lua_State *L)
{
    lbackend *lb = bl_check_ud(L, 1, T_BACKEND);
    bk_error err;
    if (!lb->be)
        return 0;
    int rc = bk_close(lb->be, 0, &err);
    bl_deliver_logs(L, 1);
    if (rc)
        return bl_raise(L, &err);
    return 0;
}

static int l_backend_gc(lua_State *L)
{
    lbackend *lb = bl_check_ud(L, 1, T_BACKEND);
    bk_error err;
    if (!lb->be)
        return 0;
    bk_close(lb->be, 1, &err);   /* nobody is left to report a failure to */
    bl_deliver_logs(L, 1);
    bk_free(lb->be);
    lb->be = NULL;
    return 0;
}

static int l_backend_tostring(lua_State *L)
{
    lbackend *lb = bl_check_ud(L, 1, T_BACKEND);
    if (!lb->be || bk_is_closed(lb->be))
        lua_pushstring(L, "backend.Backend (closed)");
    else
        lua_pushfstring(L, "backend.Backend (%s)", bk_path(lb->be));
    return 1;
}

/* The BatchTx and the ReadTx are one per backend, kept as user values. */
static int cached_tx(lua_State *L, int uv, int type, int nuv)
{
    lbackend *lb = bl_check_backend(L, 1);
    if (lua_getiuservalue(L, 1, uv) == LUA_TUSERDATA)
        return 1;
    lua_pop(L, 1);
    ltx *t = bl_new_ud(L, sizeof *t, nuv, type);
    memset(t, 0, sizeof *t);
    t->be = lb->be;
    bk_ref(t->be);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, uv);
    return 1;
}

static int l_batch_tx(lua_State *L)
{
    if (cached_tx(L, UV_BATCH, T_BATCH, 1) && lua_getiuservalue(L, -1, UV_TIES) == LUA_TNIL) {
        bl_new_weak_table(L, 2);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, TIE_BACKEND);
        lua_setiuservalue(L, -3, UV_TIES);
    }
    lua_pop(L, 1);
    return 1;
}

static int l_read_tx(lua_State *L)
{
    return cached_tx(L, UV_READ, T_READ, 0);
}

static int l_concurrent_read_tx(lua_State *L)
{
    return bl_crt_open(L, bl_check_backend(L, 1), 1);
}

static int l_snapshot(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    bk_error err;
    lsnap *s = bl_new_ud(L, sizeof *s, 0, T_SNAP);
    s->snap = NULL;
    s->busy = 0;
    int rc = bk_snapshot_open(lb->be, &s->snap, &err);
    bl_deliver_logs(L, 1);
    if (rc)
        return bl_raise(L, &err);
    return 1;
}

static int l_hash(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    bk_error err;
    uint32_t crc;
    size_t n = 0;
    if (!lua_isnoneornil(L, 2)) {
        bl_check_type(L, 2, LUA_TTABLE, "hash");
        /* Count, then collect {bucket, key} pairs whose value is true. */
        for (int pass = 0; pass < 2; pass++) {
            bk_slice *pairs = pass ? lua_newuserdatauv(L, (n ? n : 1) * 2 * sizeof *pairs, 0) : NULL;
            int pairs_idx = lua_gettop(L);
            size_t i = 0;
            lua_pushnil(L);
            while (lua_next(L, 2)) {
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE)
                    return bl_fail(L, "hash ignores must map bucket names to tables");
                lua_pushnil(L);
                while (lua_next(L, -2)) {
                    if (lua_type(L, -2) != LUA_TSTRING)
                        return bl_fail(L, "hash ignores: keys must be strings");
                    if (lua_type(L, -1) != LUA_TBOOLEAN)
                        return bl_fail(L, "hash ignores: values must be booleans");
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
                return bl_raise(L, &err);
            lua_settop(L, pairs_idx - 1);
        }
    } else if (bk_hash(lb->be, NULL, 0, &crc, &err)) {
        return bl_raise(L, &err);
    }
    lua_pushinteger(L, (lua_Integer)crc);
    return 1;
}

static int stats_or_raise(lua_State *L, bk_stats *st)
{
    lbackend *lb = bl_check_backend(L, 1);
    bk_error err;
    if (bk_stats_get(lb->be, st, &err))
        return bl_raise(L, &err);
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

static void push_hist(lua_State *L, const bk_hist *h, const char *name)
{
    lua_createtable(L, 0, 3);
    bl_set_integer(L, "count", h->count);
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
        bl_set_integer(L, "count", below);
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

/* Waits in slices, to answer Ctrl-C between them. */
void bl_force_commit(lua_State *L, lbackend *lb, const bl_hookstate *hooks)
{
    bk_error err;
    bk_commit_ticket t;
    int rc = bk_request_commit(lb->be, &t, &err), interrupted = 0;
    while (!rc && !interrupted && !bk_commit_wait_for(lb->be, &t, 0.02, &rc, &err))
        interrupted = bl_interrupted(L, hooks, NULL);
    bl_deliver_logs(L, 1);
    if (interrupted)
        bl_raise_interrupt(L);
    if (rc)
        bl_raise(L, &err);
}

static int l_force_commit(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    bl_hookstate hooks;
    bl_hook_save(L, &hooks);   /* before anything can block */
    bl_force_commit(L, lb, &hooks);
    return 0;
}

static int l_path(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    lua_pushstring(L, bk_path(lb->be));
    return 1;
}

static int l_committed_get(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    bk_slice bucket = bl_check_str(L, 2, "_committed_get"), key = bl_check_str(L, 3, "_committed_get");
    bk_error err;
    if (bk_committed_get(lb->be, bucket, key, bl_scratch(L), &err))
        return bl_raise(L, &err);
    bl_push_first_value(L, bl_scratch(L));
    return 1;
}

/* be:bucket_stats(): LMDB's numbers for each bucket, committed first. */
static int l_bucket_stats(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    bk_bucket_stat *all = lua_newuserdatauv(L, BK_MAX_BUCKETS * sizeof *all, 0);
    size_t n;
    bk_error err;
    if (bk_bucket_stats(lb->be, all, BK_MAX_BUCKETS, &n, &err))
        return bl_raise(L, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushlstring(L, all[i].name.data, all[i].name.len);
        lua_setfield(L, -2, "name");
        bl_set_integer(L, "entries", all[i].entries);
        bl_set_integer(L, "depth", all[i].depth);
        bl_set_integer(L, "branch_pages", all[i].branch_pages);
        bl_set_integer(L, "leaf_pages", all[i].leaf_pages);
        bl_set_integer(L, "overflow_pages", all[i].overflow_pages);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

void bl_open_backend(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "batch_tx", l_batch_tx }, { "read_tx", l_read_tx },
        { "concurrent_read_tx", l_concurrent_read_tx }, { "snapshot", l_snapshot },
        { "hash", l_hash }, { "size", l_size }, { "size_in_use", l_size_in_use },
        { "open_read_tx_n", l_open_read_tx_n }, { "commits", l_commits },
        { "force_commit", l_force_commit },
        { "close", l_backend_close }, { "stats", l_stats }, { "path", l_path },
        { "bucket_stats", l_bucket_stats }, { "_committed_get", l_committed_get },
        { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", l_backend_gc }, { "__close", l_backend_gc },
        { "__tostring", l_backend_tostring }, { NULL, NULL } };
    bl_new_type(L, T_BACKEND, methods, meta);
}
