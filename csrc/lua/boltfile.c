/* boltfile.c: etcd's data files (bbolt): the BoltFile type (open_bolt:
 * info, walk) and the module's import_bolt and export_bolt. */
#include "binding.h"

static lbolt *check_bolt(lua_State *L)
{
    lbolt *f = bl_check_ud(L, 1, T_BOLT);
    if (!f->bolt)
        bl_fail(L, "etcd file is closed");
    return f;
}

int bl_open_bolt(lua_State *L)
{
    const char *path = bl_check_path(L, 1, "open_bolt");
    lbolt *f = bl_new_ud(L, sizeof *f, 0, T_BOLT);
    f->bolt = NULL;   /* closed until the file is open */
    f->busy = 0;
    bk_error err;
    if (bk_bolt_open(path, &f->bolt, &err))
        return bl_raise(L, &err);
    return 1;
}

static int l_bolt_info(lua_State *L)
{
    bk_bolt_info i;
    bk_bolt_info_get(check_bolt(L)->bolt, &i);
    lua_createtable(L, 0, 8);
    bl_set_integer(L, "page_size", i.page_size);
    bl_set_integer(L, "meta", (uint64_t)i.meta);
    bl_set_integer(L, "txid", i.txid);
    bl_set_integer(L, "high_water", i.high_water);
    bl_set_integer(L, "total_size", i.total_size);
    bl_set_integer(L, "file_size", i.file_size);
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
        return bl_raise(L, &err);
    return 0;
}

/* f:walk(on_bucket, on_kv): buckets in name order, each followed by its keys. */
static int l_bolt_walk(lua_State *L)
{
    lbolt *f = check_bolt(L);
    for (int i = 2; i <= 3; i++)
        if (!lua_isnoneornil(L, i))
            bl_check_type(L, i, LUA_TFUNCTION, "walk");
    return bl_busy_call(L, 3, &f->busy, bolt_walk);
}

static int l_bolt_close(lua_State *L)
{
    lbolt *f = bl_check_ud(L, 1, T_BOLT);
    if (f->busy)
        return bl_fail(L, "etcd file is busy (walk in progress)");
    bk_bolt_close(f->bolt);
    f->bolt = NULL;
    return 0;
}

static int l_bolt_tostring(lua_State *L)
{
    lbolt *f = bl_check_ud(L, 1, T_BOLT);
    if (f->bolt)
        lua_pushfstring(L, "%s (%p)", TYPES[T_BOLT], (void *)f);
    else
        lua_pushfstring(L, "%s (closed)", TYPES[T_BOLT]);
    return 1;
}

/* What an import or export copied: { buckets, keys, bytes, hash }. */
static void push_copied(lua_State *L, uint64_t buckets, uint64_t keys, uint64_t bytes,
                        uint32_t hash)
{
    lua_createtable(L, 0, 5);
    bl_set_integer(L, "buckets", buckets);
    bl_set_integer(L, "keys", keys);
    bl_set_integer(L, "bytes", bytes);
    bl_set_integer(L, "hash", hash);
}

/* import_bolt(src, config): a new backend database with src's buckets. */
int bl_import_bolt(lua_State *L)
{
    const char *src = bl_check_path(L, 1, "import_bolt");
    bk_config cfg;
    bl_read_config(L, 2, "import_bolt", &cfg);
    bk_bolt_import_stats st;
    bk_error err;
    if (bk_bolt_import(src, &cfg, &st, &err))
        return bl_raise(L, &err);
    push_copied(L, st.buckets, st.keys, st.bytes, st.hash);
    return 1;
}

/* core.export_bolt(src, dst, trailer, progress): src a path or a Backend
 * (the facade has checked the options). */
int bl_export_bolt(lua_State *L)
{
    lbackend *lb = luaL_testudata(L, 1, TYPES[T_BACKEND]);
    if (!lb && lua_type(L, 1) != LUA_TSTRING)
        return bl_arg_error(L, 1, "export_bolt", lua_pushfstring(L, "path or %s", TYPES[T_BACKEND]));
    const char *src = lb ? NULL : bl_check_path(L, 1, "export_bolt");
    const char *dst = bl_check_path(L, 2, "export_bolt");
    bl_check_type(L, 3, LUA_TBOOLEAN, "export_bolt");
    if (!lua_isnoneornil(L, 4))
        bl_check_type(L, 4, LUA_TFUNCTION, "export_bolt");
    lua_settop(L, 4);
    bl_progress_ctx ctx = { L, 4, NULL };
    bk_bolt_export_opts opts = { lua_toboolean(L, 3), NULL, &ctx };
    if (!lua_isnil(L, 4))
        opts.progress = bl_progress;
    bk_bolt_export_stats st;
    bk_error err;
    int rc;
    if (lb) {
        bl_check_backend(L, 1);
        rc = bk_bolt_export(lb->be, dst, &opts, &st, &err);
        bl_deliver_logs(L, 1);
    } else {
        rc = bk_bolt_export_path(src, dst, &opts, &st, &err);
    }
    if (rc && lua_gettop(L) > 4)
        return lua_error(L);   /* progress's error */
    if (rc)
        return bl_raise(L, &err);
    push_copied(L, st.buckets, st.keys, st.bytes, st.hash);
    bl_set_integer(L, "size", st.file_size);
    return 1;
}

void bl_open_boltfile(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "info", l_bolt_info }, { "walk", l_bolt_walk }, { "close", l_bolt_close },
        { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", l_bolt_close }, { "__close", l_bolt_close },
        { "__tostring", l_bolt_tostring }, { NULL, NULL } };
    bl_new_type(L, T_BOLT, methods, meta);
}
