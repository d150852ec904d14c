/* module.c: the module backend.core: luaopen, the module's functions
 * (crc32c, interrupts), and the Lua idioms installed as methods. */
#include "binding.h"
#include "interrupt.h"

#include <errno.h>
#include <string.h>

/* interrupted(err): the facade's backend.interrupted, the one definition. */
static int l_interrupted(lua_State *L)
{
    lua_pushboolean(L, bl_is_interrupt(L, 1));
    return 1;
}

static int l_crc32c(lua_State *L)
{
    bk_slice s = bl_check_str(L, 1, "crc32c");
    int64_t crc = bl_opt_integer(L, 2, "crc32c");   /* 1.0 is 1, as for string.rep */
    if (crc < 0 || crc > 0xFFFFFFFF)
        return bl_fail(L, "bad argument #2 to 'crc32c' (crc out of range)");
    lua_pushinteger(L, (lua_Integer)bk_crc32c((uint32_t)crc, s.data, s.len));
    return 1;
}

/* ---- interrupts (Ctrl-C) ---- */

/* lua.c turns one SIGINT into an "interrupted!" error while it runs a script,
 * then leaves SIGINT's default action. catch_interrupt() arms the same again
 * (bl_interrupt_arm: one-shot, reads return), so that a REPL can cancel a line
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

void bl_hook_save(lua_State *L, bl_hookstate *s)
{
    lua_State *main = main_thread(L);
    s->hook = lua_gethook(main);
    s->mask = lua_gethookmask(main);
    s->count = lua_gethookcount(main);
}

int bl_interrupted(lua_State *L, const bl_hookstate *s, bl_hookstate *found)
{
    lua_State *main = main_thread(L);
    if (lua_gethook(main) == s->hook && lua_gethookmask(main) == s->mask)
        return 0;
    if (found)
        bl_hook_save(L, found);
    bl_hook_restore(L, s);   /* the Ctrl-C is taken here */
    return 1;
}

void bl_hook_restore(lua_State *L, const bl_hookstate *s)
{
    lua_sethook(main_thread(L), s->hook, s->mask, s->count);
}

int bl_raise_interrupt(lua_State *L)
{
    lua_pushliteral(L, "interrupted!");   /* as lua.c's hook raises it */
    return lua_error(L);
}

void bl_check_interrupt(lua_State *L, const bl_hookstate *s)
{
    if (bl_interrupted(L, s, NULL))
        bl_raise_interrupt(L);
}

/* The state is closing: a SIGINT must no longer reach it. */
static int l_interrupt_gc(lua_State *L)
{
    if (interrupt_L == main_thread(L))
        bl_interrupt_disarm();
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
    if (bl_interrupt_arm(on_interrupt) < 0)
        return bl_fail(L, "catching SIGINT: %s", strerror(errno));
    return 0;
}

/* ---- idioms: Lua methods on the C types ---- */

/* Each comes from the Lua module backend.idioms, written against the public
 * methods only, wrapped in a C closure that checks self and the arguments
 * as the C methods do (their messages, their exact type check). */
static const struct idiom {
    int type;
    const char *name;
    int args[3];   /* the Lua types of the arguments after self; 0 ends */
} IDIOMS[] = {
    { T_BACKEND, "update", { LUA_TFUNCTION } },
    { T_BACKEND, "view", { LUA_TFUNCTION } },
    { T_BACKEND, "metrics", { 0 } },
    { T_BATCH, "for_each", { LUA_TSTRING, LUA_TFUNCTION } },
    { T_READ, "for_each", { LUA_TSTRING, LUA_TFUNCTION } },
    { T_CRT, "for_each", { LUA_TSTRING, LUA_TFUNCTION } },
};
enum { UP_IDIOM = UP_COUNT + 1, UP_IDIOM_FN, UP_IDIOM_COUNT = UP_IDIOM_FN };

static int idiom_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    return lua_gettop(L);
}

/* A continuation: the Lua function may yield (update's fn does). */
static int l_idiom(lua_State *L)
{
    const struct idiom *id = &IDIOMS[lua_tointeger(L, lua_upvalueindex(UP_IDIOM))];
    bl_check_ud(L, 1, id->type);
    for (int i = 0; id->args[i]; i++)
        bl_check_type(L, i + 2, id->args[i], id->name);
    lua_pushvalue(L, lua_upvalueindex(UP_IDIOM_FN));
    lua_insert(L, 1);
    lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, idiom_done);
    return idiom_done(L, LUA_OK, 0);
}

static void add_idioms(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "backend.idioms");
    lua_call(L, 1, 1);
    int fns = lua_gettop(L);
    for (size_t i = 0; i < sizeof IDIOMS / sizeof IDIOMS[0]; i++) {
        luaL_getmetatable(L, TYPES[IDIOMS[i].type]);
        lua_getfield(L, -1, "__index");
        bl_push_upvalues(L);
        lua_pushinteger(L, (lua_Integer)i);
        if (lua_getfield(L, fns, IDIOMS[i].name) != LUA_TFUNCTION)
            luaL_error(L, "backend.idioms has no function '%s'", IDIOMS[i].name);
        lua_pushcclosure(L, l_idiom, UP_IDIOM_COUNT);
        lua_setfield(L, -2, IDIOMS[i].name);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

/* The one symbol core.so exports (built with -fvisibility=hidden). */
#define BL_EXPORT __attribute__((visibility("default")))

BL_EXPORT int luaopen_backend_core(lua_State *L);
BL_EXPORT int luaopen_backend_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "open", bl_open }, { "crc32c", l_crc32c },
        { "open_bolt", bl_open_bolt }, { "import_bolt", bl_import_bolt },
        { "export_bolt", bl_export_bolt },
        { "catch_interrupt", l_catch_interrupt }, { "interrupted", l_interrupted },
        { NULL, NULL } };

    bl_open_backend(L);
    bl_open_tx(L);
    bl_open_crt(L);
    bl_open_rows(L);
    bl_open_snapshot(L);
    bl_open_boltfile(L);
    bl_open_defrag(L);
    add_idioms(L);
    luaL_newlibtable(L, funcs);
    bl_push_upvalues(L);
    luaL_setfuncs(L, funcs, UP_COUNT);
    lua_pushliteral(L, BK_VERSION);
    lua_setfield(L, -2, "version");
    int major, minor, patch;
    bk_lmdb_version(&major, &minor, &patch);
    lua_pushfstring(L, "%d.%d.%d", major, minor, patch);
    lua_setfield(L, -2, "lmdb_version");
    size_t max_key = bk_lmdb_max_key_size();
    if (max_key) {
        lua_pushinteger(L, (lua_Integer)max_key);
        lua_setfield(L, -2, "max_key_size");
    }
    return 1;
}
