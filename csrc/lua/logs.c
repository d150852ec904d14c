/* logs.c: the core's log messages, delivered to the Backend's logger on the
 * Lua thread, and the one test of what an interrupt (Ctrl-C) error is. */
#include "binding.h"

#include <string.h>

/* A delivery's backend and the entry it found first. */
typedef struct delivery {
    bk_backend *be;
    bk_log_entry first;
} delivery;

/* lua.c's Ctrl-C error ("interrupted!", maybe after "chunk:line: "), which
 * a pcall around the logger must let through (backend.interrupted). */
int bl_is_interrupt(lua_State *L, int idx)
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
        if (!interrupted && bl_is_interrupt(L, -1))
            interrupted = lua_gettop(L);   /* raised once all are delivered */
        else
            lua_pop(L, 1);   /* a failing logger must not fail storage */
    }
    return interrupted ? lua_error(L) : 0;
}

/* Calls the logger with what the core queued, unless a delivery is already
 * running further up the stack (the logger called the backend): that one
 * leaves the rest for the next call. */
void bl_deliver_logs(lua_State *L, int backend_idx)
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
    if (rc != LUA_OK && bl_is_interrupt(L, -1))
        lua_error(L);   /* Ctrl-C, maybe during the logger: not a logger's failure */
    if (rc != LUA_OK)
        lua_pop(L, 1);
}
