/* stats.c: what a backend reports about itself: the counters and
 * histograms (bk_stats_get), LMDB's numbers per bucket, and a committed
 * value read straight from LMDB (for tests). */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bk_stats_get(bk_backend *be, bk_stats *st, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    memset(st, 0, sizeof *st);
    st->commits = __atomic_load_n(&be->commits, __ATOMIC_RELAXED);
    st->pending = bk_pending(be);
    pthread_rwlock_rdlock(&be->maplock);   /* the version's txn may end here */
    version *v = bk_version_get(be);
    for (int i = 0; v && i < v->nmt; i++) {
        st->buffered_writes += __atomic_load_n(&v->mts[i]->writes, __ATOMIC_RELAXED);
        st->buffered_bytes += __atomic_load_n(&v->mts[i]->arena_bytes, __ATOMIC_RELAXED);
    }
    bk_version_unref(v);
    pthread_rwlock_unlock(&be->maplock);
    pthread_mutex_lock(&be->cmu);
    st->queued_batches = (uint64_t)be->nqueue;
    st->commit_failures = be->failures;
    pthread_mutex_unlock(&be->cmu);
    st->map_size = __atomic_load_n(&be->map_size, __ATOMIC_RELAXED);
    st->page_size = be->psize;
    st->size = __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    st->size_in_use = __atomic_load_n(&be->size_in_use, __ATOMIC_RELAXED);
    st->open_read_tx_n = __atomic_load_n(&be->open_views, __ATOMIC_RELAXED);
    st->map_grows = __atomic_load_n(&be->map_grows, __ATOMIC_RELAXED);
    st->rollbacks = __atomic_load_n(&be->rollbacks, __ATOMIC_RELAXED);
    st->backpressure_waits = __atomic_load_n(&be->backpressure_waits, __ATOMIC_RELAXED);
    st->backpressure_seconds =
        (double)__atomic_load_n(&be->backpressure_ns, __ATOMIC_RELAXED) / 1e9;
    __atomic_load(&be->last_commit_s, &st->last_commit_seconds, __ATOMIC_RELAXED);
    __atomic_load(&be->total_commit_s, &st->total_commit_seconds, __ATOMIC_RELAXED);
    __atomic_load(&be->defrag_s, &st->defrag_seconds, __ATOMIC_RELAXED);
    __atomic_load(&be->snapshot_s, &st->snapshot_seconds, __ATOMIC_RELAXED);
    st->defrag_inflight = __atomic_load_n(&be->defrag_inflight, __ATOMIC_RELAXED);
    pthread_mutex_lock(&be->hist_mu);
    st->commit_hist = be->commit_hist;
    st->defrag_hist = be->defrag_hist;
    st->snapshot_hist = be->snapshot_hist;
    pthread_mutex_unlock(&be->hist_mu);
    return BK_OK;
}

typedef struct stats_job {
    bk_bucket_stat *out;
    size_t cap, n;
} stats_job;

static int bucket_stat_order(const void *a, const void *b)
{
    const bk_bucket_stat *x = a, *y = b;
    return mt_keycmp(x->name.data, x->name.len, y->name.data, y->name.len);
}

static int stats_visit(bk_backend *be, gen *g, void *ctx)
{
    stats_job *job = ctx;
    for (uint32_t id = 1; id < g->ndbis; id++) {
        MDB_stat st;
        if (!g->dbis[id])
            continue;
        if (job->n == job->cap)
            return ENOBUFS;
        int rc = mdb_stat(g->txn, g->dbis[id], &st);
        if (rc)
            return rc;
        bk_bucket *b = be->buckets[id];
        bk_bucket_stat *o = &job->out[job->n++];
        o->name.data = b->name;
        o->name.len = b->len;
        o->entries = st.ms_entries;
        o->depth = st.ms_depth;
        o->branch_pages = st.ms_branch_pages;
        o->leaf_pages = st.ms_leaf_pages;
        o->overflow_pages = st.ms_overflow_pages;
    }
    qsort(job->out, job->n, sizeof *job->out, bucket_stat_order);
    return 0;
}

int bk_bucket_stats(bk_backend *be, bk_bucket_stat *out, size_t cap, size_t *n,
                    bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    stats_job job = { out, cap, 0 };
    int rc = bk_visit_committed(be, stats_visit, &job, "bucket stats", err);
    *n = rc ? 0 : job.n;
    return rc;
}

int bk_committed_get(bk_backend *be, bk_slice bucket, bk_slice key,
                     bk_result *out, bk_error *err)
{
    MDB_txn *txn;
    bk_result_clear(out);
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    int rc = bk_check_key(be, "key", key, err);   /* as get() does, not MDB_BAD_VALSIZE */
    if (rc)
        return rc;
    pthread_mutex_lock(&be->txn_mu);   /* bucket handles stay put */
    pthread_rwlock_rdlock(&be->maplock);
    bk_bucket *b = bk_bucket_find(be, bucket.data, bucket.len);
    MDB_dbi dbi = b ? be->env->dbis[b->id] : 0;
    rc = dbi ? bk_read_txn_begin(be->env->mdb, &txn) : MDB_NOTFOUND;
    if (!rc) {
        MDB_val k = { key.len, BK_UNCONST(key.data) }, v;
        if ((rc = mdb_get(txn, dbi, &k, &v)) == 0 &&
            bk_result_append(out, k.mv_data, k.mv_size, v.mv_data, v.mv_size))
            rc = ENOMEM;
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&be->maplock);
    pthread_mutex_unlock(&be->txn_mu);
    if (rc && rc != MDB_NOTFOUND)
        return bk_mdb_fail(err, rc, "reading committed data");
    return BK_OK;
}
