/* defrag.c (binding): be:defrag([opts]) and its job, a backend.DefragJob:
 * the core's defrag job (core/defrag.c) as a userdata; the backend's
 * method is added to its type here. */
#include "binding.h"

#include <string.h>

typedef struct ljob {
    bk_defrag_job *job;   /* the handle's reference; NULL once closed */
} ljob;

static void push_result(lua_State *L, const bk_defrag_result *r)
{
    lua_createtable(L, 0, 5);
    bl_set_integer(L, "size_before", r->size_before);
    bl_set_integer(L, "size_after", r->size_after);
    lua_pushnumber(L, r->seconds);
    lua_setfield(L, -2, "seconds");
    lua_pushnumber(L, r->pause_seconds);
    lua_setfield(L, -2, "pause_seconds");
    lua_pushnumber(L, r->swap_seconds);
    lua_setfield(L, -2, "swap_seconds");
}

/* opts.background, the one option: nil, or a table with nothing else. */
static int background(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i))
        return 0;
    bl_check_type(L, i, LUA_TTABLE, "defrag");
    lua_pushnil(L);
    while (lua_next(L, i)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "background"))
            return bl_bad_arg(L, i, "defrag", lua_pushfstring(L, "unknown option %s",
                              luaL_tolstring(L, -1, NULL)));
    }
    int t = lua_getfield(L, i, "background");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        return bl_bad_arg(L, i, "defrag", "opts.background must be a boolean");
    int on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return on;
}

/* The blocking defrag, as bk_defrag but waiting in slices: a Ctrl-C
 * cancels it (the old file stays the database) and raises "interrupted!";
 * one too late to cancel (the new file in place) comes once it returns. */
static int defrag_now(lua_State *L, lbackend *lb)
{
    bl_hookstate hooks, found;
    bl_hook_save(L, &hooks);   /* before anything can block */
    bl_force_commit(L, lb, &hooks);   /* what was written before is durable after */
    bk_error err;
    bk_defrag_job *job;
    if (bk_defrag_start(lb->be, &job, &err))
        return bl_raise(L, &err);
    int interrupted = 0;
    while (!bk_defrag_wait_for(job, 0.02))
        if (!interrupted && bl_interrupted(L, &hooks, &found)) {
            interrupted = 1;
            bk_defrag_cancel(job);
        }
    bk_defrag_result r;
    int rc = bk_defrag_wait(job, &r, &err);
    bk_defrag_job_free(job);
    bl_deliver_logs(L, 1);
    if (interrupted && rc == BK_ECANCELED)
        return bl_raise_interrupt(L);
    if (interrupted)
        bl_hook_restore(L, &found);
    if (rc)
        return bl_raise(L, &err);
    push_result(L, &r);
    return 1;
}

/* be:defrag([opts]): the result table once done, or with opts.background
 * a DefragJob at once. */
static int l_defrag(lua_State *L)
{
    lbackend *lb = bl_check_backend(L, 1);
    if (!background(L, 2))
        return defrag_now(L, lb);
    bk_error err;
    ljob *j = bl_new_ud(L, sizeof *j, 0, T_JOB);   /* closed until it holds the job */
    j->job = NULL;
    if (bk_defrag_start(lb->be, &j->job, &err))
        return bl_raise(L, &err);
    return 1;
}

static ljob *check_job(lua_State *L)
{
    ljob *j = bl_check_ud(L, 1, T_JOB);
    if (!j->job)
        bl_fail(L, "defrag job is closed");
    return j;
}

static int l_job_done(lua_State *L)
{
    lua_pushboolean(L, bk_defrag_done(check_job(L)->job));
    return 1;
}

/* A Ctrl-C while waiting raises "interrupted!"; the defrag goes on. */
static int l_job_wait(lua_State *L)
{
    bk_defrag_job *job = check_job(L)->job;
    bk_defrag_result r;
    bk_error err;
    bl_hookstate hooks;
    bl_hook_save(L, &hooks);
    while (!bk_defrag_wait_for(job, 0.02))
        bl_check_interrupt(L, &hooks);
    if (bk_defrag_wait(job, &r, &err))
        return bl_raise(L, &err);
    push_result(L, &r);
    return 1;
}

static int l_job_progress(lua_State *L)
{
    uint64_t copied, total;
    bk_defrag_progress(check_job(L)->job, &copied, &total);
    lua_pushinteger(L, (lua_Integer)copied);
    lua_pushinteger(L, (lua_Integer)total);
    return 2;
}

static int l_job_cancel(lua_State *L)
{
    bk_defrag_cancel(check_job(L)->job);
    return 0;
}

/* The handle goes; the defrag goes on (the backend's close cancels it). */
static int l_job_close(lua_State *L)
{
    ljob *j = bl_check_ud(L, 1, T_JOB);
    bk_defrag_job_free(j->job);
    j->job = NULL;
    return 0;
}

static int l_job_tostring(lua_State *L)
{
    ljob *j = bl_check_ud(L, 1, T_JOB);
    if (!j->job)
        lua_pushfstring(L, "%s (closed)", TYPES[T_JOB]);
    else
        lua_pushfstring(L, "%s (%s)", TYPES[T_JOB], bk_defrag_done(j->job) ? "done" : "running");
    return 1;
}

void bl_open_defrag(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "done", l_job_done }, { "wait", l_job_wait }, { "progress", l_job_progress },
        { "cancel", l_job_cancel }, { "close", l_job_close }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", l_job_close }, { "__close", l_job_close },
        { "__tostring", l_job_tostring }, { NULL, NULL } };
    static const luaL_Reg backend_methods[] = { { "defrag", l_defrag }, { NULL, NULL } };
    static const luaL_Reg none[] = { { NULL, NULL } };
    bl_new_type(L, T_JOB, methods, meta);
    bl_new_type(L, T_BACKEND, backend_methods, none);
}
