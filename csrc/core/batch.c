/* batch.c: the batch tx, the one writer of a backend. Writes go into the
 * active memtable under the batch lock, as one section: bk_unlock publishes
 * them to readers and queues the batch for the committer once batch_limit
 * writes pend; bk_rollback unlinks them again, unseen. A locked section is
 * never queued, so every commit holds whole sections. Queueing a batch
 * for the committer (bk_rotate) and waiting for it to be committed are
 * here too, the writer's side of the queue. Backpressure: bk_lock waits
 * while the uncommitted batches hold max_buffered_bytes; nothing else a
 * writer calls waits for the committer. */
#include "internal.h"

#include <errno.h>

#include <stdlib.h>
#include <string.h>

static int usable(bk_backend *be, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    if (be->cfg.readonly)
        return bk_fail(err, BK_EREADONLY, "backend is read-only");
    if (be->stopped)
        return bk_fail(err, BK_ESTOPPED, "batch tx is stopped (commit_and_stop)");
    return BK_OK;
}

/* Lock-free, and exact for the calling thread: only it can have stored
 * itself as owner, and owner is stored before locked (release/acquire). */
int bk_locked_by_me(const bk_backend *be)
{
    return __atomic_load_n(&be->locked, __ATOMIC_ACQUIRE) &&
           pthread_equal(__atomic_load_n(&be->owner, __ATOMIC_RELAXED), pthread_self());
}

void bk_lock_take(bk_backend *be)
{
    __atomic_store_n(&be->owner, pthread_self(), __ATOMIC_RELAXED);
    __atomic_store_n(&be->locked, 1, __ATOMIC_RELEASE);
}

void bk_lock_drop(bk_backend *be)
{
    __atomic_store_n(&be->locked, 0, __ATOMIC_RELEASE);
}

static int not_locked(bk_error *err)
{
    return bk_fail(err, BK_ENOTLOCKED, "batch tx is not locked");
}

int bk_tx_held(bk_backend *be, bk_error *err)
{
    int rc = usable(be, err);
    if (rc)
        return rc;
    return bk_locked_by_me(be) ? BK_OK : not_locked(err);
}

int bk_not_in_section(bk_backend *be, bk_error *err)
{
    if (bk_locked_by_me(be))
        return bk_fail(err, BK_ELOCKED, "the batch tx is locked by this thread: "
                       "unlock or rollback first (a locked section is never committed)");
    return BK_OK;
}

static int over_bound(bk_backend *be)
{
    return __atomic_load_n(&be->queued_bytes, __ATOMIC_RELAXED) +
               __atomic_load_n(&be->active_bytes, __ATOMIC_RELAXED) >=
           be->cfg.max_buffered_bytes;
}

/* Between sections, while the buffered batches hold max_buffered_bytes:
 * wait for the committer to free some. Only a commit frees memory, so an
 * empty queue (one big section over the bound) holds nobody, nor does a
 * committer that has stopped. A wait counts from its start, so that a
 * writer held by a failing disk shows in the stats. */
static void wait_for_room(bk_backend *be)
{
    if (!over_bound(be))
        return;
    double t0 = bk_now();
    int waited = 0;
    uint64_t pauses = __atomic_load_n(&be->defrag_pauses, __ATOMIC_ACQUIRE);
    int paused = __atomic_load_n(&be->defrag_pausing, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&be->cmu);
    while (over_bound(be) && be->nqueue > 0 && be->committer_running &&
           !bk_is_closed(be)) {
        if (!waited++)
            __atomic_add_fetch(&be->backpressure_waits, 1, __ATOMIC_RELAXED);
        pthread_cond_wait(&be->done_cv, &be->cmu);
    }
    pthread_mutex_unlock(&be->cmu);
    if (!waited)
        return;
    uint64_t ns = (uint64_t)((bk_now() - t0) * 1e9);
    __atomic_add_fetch(&be->backpressure_ns, ns, __ATOMIC_RELAXED);
    /* A wait that a defrag's swap overlapped is the defrag's. */
    if (paused || __atomic_load_n(&be->defrag_pauses, __ATOMIC_ACQUIRE) != pauses) {
        uint64_t max = __atomic_load_n(&be->defrag_pause_max_ns, __ATOMIC_RELAXED);
        while (ns > max && !__atomic_compare_exchange_n(&be->defrag_pause_max_ns, &max, ns, 1,
                                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
    }
}

/* Take the batch lock, waiting for its holder. */
static int take_lock(bk_backend *be, bk_error *err)
{
    int rc = usable(be, err);
    if (rc)
        return rc;
    if (bk_locked_by_me(be))
        return bk_fail(err, BK_ELOCKED, "batch tx is already locked by this thread");
    pthread_mutex_lock(&be->lock_mu);
    while (be->locked && !bk_is_closed(be))
        pthread_cond_wait(&be->lock_cv, &be->lock_mu);
    if (bk_is_closed(be)) {
        pthread_mutex_unlock(&be->lock_mu);
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    }
    bk_lock_take(be);
    pthread_mutex_unlock(&be->lock_mu);
    return BK_OK;
}

int bk_lock(bk_backend *be, bk_error *err)
{
    if (bk_foreign(be))   /* its mutexes may be held by threads it lacks */
        return bk_closed_fail(be, err);
    if (!bk_locked_by_me(be))
        wait_for_room(be);
    return take_lock(be, err);
}

/* The section ends: forget its writes (a big log is not kept around). */
static void release(bk_backend *be)
{
    be->nundo = 0;
    if (be->undo_cap > 4096) {
        free(be->undo);
        be->undo = NULL;
        be->undo_cap = 0;
    }
    pthread_mutex_lock(&be->lock_mu);
    bk_lock_drop(be);
    pthread_cond_signal(&be->lock_cv);
    pthread_mutex_unlock(&be->lock_mu);
}

/* Readers take (version, visible_seq) under ver_mu, so publish there too:
 * a reader then never pairs a sequence with the wrong memtables. */
static void publish(bk_backend *be)
{
    pthread_mutex_lock(&be->ver_mu);
    __atomic_store_n(&be->visible_seq, be->seq, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&be->ver_mu);
}

/* Rolled-back writes count too: their memory goes with the memtable, so
 * a loop of failing sections still ends in a rotation. So does the arena's
 * size: only a queued batch can be committed and its memory freed. */
static int rotation_due(bk_backend *be)
{
    const memtable *m = be->active;
    return __atomic_load_n(&be->active_writes, __ATOMIC_RELAXED) + m->dropped >=
               be->cfg.batch_limit ||
           m->dropped_bytes >= BK_DROPPED_MAX ||
           m->arena_bytes >= be->cfg.max_buffered_bytes / BK_BUFFER_SHARE ||
           __atomic_exchange_n(&be->rotate_requested, 0, __ATOMIC_ACQ_REL);
}

/* Ends the section: queues the batch when due (the writes stay buffered if
 * that fails), then releases the lock. */
static int end_section(bk_backend *be, bk_error *err)
{
    int rc = rotation_due(be) ? bk_rotate(be, err) : BK_OK;
    __atomic_store_n(&be->active_bytes, be->active->arena_bytes, __ATOMIC_RELAXED);
    release(be);
    return rc;
}

int bk_unlock(bk_backend *be, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    if (!bk_locked_by_me(be))
        return not_locked(err);
    if (__atomic_load_n(&be->visible_seq, __ATOMIC_RELAXED) != be->seq)
        publish(be);
    return end_section(be, err);
}

/* Newest first, so each bucket gets back the state before its first event
 * of the section. The writes were never published: no reader saw them. */
int bk_rollback(bk_backend *be, const char *why, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    if (!bk_locked_by_me(be))
        return not_locked(err);
    for (size_t i = be->nundo; i-- > 0;) {
        const bk_undo *u = &be->undo[i];
        if (u->node->type == MT_CREATE || u->node->type == MT_DROP)
            be->buckets[u->node->bucket]->writer_exists = u->existed;
        mt_unlink(be->active, u->node);
    }
    __atomic_sub_fetch(&be->active_writes, be->nundo, __ATOMIC_RELEASE);
    __atomic_add_fetch(&be->rollbacks, 1, __ATOMIC_RELAXED);
    if (why)
        bk_log(be, "warn", "%s: rolled back the batch tx's open section (%zu writes)",
               why, be->nundo);
    return end_section(be, err);
}

static int write_entry(bk_backend *be, bk_bucket *b, uint8_t type, bk_slice key,
                       bk_slice value, bk_error *err)
{
    if (be->nundo == be->undo_cap) {
        size_t cap = be->undo_cap ? 2 * be->undo_cap : 64;
        bk_undo *u = realloc(be->undo, cap * sizeof *u);
        if (!u)
            return bk_fail(err, BK_EIO, "out of memory");
        be->undo = u;
        be->undo_cap = cap;
    }
    mt_node *n = mt_insert(be->active, be->seq + 1, b->id, type, key.data, key.len,
                           value.data, value.len);
    if (!n)
        return bk_fail(err, BK_EIO, "out of memory");
    be->undo[be->nundo].node = n;
    be->undo[be->nundo++].existed = b->writer_exists;
    be->seq++;
    __atomic_add_fetch(&be->active_writes, 1, __ATOMIC_RELEASE);
    return BK_OK;
}

static int check_bucket_name(bk_backend *be, bk_slice name, bk_error *err)
{
    int rc = bk_check_key(be, "bucket name", name, err);
    size_t stored = bk_dbname_len(name.data, name.len);
    if (!rc && stored > be->maxkey)
        rc = bk_fail(err, BK_EARG, "bucket name is too long (%zu bytes, stored as %zu; "
                     "the limit is %zu bytes)", name.len, stored, be->maxkey);
    return rc;
}

static int bucket_event(bk_backend *be, bk_slice name, uint8_t type, bk_error *err)
{
    int rc = bk_tx_held(be, err);
    if (rc || (rc = check_bucket_name(be, name, err)))
        return rc;
    bk_bucket *b = bk_bucket_find(be, name.data, name.len);
    if (!b && !(b = bk_bucket_register(be, name.data, name.len, err)))
        return err->code;
    static const bk_slice none = { "", 0 };
    if ((rc = write_entry(be, b, type, none, none, err)))
        return rc;
    b->writer_exists = type == MT_CREATE;
    return BK_OK;
}

int bk_create_bucket(bk_backend *be, bk_slice name, bk_error *err)
{
    return bucket_event(be, name, MT_CREATE, err);
}

int bk_delete_bucket(bk_backend *be, bk_slice name, bk_error *err)
{
    return bucket_event(be, name, MT_DROP, err);
}

static int key_write(bk_backend *be, bk_slice bucket_name, bk_slice key,
                     bk_slice value, uint8_t type, bk_error *err)
{
    int rc = bk_tx_held(be, err);
    if (rc || (rc = bk_check_key(be, "key", key, err)))
        return rc;
    if (value.len > bk_max_value_size(be))
        return bk_fail(err, BK_EARG, "value is too long (%zu bytes; the limit is %zu, "
                       "the largest LMDB can write in one piece)", value.len,
                       bk_max_value_size(be));
    if ((rc = check_bucket_name(be, bucket_name, err)))
        return rc;   /* empty or too long: not "does not exist" */
    bk_bucket *b = bk_bucket_find(be, bucket_name.data, bucket_name.len);
    if (!b || !b->writer_exists) {
        char quoted[256];
        bk_quote(quoted, sizeof quoted, bucket_name);
        return bk_fail(err, BK_ENOBUCKET, "bucket '%s' does not exist", quoted);
    }
    return write_entry(be, b, type, key, value, err);
}

int bk_put(bk_backend *be, bk_slice bucket, bk_slice key, bk_slice value,
           bk_error *err)
{
    return key_write(be, bucket, key, value, MT_PUT, err);
}

int bk_delete(bk_backend *be, bk_slice bucket, bk_slice key, bk_error *err)
{
    static const bk_slice none = { "", 0 };
    return key_write(be, bucket, key, none, MT_DEL, err);
}

uint64_t bk_pending(bk_backend *be)
{
    return __atomic_load_n(&be->active_writes, __ATOMIC_RELAXED) +
           __atomic_load_n(&be->queued_writes, __ATOMIC_RELAXED);
}

size_t bk_max_value_size(const bk_backend *be)
{
    return BK_WRITE_MAX / be->psize * be->psize - BK_PAGE_HEADER;
}

/* Queue the active batch (batch lock held). Never waits: the queue has no
 * fixed size, writers wait for room in bk_lock. */
int bk_rotate(bk_backend *be, bk_error *err)
{
    memtable *old = be->active;
    if (old->writes == 0 && old->dropped == 0)
        return BK_OK;   /* a memtable of rolled-back writes goes too: its memory */
    memtable *fresh = mt_new(be->next_mt_id + 1, &be->pool);
    if (!fresh)
        return bk_fail(err, BK_EIO, "out of memory");
    /* maplock: the version replaced (maybe its gen's txn too) ends here,
     * never while bk_env_reopen closes the environment. Readers see fresh in
     * front of old from now on; the committer, which keeps every batch
     * newer than what it committed, cannot drop either. */
    pthread_rwlock_rdlock(&be->maplock);
    int vrc = bk_version_update(be, NULL, fresh);
    pthread_rwlock_unlock(&be->maplock);
    if (vrc) {
        mt_unref(fresh);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    be->next_mt_id++;
    be->active = fresh;
    __atomic_store_n(&be->active_bytes, fresh->arena_bytes, __ATOMIC_RELAXED);
    pthread_mutex_lock(&be->cmu);
    if (be->qtail)   /* be->active's reference moves to the queue */
        be->qtail->qnext = old;
    else
        be->qhead = old;
    be->qtail = old;
    be->nqueue++;
    __atomic_add_fetch(&be->queued_writes, old->writes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&be->queued_bytes, old->arena_bytes, __ATOMIC_RELAXED);
    pthread_cond_signal(&be->ccv);
    pthread_mutex_unlock(&be->cmu);
    /* After queueing, so that bk_pending never misses these writes. */
    __atomic_store_n(&be->active_writes, 0, __ATOMIC_RELEASE);
    return BK_OK;
}

/* What to wait for: every batch queued so far; and wake the committer. */
static void take_ticket(bk_backend *be, bk_commit_ticket *t)
{
    pthread_mutex_lock(&be->cmu);
    t->target = be->qtail ? be->qtail->id : be->committed_id;
    /* Only an attempt begun after this call answers it: one already under
     * way may fail on a disk that has had room since. */
    t->begun = be->attempts;
    be->kick = 1;
    pthread_cond_signal(&be->ccv);
    pthread_mutex_unlock(&be->cmu);
}

int bk_commit_wait_for(bk_backend *be, const bk_commit_ticket *t, double seconds, int *rc,
                       bk_error *err)
{
    struct timespec until = bk_abs_time(bk_now() + (seconds < 0 ? 0 : seconds));
    int ended = 1;
    *rc = BK_OK;
    if (bk_foreign(be)) {
        *rc = bk_closed_fail(be, err);
        return ended;
    }
    pthread_mutex_lock(&be->cmu);
    while (be->committed_id < t->target) {
        if (be->failed_attempt > t->begun) {
            *err = be->last_err;
            *rc = err->code;
            break;
        }
        if (!be->committer_running) {
            *rc = bk_fail(err, BK_ECLOSED, "backend is closed");
            break;
        }
        if (seconds < 0) {
            pthread_cond_wait(&be->done_cv, &be->cmu);
        } else if (pthread_cond_timedwait(&be->done_cv, &be->cmu, &until) == ETIMEDOUT) {
            ended = be->committed_id >= t->target;
            break;
        }
    }
    pthread_mutex_unlock(&be->cmu);
    return ended;
}

int bk_commit_holding(bk_backend *be, bk_error *err)
{
    int rc = take_lock(be, err);
    if (rc)
        return rc;
    if (!(rc = bk_rotate(be, err))) {
        bk_commit_ticket t;
        take_ticket(be, &t);
        bk_commit_wait_for(be, &t, -1, &rc, err);
    }
    if (rc)
        release(be);
    return rc;
}

int bk_commit(bk_backend *be, int stop, bk_error *err)
{
    int rc = usable(be, err);
    if (rc || (rc = bk_not_in_section(be, err)) || (rc = bk_commit_holding(be, err)))
        return rc;
    if (stop)
        be->stopped = 1;
    release(be);
    return BK_OK;
}

int bk_request_commit(bk_backend *be, bk_commit_ticket *t, bk_error *err)
{
    t->target = t->begun = 0;   /* nothing to wait for */
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    int rc = bk_not_in_section(be, err);
    if (rc || be->cfg.readonly || be->stopped)
        return rc;   /* read-only or stopped: nothing of ours can be pending */
    if ((rc = take_lock(be, err)))
        return rc;
    if (!(rc = bk_rotate(be, err)))
        take_ticket(be, t);
    release(be);
    return rc;
}

int bk_force_commit(bk_backend *be, bk_error *err)
{
    bk_commit_ticket t;
    int rc = bk_request_commit(be, &t, err);
    if (!rc)
        bk_commit_wait_for(be, &t, -1, &rc, err);
    return rc;
}
