/*
 * binding.h: what the files of the Lua binding (module backend.core) share:
 * the userdata types and their structs, and the helpers of common.c (errors
 * and arguments, metatables, the scratch buffer, calls back into Lua). The
 * binding translates: arguments are checked strictly (no number-to-string
 * coercion), core codes are raised as "backend: ..." messages, and every
 * object is a userdata with a named metatable, created closed before the
 * core resource is taken (liolib's pattern). Children hold their own core
 * reference, so Lua's collection order can never free a backend under them.
 *
 * Files, each using only those before it: common.c, logs.c (the logger,
 * interrupts), rows.c, backend_ud.c, tx.c, snapshot.c, boltfile.c, defrag.c,
 * module.c (luaopen, module functions, the Lua idioms).
 */
#ifndef BINDING_H
#define BINDING_H

#include "bolt/bolt.h"
#include "core/backend.h"

#include <lauxlib.h>
#include <lua.h>

/* Hidden in core.so, as -fvisibility=hidden makes them: luarocks' builtin
 * build takes no compiler flags from the rockspec. */
#pragma GCC visibility push(hidden)

/* The userdata types; TYPES[t] names t's metatable. */
enum { T_BACKEND, T_BATCH, T_READ, T_CRT, T_ROWS, T_SNAP, T_BOLT, T_JOB, T_GROUP, NTYPES };
extern const char *const TYPES[NTYPES];
#define MT_RESULT "backend.Result"   /* the scratch buffer's, below */

/* The upvalues of every method and module function (bl_new_type,
 * bl_push_upvalues): the table of the types' metatables by T_ + 1, then
 * the lshared. No string is made or hashed to find a metatable. */
enum { UP_TYPES = 1, UP_SHARED, UP_COUNT = UP_SHARED };

/* One per Lua state. A read fills the scratch buffer, and the binding makes
 * Lua values of it before it returns (first member: MT_RESULT's __gc frees
 * it). bl_check_ud compares metatables by address, with mts: they live as
 * long as the registry. */
typedef struct lshared {
    bk_result scratch;
    unsigned fills;      /* reads into the scratch so far (bl_scratch) */
    const void *mts[NTYPES];
} lshared;

/* Backend user values (UV_VIEWS: a table with weak values, [1] the current
 * group of ConcurrentReadTxs, crt.c). The BatchTx has one, UV_TIES: a table
 * with weak values, [TIE_OWNER] the coroutine that took the lock,
 * [TIE_BACKEND] the Backend (for its logger; the tx does not keep it alive). */
enum { UV_BATCH = 1, UV_READ, UV_LOGGER, UV_VIEWS, UV_COUNT = UV_VIEWS };
enum { UV_TIES = 1, TIE_OWNER = 1, TIE_BACKEND = 2 };

typedef struct lbackend {
    bk_backend *be;
    int delivering;      /* the logger is being called (bl_deliver_logs) */
} lbackend;
typedef struct ltx {
    bk_backend *be;      /* own reference; NULL in a CRT (its view has one) */
    bk_view *view;       /* ReadTx between rlock and runlock; CRT until close */
    int rlocks;
    struct lgroup *group;   /* a CRT's group (crt.c) until close, and its slot */
    int slot;
} ltx;
/* Rows: the result of one read, in one block: 2n + 1 bounds, then the
 * data; key i (from 0) is data[bounds[2i], bounds[2i + 1]), its value runs
 * to bounds[2i + 2]. The block is the userdata's own memory (inline) until
 * a refill needs more; then a plain userdata, the Rows' user value. */
typedef struct lrows {
    size_t n;
    size_t cap;          /* bytes at block */
    size_t *block;
    size_t inline_block[];
} lrows;
/* busy: calls running that call back into Lua (bl_busy_call) */
typedef struct lsnap { bk_snapshot *snap; int busy; } lsnap;
typedef struct lbolt { bk_bolt *bolt; int busy; } lbolt;

/* ---- common.c ---- */

/* luaL_error without the caller's position: every message starts with
 * "backend: ", as the API promises. */
int bl_fail(lua_State *L, const char *fmt, ...);
int bl_raise(lua_State *L, const bk_error *err);
/* "bad argument #i to 'fname' (why)", numbered as Lua numbers them (a
 * method call does not count self), "backend: " first: luaL_argerror's
 * wording, with the name the method has even when called through pcall. */
int bl_bad_arg(lua_State *L, int i, const char *fname, const char *why);
int bl_arg_error(lua_State *L, int i, const char *fname, const char *expected);
const char *bl_check_path(lua_State *L, int i, const char *fname);
void bl_check_type(lua_State *L, int i, int type, const char *fname);
bk_slice bl_check_str(lua_State *L, int i, const char *fname);
void bl_check_open(lua_State *L, const bk_backend *be);
int64_t bl_opt_integer(lua_State *L, int i, const char *fname);

/* Argument i as a userdata of type t, or raises. */
void *bl_check_ud(lua_State *L, int i, int t);
/* A new userdata of type t, pushed. */
void *bl_new_ud(lua_State *L, size_t size, int nuv, int t);
/* Pushes a new table whose values are weak (narr array slots). */
void bl_new_weak_table(lua_State *L, int narr);
/* The metatable of type t, with its methods (in __index) and metamethods,
 * each a closure with the UP_ upvalues. */
void bl_new_type(lua_State *L, int t, const luaL_Reg *methods, const luaL_Reg *meta);
/* The UP_ upvalues, pushed (kept in the registry: reloads reuse them). */
void bl_push_upvalues(lua_State *L);

int bl_busy_call(lua_State *L, int nargs, int *busy, lua_CFunction body);
int bl_call_progress(lua_State *L, int fn, uint64_t done, uint64_t total);
/* The core's progress callback (ctx a bl_progress_ctx): the Lua function at
 * slot fn, protected; its error stays on the stack and stops the work. A Lua
 * file (stream) that the function closed stops it too: its descriptor may
 * be another's by now. */
typedef struct bl_progress_ctx {
    lua_State *L;
    int fn;                       /* 0: none */
    const luaL_Stream *stream;    /* NULL: none */
} bl_progress_ctx;
int bl_progress(void *ctx, uint64_t done, uint64_t total);
void bl_set_integer(lua_State *L, const char *k, uint64_t v);
int bl_push_state(lua_State *L, int type, const void *p, int rc);

bk_result *bl_scratch(lua_State *L);
unsigned bl_scratch_fills(lua_State *L);
void bl_scratch_done(bk_result *r);
void bl_push_first_value(lua_State *L, bk_result *r);

/* ---- logs.c ---- */

int bl_is_interrupt(lua_State *L, int idx);
void bl_deliver_logs(lua_State *L, int backend_idx);

/* ---- rows.c ---- */

lrows *bl_push_rows(lua_State *L, bk_result *r);
int bl_refill_rows(lua_State *L, int idx, bk_result *r);
bk_slice bl_rows_part(lrows *rows, size_t j);
void bl_push_part(lua_State *L, lrows *rows, size_t j);
void bl_open_rows(lua_State *L);

/* ---- module.c: Ctrl-C during a wait in C. lua.c (and catch_interrupt)
 * take a SIGINT by setting a hook on the main thread, which runs only
 * once C returns. A wait takes the hook before it blocks, waits in
 * slices, and between them bl_check_interrupt raises "interrupted!" (as
 * the hook would, and in place of it) if the hook has changed. ---- */

typedef struct bl_hookstate { lua_Hook hook; int mask, count; } bl_hookstate;
void bl_hook_save(lua_State *L, bl_hookstate *s);
/* Whether a Ctrl-C came (its hook, saved in *found unless NULL, is then
 * taken back): for a wait that must undo something before it raises, or
 * that ends anyway and sets the hook again (bl_hook_restore), for the
 * interrupt to come once it has returned. */
int bl_interrupted(lua_State *L, const bl_hookstate *s, bl_hookstate *found);
void bl_hook_restore(lua_State *L, const bl_hookstate *s);
int bl_raise_interrupt(lua_State *L);
void bl_check_interrupt(lua_State *L, const bl_hookstate *s);

/* ---- backend_ud.c ---- */

lbackend *bl_check_backend(lua_State *L, int i);
/* be:force_commit() for the Backend at 1: raises its error, or
 * "interrupted!" on a Ctrl-C since `hooks` were saved (the commit goes on). */
void bl_force_commit(lua_State *L, lbackend *lb, const bl_hookstate *hooks);
void bl_read_config(lua_State *L, int i, const char *fname, bk_config *cfg);
int bl_open(lua_State *L);
void bl_open_backend(lua_State *L);

/* ---- crt.c: a ConcurrentReadTx of the Backend lb at index b, pushed;
 * its close ---- */

int bl_crt_open(lua_State *L, lbackend *lb, int b);
void bl_crt_close(ltx *t);
bk_view *bl_crt_view(ltx *t);
void bl_open_crt(lua_State *L);

/* ---- tx.c, snapshot.c, boltfile.c ---- */

void bl_open_tx(lua_State *L);
void bl_open_snapshot(lua_State *L);
int bl_open_bolt(lua_State *L);
int bl_import_bolt(lua_State *L);
int bl_export_bolt(lua_State *L);
void bl_open_boltfile(lua_State *L);

/* ---- defrag.c: the DefragJob type, and the Backend's defrag method ---- */

void bl_open_defrag(lua_State *L);

#pragma GCC visibility pop

#endif
