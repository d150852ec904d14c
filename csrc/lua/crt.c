/* crt.c: how ConcurrentReadTxs are opened, closed and collected. A view
 * per request is what they are for, and in a heap of 100k or more live
 * objects Lua spends 1-2 us more on a userdata with a finalizer than on
 * one without (bench/README.md). So a ConcurrentReadTx has none: its view
 * is also listed in a group, a userdata with a __gc shared by up to
 * CRT_GROUP txs opened one after another, which each of them keeps alive
 * (its user value). When the last of them is collected, the group closes
 * the views they left open; close() takes its view off the list first.
 * The slot is the one record of whether a view is open: a finalizer may
 * reach a tx after its group's __gc ran (both unreachable at once), and
 * then finds it closed. The Backend holds its current group weakly
 * (UV_VIEWS), so a group of unreachable txs is collected before it is
 * full. (The debug library can detach a group, or call its __gc: then
 * all bets are off, as for any userdata.) */
#include "binding.h"

#include <string.h>

/* A long-lived tx keeps the views of its group that were left to the
 * collector open: 16 bounds that, and pays for a finalizer per 16. */
#define CRT_GROUP 16

typedef struct lgroup {
    int used;                       /* slots given out, never reused */
    bk_view *views[CRT_GROUP];      /* NULL: closed by its tx, or never opened */
} lgroup;

/* The current group of the Backend at b, with a free slot, pushed. */
static lgroup *push_group(lua_State *L, int b)
{
    if (lua_getiuservalue(L, b, UV_VIEWS) != LUA_TTABLE) {
        lua_pop(L, 1);
        bl_new_weak_table(L, 1);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, b, UV_VIEWS);
    }
    lgroup *g = lua_rawgeti(L, -1, 1) == LUA_TUSERDATA ? lua_touserdata(L, -1) : NULL;
    if (!g || g->used == CRT_GROUP) {
        lua_pop(L, 1);
        g = bl_new_ud(L, sizeof *g, 0, T_GROUP);
        memset(g, 0, sizeof *g);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, 1);
    }
    lua_remove(L, -2);
    return g;
}

int bl_crt_open(lua_State *L, lbackend *lb, int b)
{
    lgroup *g = push_group(L, b);
    ltx *t = bl_new_ud(L, sizeof *t, 1, T_CRT);
    memset(t, 0, sizeof *t);
    lua_rotate(L, -2, 1);
    lua_setiuservalue(L, -2, 1);   /* the tx keeps its group */
    bk_error err;
    if (bk_view_open(lb->be, &t->view, &err))
        return bl_raise(L, &err);
    t->group = g;
    t->slot = g->used++;
    g->views[t->slot] = t->view;
    return 1;
}

/* The tx's view, NULL once closed by close() or by its group's __gc (which
 * may run before a finalizer that still reaches the tx: resurrection). */
bk_view *bl_crt_view(ltx *t)
{
    if (t->group && !t->group->views[t->slot]) {
        t->group = NULL;
        t->view = NULL;
    }
    return t->view;
}

void bl_crt_close(ltx *t)
{
    if (!bl_crt_view(t))
        return;
    if (t->group)
        t->group->views[t->slot] = NULL;
    t->group = NULL;
    bk_view_close(t->view);
    t->view = NULL;
}

static int group_gc(lua_State *L)
{
    lgroup *g = bl_check_ud(L, 1, T_GROUP);
    for (int i = 0; i < g->used; i++) {
        bk_view_close(g->views[i]);
        g->views[i] = NULL;
    }
    return 0;
}

void bl_open_crt(lua_State *L)
{
    static const luaL_Reg none[] = { { NULL, NULL } };
    static const luaL_Reg meta[] = { { "__gc", group_gc }, { NULL, NULL } };
    bl_new_type(L, T_GROUP, none, meta);
    /* Its __gc would close views still in use: getmetatable does not give it. */
    luaL_getmetatable(L, TYPES[T_GROUP]);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}
