/* snapshot.c: the Snapshot type: its size, and write_to a new file at a
 * path (the core writes it), a Lua file, or a function taking chunks. */
#include "binding.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static lsnap *check_snap(lua_State *L)
{
    lsnap *s = bl_check_ud(L, 1, T_SNAP);
    if (!s->snap)
        bl_fail(L, "snapshot is closed");
    return s;
}

static int l_snap_size(lua_State *L)
{
    lsnap *s = check_snap(L);
    bk_error err;
    if (bk_snapshot_check(s->snap, &err))
        return bl_raise(L, &err);
    lua_pushinteger(L, (lua_Integer)bk_snapshot_size(s->snap));
    return 1;
}

#define READ_CHUNK ((size_t)1 << 20)   /* what a function is given at a time */

/* write_to's work, under busy_call (args checked): (snap, dest, progress). */
static int snap_write(lua_State *L)
{
    lsnap *s = lua_touserdata(L, 1);
    bl_progress_ctx w = { L, lua_isnil(L, 3) ? 0 : 3, NULL };
    bk_progress_fn progress = w.fn ? bl_progress : NULL;
    uint64_t total = bk_snapshot_size(s->snap);
    bk_error err;
    int rc = BK_OK;
    luaL_Stream *stream;
    if (lua_type(L, 2) == LUA_TSTRING) {
        rc = bk_snapshot_write_path(s->snap, lua_tostring(L, 2), progress, &w, &err);
    } else if ((stream = luaL_testudata(L, 2, LUA_FILEHANDLE))) {
        if (!stream->closef)
            return bl_fail(L, "attempt to use a closed file");
        FILE *f = stream->f;
        if (fflush(f) != 0)
            return bl_fail(L, "writing snapshot: %s", strerror(errno));
        w.stream = stream;
        rc = bk_snapshot_write_fd(s->snap, fileno(f), progress, &w, &err);
        if (!rc)
            fseeko(f, 0, SEEK_CUR);   /* the stream learns the new position */
    } else {
        char *buf = lua_newuserdatauv(L, READ_CHUNK, 0);
        for (uint64_t done = 0; done < total;) {
            size_t n = total - done < READ_CHUNK ? (size_t)(total - done) : READ_CHUNK;
            if (bk_snapshot_read(s->snap, done, buf, n, &err))
                return bl_raise(L, &err);
            lua_pushvalue(L, 2);
            lua_pushlstring(L, buf, n);
            lua_call(L, 1, 0);
            done += n;
            if (bl_call_progress(L, w.fn, done, total) != LUA_OK)
                return lua_error(L);
        }
    }
    if (rc && lua_gettop(L) > 3)
        return lua_error(L);   /* progress's error */
    if (rc == BK_EEXIST)
        return bl_fail(L, "%s (write_to does not overwrite files: remove it first, "
                       "or pass an open file)", err.msg);
    if (rc)
        return bl_raise(L, &err);
    lua_pushinteger(L, (lua_Integer)total);
    return 1;
}

static int l_snap_write_to(lua_State *L)
{
    lsnap *s = check_snap(L);
    if (!lua_isnoneornil(L, 3))
        bl_check_type(L, 3, LUA_TFUNCTION, "write_to");
    if (lua_type(L, 2) == LUA_TSTRING)
        bl_check_path(L, 2, "write_to");
    else if (lua_type(L, 2) != LUA_TFUNCTION && !luaL_testudata(L, 2, LUA_FILEHANDLE))
        return bl_arg_error(L, 2, "write_to", "path, file or function");
    return bl_busy_call(L, 3, &s->busy, snap_write);
}

static int l_snap_close(lua_State *L)
{
    lsnap *s = bl_check_ud(L, 1, T_SNAP);
    if (s->busy)
        return bl_fail(L, "snapshot is busy (write_to in progress)");
    bk_snapshot_close(s->snap);
    s->snap = NULL;
    return 0;
}

static int l_snap_tostring(lua_State *L)
{
    lsnap *s = bl_check_ud(L, 1, T_SNAP);
    bk_error err;
    return bl_push_state(L, T_SNAP, s, s->snap ? bk_snapshot_check(s->snap, &err) : BK_ECLOSED);
}

void bl_open_snapshot(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "size", l_snap_size }, { "write_to", l_snap_write_to },
        { "close", l_snap_close }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", l_snap_close }, { "__close", l_snap_close },
        { "__tostring", l_snap_tostring }, { NULL, NULL } };
    bl_new_type(L, T_SNAP, methods, meta);
}
