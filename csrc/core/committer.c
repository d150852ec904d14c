/* committer.c: the background committer. Writers never wait for an
 * fsync: at unlock a full batch (memtable) is queued (batch.c) and a new one
 * started; the committer thread begins an LMDB write txn, applies the
 * queued batches in key order, commits it, opens a read txn on the result
 * (a new gen) and installs a version without them. On request it keeps the
 * batches it committed (the commit log), for a defrag to apply them again
 * to its copy. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- applying one batch ---- */

enum { TOUCH_OPENED = 1, TOUCH_DROPPED = 2 };

static int key_after(const MDB_val *k, const char *last, size_t lastlen)
{
    return mt_keycmp(k->mv_data, k->mv_size, last, lastlen) > 0;
}

/* Applies one bucket's entries starting at *np; returns the LMDB code. */
static int apply_bucket(bk_backend *be, bk_env *env, MDB_txn *txn, mt_node **np,
                        uint8_t *touched)
{
    mt_node *n = *np;
    uint32_t id = n->bucket;
    bk_bucket *b = be->buckets[id];
    MDB_dbi *dbi = &env->dbis[id];
    int last_event = -1, rc = 0;
    uint64_t floor = 0;
    for (; n && n->bucket == id && n->klen == 0; n = mt_next(n)) {
        if (last_event < 0)
            last_event = n->type;
        if (n->type == MT_DROP && !floor)
            floor = n->seq;   /* newest first: the last drop of the batch */
    }
    if (!*dbi) {
        rc = mdb_dbi_open(txn, b->dbname, 0, dbi);
        if (rc && rc != MDB_NOTFOUND)
            goto out;
        if (!rc)
            touched[id] |= TOUCH_OPENED;
        else
            *dbi = 0;
        rc = 0;
    }
    if (floor && *dbi) {
        if ((rc = mdb_drop(txn, *dbi, 1)))
            goto out;
        *dbi = 0;
        touched[id] |= TOUCH_DROPPED;
    }
    if (last_event == MT_CREATE && !*dbi) {
        if ((rc = mdb_dbi_open(txn, b->dbname, MDB_CREATE, dbi)))
            goto out;
        touched[id] |= TOUCH_OPENED;
    }
    if (!n || n->bucket != id)
        goto out;
    if (!*dbi) {   /* every key write here predates a drop */
        while (n && n->bucket == id)
            n = mt_next(n);
        goto out;
    }
    MDB_cursor *c;
    MDB_val k, v;
    char last[512];
    size_t lastlen = 0;
    int empty, append = 0;
    if ((rc = mdb_cursor_open(txn, *dbi, &c)))
        goto out;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc && rc != MDB_NOTFOUND) {
        mdb_cursor_close(c);
        goto out;
    }
    empty = rc == MDB_NOTFOUND;
    if (!empty) {
        lastlen = k.mv_size;
        memcpy(last, k.mv_data, lastlen);
    }
    rc = 0;
    while (n && n->bucket == id) {
        mt_node *newest = n;
        do
            n = mt_next(n);
        while (n && n->bucket == id &&
               !mt_keycmp(mt_key(n), n->klen, mt_key(newest), newest->klen));
        if (newest->seq < floor)
            continue;
        mt_pool_top_up(&be->pool);   /* for the writer, while it goes on */
        k.mv_data = BK_UNCONST(mt_key(newest));
        k.mv_size = newest->klen;
        if (newest->type == MT_PUT) {
            /* Sorted batch: once past the last key, append (fills pages). */
            if (!append && (empty || key_after(&k, last, lastlen)))
                append = 1;
            v.mv_data = BK_UNCONST(mt_value(newest));
            v.mv_size = newest->vlen;
            rc = mdb_cursor_put(c, &k, &v, append ? MDB_APPEND : 0);
        } else if (!append) {
            rc = mdb_cursor_get(c, &k, &v, MDB_SET);
            rc = rc == MDB_NOTFOUND ? 0 : rc ? rc : mdb_cursor_del(c, 0);
        }
        if (rc)
            break;
    }
    mdb_cursor_close(c);
out:
    *np = n;
    return rc;
}

/* A group is the nm oldest queued batches, from `first` on by qnext. The
 * committer follows the links inside its group only: the writer may be
 * linking a new batch behind the last one. */

/* The group's last batch, and its writes in *writes. */
static memtable *group_last(memtable *m, int nm, uint64_t *writes)
{
    *writes = m->writes;
    for (int i = 1; i < nm; i++) {
        m = m->qnext;
        *writes += m->writes;
    }
    return m;
}

int bk_apply_batches(bk_backend *be, bk_env *env, memtable *const *mts, int nm)
{
    uint8_t touched[BK_MAX_BUCKETS + 1] = { 0 };
    MDB_txn *txn;
    int rc = mdb_txn_begin(env->mdb, NULL, 0, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < nm && !rc; i++)
        for (mt_node *n = mt_first(mts[i]); n && !rc;)
            rc = apply_bucket(be, env, txn, &n, touched);
    if (rc)
        mdb_txn_abort(txn);
    else if (!(rc = mdb_txn_commit(txn)))   /* a failed commit frees the txn */
        return 0;
    /* Handles opened or dropped in the failed txn are closed now (buckets
     * the writer registers meanwhile were not touched). */
    for (uint32_t id = 1, n = __atomic_load_n(&be->nbuckets, __ATOMIC_ACQUIRE); id <= n; id++)
        if (touched[id])
            env->dbis[id] = 0;
    return rc;
}

/* ---- the commit log ---- */

void bk_commit_log_start(bk_backend *be)
{
    be->logging = 1;
    be->log_failed = 0;
}

/* The committed group, kept (txn_mu held): no memory marks the log failed. */
static void log_group(bk_backend *be, memtable *const *mts, int nm)
{
    if (!be->logging || be->log_failed)
        return;
    if (be->nlog + nm > be->log_cap) {
        int cap = (be->nlog + nm) * 2;
        memtable **grown = realloc(be->log, (size_t)cap * sizeof *grown);
        if (!grown) {
            be->log_failed = 1;
            return;
        }
        be->log = grown;
        be->log_cap = cap;
    }
    for (int i = 0; i < nm; i++) {
        mt_ref(mts[i]);
        be->log[be->nlog++] = mts[i];
    }
}

int bk_commit_log_take(bk_backend *be, memtable ***mts, int *n)
{
    *mts = be->log;
    *n = be->nlog;
    be->log = NULL;
    be->nlog = be->log_cap = 0;
    return be->log_failed ? -1 : 0;
}

void bk_commit_log_stop(bk_backend *be)
{
    memtable **mts;
    int n;
    bk_commit_log_take(be, &mts, &n);
    bk_batches_release(mts, n);
    be->logging = be->log_failed = 0;
}

void bk_batches_release(memtable **mts, int n)
{
    for (int i = 0; i < n; i++)
        mt_unref(mts[i]);
    free(mts);
}

static void count_commit(bk_backend *be, double dt)
{
    __atomic_add_fetch(&be->commits, 1, __ATOMIC_RELAXED);
    __atomic_store(&be->last_commit_s, &dt, __ATOMIC_RELAXED);
    double total;
    __atomic_load(&be->total_commit_s, &total, __ATOMIC_RELAXED);
    total += dt;   /* only the committer writes it */
    __atomic_store(&be->total_commit_s, &total, __ATOMIC_RELAXED);
    bk_hist_observe(be, &be->commit_hist, dt);
}

/* Commits a group of *nm batches as one LMDB write txn. If LMDB finds
 * that too much for one txn (MDB_TXN_FULL: too many dirty pages), its
 * older half, and so on: *nm says how many went in. */
static int commit_batches(bk_backend *be, memtable *first, int *nm, bk_error *err)
{
    memtable **mts = malloc((size_t)*nm * sizeof *mts);
    if (!mts)
        return bk_fail(err, BK_EIO, "out of memory");
    mts[0] = first;
    for (int i = 1; i < *nm; i++)
        mts[i] = mts[i - 1]->qnext;
    pthread_mutex_lock(&be->txn_mu);
    double t0 = bk_now();
    int rc = 0;
    uint64_t live;
    memtable *last = group_last(first, *nm, &live);
    /* Batches of rolled-back writes only: no LMDB txn, no commit; a new
     * version still lets their memory go. */
    for (int grows = 0; live;) {
        rc = bk_apply_batches(be, be->env, mts, *nm);
        if (rc == MDB_TXN_FULL && *nm > 1) {
            bk_log(be, "info", "%d batches are too much for one LMDB transaction: "
                   "committing %d first", *nm, *nm / 2);
            *nm /= 2;
            last = group_last(first, *nm, &live);
            rc = 0;
        } else if (rc != MDB_MAP_FULL || grows++ == 40) {
            break;
        } else if ((rc = bk_map_grow(be, err))) {
            goto done;
        }
    }
    if (rc) {
        rc = bk_write_fail(be, err, rc, "commit");
        bk_env_check(be);
        goto done;
    }
    if (live)
        count_commit(be, bk_now() - t0);
    log_group(be, mts, *nm);
    gen *g;
    bk_error gerr;
    if (bk_gen_open(be, last->id, &g, &gerr) == BK_OK) {
        bk_sizes_update(be, g);
        if (bk_version_update(be, g, NULL))
            bk_log(be, "warn", "no memory for a new version after commit");
        bk_gen_unref(g);
        /* Grow ahead, at a commit boundary, before writes hit the end; once
         * g is installed, as a failed remap reopens (bk_env_reopen). */
        if (__atomic_load_n(&be->size, __ATOMIC_RELAXED) >
            __atomic_load_n(&be->map_size, __ATOMIC_RELAXED) / 4 * 3)
            bk_map_grow(be, &gerr);
    } else {
        /* The batch stays in the version: readers still see it there. */
        bk_log(be, "warn", "no read txn after commit: %s", gerr.msg);
    }
done:
    pthread_mutex_unlock(&be->txn_mu);
    free(mts);
    return rc;
}

/* ---- the committer thread ---- */

/* The oldest nm batches are committed: off the queue (cmu held), still
 * linked to each other for release_group. */
static void dequeue(bk_backend *be, int nm)
{
    for (int i = 0; i < nm; i++) {
        memtable *m = be->qhead;
        be->qhead = m->qnext;
        __atomic_sub_fetch(&be->queued_writes, m->writes, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&be->queued_bytes, m->arena_bytes, __ATOMIC_RELAXED);
        be->committed_id = m->id;
    }
    if (!be->qhead)
        be->qtail = NULL;
    be->nqueue -= nm;
}

/* The queue's references to a dequeued group, dropped without cmu: the
 * last one frees a batch's memory (munmaps), and writers queue under cmu. */
static void release_group(memtable *m, int nm)
{
    for (int i = 0; i < nm; i++) {
        memtable *next = m->qnext;   /* no longer the tail: no writer links it */
        mt_unref(m);
        m = next;
    }
}

/* Ask for the active batch to be queued: at once if nobody holds the batch
 * lock, else at the holder's unlock (the committer never waits on writers). */
static void request_rotation(bk_backend *be)
{
    pthread_mutex_lock(&be->lock_mu);
    if (be->locked) {
        __atomic_store_n(&be->rotate_requested, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&be->lock_mu);
        return;
    }
    bk_lock_take(be);
    pthread_mutex_unlock(&be->lock_mu);
    bk_error err;
    if (bk_rotate(be, &err))
        bk_log(be, "error", "queueing a batch: %s", err.msg);
    pthread_mutex_lock(&be->lock_mu);
    bk_lock_drop(be);
    pthread_cond_signal(&be->lock_cv);
    pthread_mutex_unlock(&be->lock_mu);
}

static void *committer_main(void *arg)
{
    bk_backend *be = arg;
    double interval = be->cfg.batch_interval < 0.001 ? 0.001 : be->cfg.batch_interval;
    double next_tick = bk_now() + interval, retry_at = 0;
    int tick_due = 0;
    pthread_mutex_lock(&be->cmu);
    for (;;) {
        double now = bk_now();
        if (be->stop == 2)
            break;
        if (be->nqueue > 0 && (now >= retry_at || be->kick)) {
            /* Behind? The batches queued share one txn, one fsync, up to a
             * BK_BUFFER_SHARE of max_buffered_bytes: the per-commit costs
             * (fsync, meta page, the trees' upper pages) are long paid off
             * by then, and a writer held at the bound is let go after one
             * such commit rather than after the whole buffer. */
            uint64_t cap = be->cfg.max_buffered_bytes / BK_BUFFER_SHARE, bytes = 0;
            memtable *first = be->qhead;
            int nm = 0;
            for (memtable *m = first;
                 m && (!nm || (bytes < cap && m->arena_bytes <= cap - bytes));
                 m = m->qnext, nm++)
                bytes += m->arena_bytes;
            be->kick = 0;
            uint64_t attempt = ++be->attempts;
            pthread_mutex_unlock(&be->cmu);
            bk_error err;
            int rc = commit_batches(be, first, &nm, &err);
            pthread_mutex_lock(&be->cmu);
            if (rc == BK_OK) {
                dequeue(be, nm);
                retry_at = 0;
            } else {
                be->failures++;
                be->failed_attempt = attempt;
                be->last_err = err;
                retry_at = bk_now() + interval;
                bk_log(be, "error", "commit failed, will retry: %s", err.msg);
            }
            pthread_cond_broadcast(&be->done_cv);
            if (rc == BK_OK) {
                pthread_mutex_unlock(&be->cmu);
                release_group(first, nm);
                pthread_mutex_lock(&be->cmu);
            }
            continue;
        }
        if (be->stop && be->nqueue == 0)
            break;
        if (now >= next_tick) {
            next_tick = now + interval;
            tick_due = 1;
        }
        /* A tick while batches wait is held until the queue drains: more
         * small commits behind a busy committer would only add fsyncs and
         * copied pages, and make nothing durable sooner. */
        if (tick_due && be->nqueue == 0) {
            tick_due = 0;
            if (__atomic_load_n(&be->active_writes, __ATOMIC_ACQUIRE) > 0) {
                pthread_mutex_unlock(&be->cmu);
                request_rotation(be);
                pthread_mutex_lock(&be->cmu);
                continue;
            }
        }
        double wake = next_tick;
        if (be->nqueue > 0 && retry_at < wake)
            wake = retry_at;
        struct timespec ts = bk_abs_time(wake);
        pthread_cond_timedwait(&be->ccv, &be->cmu, &ts);
    }
    be->committer_running = 0;
    pthread_cond_broadcast(&be->done_cv);
    pthread_mutex_unlock(&be->cmu);
    return NULL;
}

int bk_committer_start(bk_backend *be, bk_error *err)
{
    be->committer_running = 1;
    int rc = bk_thread_start(&be->committer, "bk-committer", committer_main, be);
    if (rc) {
        be->committer_running = 0;
        return bk_fail(err, BK_EIO, "starting the committer: %s", strerror(rc));
    }
    return BK_OK;
}

void bk_committer_stop(bk_backend *be, int drop)
{
    pthread_mutex_lock(&be->cmu);
    be->stop = drop ? 2 : 1;
    pthread_cond_signal(&be->ccv);
    pthread_mutex_unlock(&be->cmu);
    /* Even if it ended by itself (bk_env_reopen failed): bk_close calls this once. */
    pthread_join(be->committer, NULL);
}
