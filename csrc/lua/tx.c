/* tx.c: the three transaction types: the BatchTx (its section, the
 * coroutine that owns it, writes, commits), the shared ReadTx and the
 * ConcurrentReadTx, and the reads they share (range, rows, get, buckets,
 * pairs in chunks). */
#include "binding.h"

#include <stdio.h>
#include <string.h>

static ltx *check_tx(lua_State *L, int type)
{
    ltx *t = bl_check_ud(L, 1, type);
    bl_check_open(L, t->be);
    return t;
}

static ltx *check_batch(lua_State *L)
{
    return check_tx(L, T_BATCH);
}

/* The shared ReadTx: rlock() takes a view, the last runlock() ends it. */
static ltx *check_read(lua_State *L)
{
    return check_tx(L, T_READ);
}

/* ConcurrentReadTx: a view from creation to close (or runlock). */
static ltx *check_crt(lua_State *L)
{
    ltx *t = bl_check_ud(L, 1, T_CRT);
    if (!bl_crt_view(t))
        bl_fail(L, "concurrent read tx is closed");
    return t;
}

/* What a read raises beyond the checks above: a read can go on only
 * if these return. Iterators call them at every step, so a closed or
 * invalidated tx stops them at once. */
static void view_ready(lua_State *L, ltx *t)
{
    bk_error err;
    if (!t->view)
        bl_fail(L, "read tx is not locked (call rlock() first)");
    if (bk_view_check(t->view, &err))
        bl_raise(L, &err);
}

static void batch_ready(lua_State *L, ltx *t)
{
    bl_check_open(L, t->be);
    if (!bk_locked_by_me(t->be))
        bl_fail(L, "batch tx is not locked");
}

static void read_ready(lua_State *L, ltx *t)
{
    bl_check_open(L, t->be);
    view_ready(L, t);
}

static void crt_ready(lua_State *L, ltx *t)
{
    if (!bl_crt_view(t))
        bl_fail(L, "concurrent read tx is closed");
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
    bk_result *r = bl_scratch(L);
    if (k->read(t, q, r, &err))
        bl_raise(L, &err);
    return r;
}

/* range's and rows' arguments (bucket, key, end_key, limit) as a query;
 * *to holds the end key. */
static void check_query(lua_State *L, const char *fname, bk_query *q, bk_slice *to)
{
    q->bucket = bl_check_str(L, 2, fname);
    q->from = bl_check_str(L, 3, fname);
    q->to = NULL;
    if (!lua_isnoneornil(L, 4)) {
        *to = bl_check_str(L, 4, fname);
        q->to = to;
    }
    q->open_end = q->after = 0;
    q->limit = bl_opt_integer(L, 5, fname);
}

/* keys, values: two tables. key_arg: the stack index of the one key
 * every row has (a range of a single key), pushed as it is instead of a
 * copy (one string less to make and collect); 0 for none. 0, with nothing
 * pushed, if making them ran a __gc that read into the scratch. */
static int push_results(lua_State *L, bk_result *r, int key_arg)
{
    unsigned fills = bl_scratch_fills(L);
    lua_createtable(L, (int)r->count, 0);
    lua_createtable(L, (int)r->count, 0);
    for (size_t i = 0; i < r->count; i++) {
        bk_slice k = bk_result_key(r, i), v = bk_result_value(r, i);
        if (key_arg)
            lua_pushvalue(L, key_arg);
        else
            lua_pushlstring(L, k.data, k.len);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        lua_pushlstring(L, v.data, v.len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    /* Checked once: a read a __gc made meanwhile changed the rows read after
     * it (the loop reads r anew each time, so never past its end). */
    if (bl_scratch_fills(L) != fills) {
        lua_pop(L, 2);
        return 0;
    }
    bl_scratch_done(r);
    return 1;
}

/* range (keys, values: two tables) or rows (a Rows). */
static int do_query(lua_State *L, const tx_kind *k, int as_rows)
{
    ltx *t = k->check(L);
    bk_query q;
    bk_slice to;
    check_query(L, as_rows ? "rows" : "range", &q, &to);
    /* Each read is made again while a __gc read into the scratch before all
     * was made of it. */
    if (as_rows && !lua_isnoneornil(L, 6)) {
        bl_check_ud(L, 6, T_ROWS);
        while (!bl_refill_rows(L, 6, read_scratch(L, k, t, &q)))
            ;
        lua_settop(L, 6);
        return 1;
    }
    if (as_rows) {
        while (!bl_push_rows(L, read_scratch(L, k, t, &q)))
            ;
        return 1;
    }
    while (!push_results(L, read_scratch(L, k, t, &q), q.to ? 0 : 3))
        ;
    return 2;
}

static int do_get(lua_State *L, const tx_kind *k)
{
    ltx *t = k->check(L);
    bk_query q = { bl_check_str(L, 2, "get"), bl_check_str(L, 3, "get"), NULL, 0, 0, 0 };
    bl_push_first_value(L, read_scratch(L, k, t, &q));
    return 1;
}

static int do_buckets(lua_State *L, const tx_kind *k)
{
    ltx *t = k->check(L);
    push_results(L, read_scratch(L, k, t, NULL), 0);
    lua_pop(L, 1);   /* the names only */
    return 1;
}

/* ---- pairs: a C closure, as string.gmatch. No cursor lives between
 * steps (a commit may grow the map meanwhile): it reads a chunk of rows
 * at a time, each after the last key of the one before. ---- */

#define PAIRS_FIRST 32     /* rows in the first chunk: a loop may break early */
#define PAIRS_MAX 1024     /* the chunks double up to this */

/* The iterator's upvalues follow a method's (its reads use the scratch). */
enum { IT_TX = UP_SHARED + 1, IT_BUCKET, IT_TO, IT_ROWS, IT_POS, IT_LIMIT, IT_KIND, IT_COUNT = IT_KIND };

static bk_result *read_chunk(lua_State *L, const tx_kind *k, ltx *t, bk_slice bucket,
                             bk_slice from, int after, const bk_slice *to, int64_t limit)
{
    bk_query q = { bucket, from, to, 1, after, limit };
    return read_scratch(L, k, t, &q);
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
        /* The read is after the chunk's last key, which the refill replaces
         * (only once it succeeds: as do_query, read again until then). */
        while (!bl_refill_rows(L, lua_upvalueindex(IT_ROWS),
                               read_chunk(L, k, t, bucket, bl_rows_part(rows, 2 * rows->n - 2), 1, top, limit)))
            ;
        lua_pushinteger(L, limit);
        lua_replace(L, lua_upvalueindex(IT_LIMIT));
        pos = 0;
        if (rows->n == 0)
            return pairs_end(L);
    }
    bl_push_part(L, rows, 2 * pos);
    bl_push_part(L, rows, 2 * pos + 1);
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
    bk_slice bucket = bl_check_str(L, 2, "pairs"), from = { "", 0 }, to;
    if (!lua_isnoneornil(L, 3))
        from = bl_check_str(L, 3, "pairs");
    int has_to = !lua_isnoneornil(L, 4);
    if (has_to)
        to = bl_check_str(L, 4, "pairs");
    for (int i = 1; i <= UP_COUNT; i++)
        lua_pushvalue(L, lua_upvalueindex(i));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    if (has_to)
        lua_pushvalue(L, 4);
    else
        lua_pushnil(L);
    while (!bl_push_rows(L, read_chunk(L, k, t, bucket, from, 0, has_to ? &to : NULL, PAIRS_FIRST)))
        ;
    lua_pushinteger(L, 0);
    lua_pushinteger(L, PAIRS_FIRST);
    lua_pushinteger(L, kind);
    lua_pushcclosure(L, pairs_step, IT_COUNT);
    return 1;
}

/* The read methods of each tx type. */
#define TX_READS(prefix, kind)                                                      \
    static int prefix##_range(lua_State *L) { return do_query(L, &KINDS[kind], 0); } \
    static int prefix##_rows(lua_State *L) { return do_query(L, &KINDS[kind], 1); }  \
    static int prefix##_get(lua_State *L) { return do_get(L, &KINDS[kind]); }       \
    static int prefix##_buckets(lua_State *L) { return do_buckets(L, &KINDS[kind]); } \
    static int prefix##_pairs(lua_State *L) { return do_pairs(L, kind); }
TX_READS(l_batch, K_BATCH)
TX_READS(l_read, K_READ)
TX_READS(l_crt, K_CRT)

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
        bl_deliver_logs(L, -1);
    lua_pop(L, 1);
    return rc ? bl_raise(L, &err) : 0;
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
        return bl_raise(L, &err);
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

/* <close>: leaving the scope by an error rolls the section back, leaving
 * it normally (coroutine.close too) unlocks; a section already ended, or
 * another coroutine's, is left alone. */
static int l_batch_close(lua_State *L)
{
    ltx *t = bl_check_ud(L, 1, T_BATCH);
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
        a[i] = bl_check_str(L, i + 2, fname);
    int rc = op1 ? op1(t->be, a[0], &err) : op2 ? op2(t->be, a[0], a[1], &err)
                                                : op3(t->be, a[0], a[1], a[2], &err);
    if (rc)
        return bl_raise(L, &err);
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
        return bl_raise(L, &err);
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

/* __gc of the BatchTx and the ReadTx (a ConcurrentReadTx's group has
 * one, crt.c): each checks its own (a metamethod can be called by hand,
 * with anything). */
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
    return tx_free(bl_check_ud(L, 1, T_BATCH));
}

static int l_read_gc(lua_State *L)
{
    return tx_free(bl_check_ud(L, 1, T_READ));
}

static int tx_tostring(lua_State *L, int type)
{
    ltx *t = bl_check_ud(L, 1, type);
    if (!t->be || bk_is_closed(t->be))
        lua_pushfstring(L, "%s (closed)", TYPES[type]);
    else
        lua_pushfstring(L, "%s (%p)", TYPES[type], (void *)t);
    return 1;
}

static int l_batch_tostring(lua_State *L)
{
    return tx_tostring(L, T_BATCH);
}

static int l_read_rlock(lua_State *L)
{
    ltx *t = check_read(L);
    bk_error err;
    if (!t->view && bk_view_open(t->be, &t->view, &err))
        return bl_raise(L, &err);
    t->rlocks++;
    lua_settop(L, 1);
    return 1;
}

static int l_read_runlock(lua_State *L)
{
    ltx *t = bl_check_ud(L, 1, T_READ);
    if (t->rlocks == 0)
        return bl_fail(L, "read tx is not locked (call rlock() first)");
    if (--t->rlocks == 0) {
        bk_view_close(t->view);
        t->view = NULL;
    }
    return 0;
}

static int l_read_tostring(lua_State *L)
{
    return tx_tostring(L, T_READ);
}

/* rlock, lock, unlock: nothing to do, but not on a view that is gone. */
static int l_crt_noop(lua_State *L)
{
    crt_ready(L, check_crt(L));
    lua_settop(L, 1);
    return 1;
}

static int l_crt_close(lua_State *L)
{
    bl_crt_close(bl_check_ud(L, 1, T_CRT));
    return 0;
}

static int l_crt_tostring(lua_State *L)
{
    ltx *t = bl_check_ud(L, 1, T_CRT);
    bk_error err;
    return bl_push_state(L, T_CRT, t, bl_crt_view(t) ? bk_view_check(t->view, &err) : BK_ECLOSED);
}

void bl_open_tx(lua_State *L)
{
    static const luaL_Reg batch_m[] = {
        { "lock", l_batch_lock }, { "unlock", l_batch_unlock },
        { "rollback", l_batch_rollback },
        { "create_bucket", l_create_bucket }, { "delete_bucket", l_delete_bucket },
        { "put", l_put }, { "seq_put", l_seq_put }, { "delete", l_delete },
        { "range", l_batch_range }, { "rows", l_batch_rows }, { "get", l_batch_get },
        { "pairs", l_batch_pairs }, { "buckets", l_batch_buckets }, { "commit", l_commit },
        { "commit_and_stop", l_commit_and_stop }, { "pending", l_pending },
        { NULL, NULL } };
    static const luaL_Reg batch_meta[] = {
        { "__gc", l_batch_gc }, { "__close", l_batch_close },
        { "__tostring", l_batch_tostring }, { NULL, NULL } };
    static const luaL_Reg read_m[] = {
        { "rlock", l_read_rlock }, { "runlock", l_read_runlock },
        { "lock", l_read_rlock }, { "unlock", l_read_runlock },
        { "range", l_read_range }, { "rows", l_read_rows }, { "get", l_read_get },
        { "pairs", l_read_pairs }, { "buckets", l_read_buckets }, { NULL, NULL } };
    static const luaL_Reg read_meta[] = {
        { "__gc", l_read_gc }, { "__tostring", l_read_tostring }, { NULL, NULL } };
    static const luaL_Reg crt_m[] = {
        { "rlock", l_crt_noop }, { "lock", l_crt_noop }, { "unlock", l_crt_noop },
        { "runlock", l_crt_close }, { "close", l_crt_close },
        { "range", l_crt_range }, { "rows", l_crt_rows }, { "get", l_crt_get },
        { "pairs", l_crt_pairs }, { "buckets", l_crt_buckets }, { NULL, NULL } };
    static const luaL_Reg crt_meta[] = {
        { "__close", l_crt_close },   /* no __gc: crt.c */
        { "__tostring", l_crt_tostring }, { NULL, NULL } };
    bl_new_type(L, T_BATCH, batch_m, batch_meta);
    bl_new_type(L, T_READ, read_m, read_meta);
    bl_new_type(L, T_CRT, crt_m, crt_meta);
}
