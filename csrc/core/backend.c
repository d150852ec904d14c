/* backend.c: a backend's life: its configuration, opening (files, LMDB
 * environment, committer) and closing (the last writes committed, children
 * invalidated, everything released), in that order. */
#include "internal.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void bk_config_default(bk_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch_interval = 0.1;
    cfg->batch_limit = 10000;
    cfg->mmap_size = (uint64_t)10 << 30;   /* etcd's initial mmap size */
    cfg->max_buffered_bytes = (uint64_t)256 << 20;
    cfg->max_readers = 126;
}

static void init_sync(bk_backend *be)
{
    pthread_mutex_init(&be->hist_mu, NULL);
    bk_hist_init(&be->commit_hist, 0.001, 14);
    bk_hist_init(&be->defrag_hist, 0.1, 13);
    bk_hist_init(&be->snapshot_hist, 0.01, 17);
    pthread_mutex_init(&be->reg_mu, NULL);
    pthread_mutex_init(&be->lock_mu, NULL);
    pthread_cond_init(&be->lock_cv, NULL);
    pthread_mutex_init(&be->ver_mu, NULL);
    pthread_mutex_init(&be->cmu, NULL);
    pthread_cond_init(&be->ccv, NULL);
    pthread_cond_init(&be->done_cv, NULL);
    pthread_mutex_init(&be->txn_mu, NULL);
    /* Writers first: readers overlap constantly, and a remap or a defrag
     * must not starve behind them. (No path takes it twice for reading.) */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&be->maplock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&be->views_mu, NULL);
    pthread_mutex_init(&be->log_mu, NULL);
    pthread_mutex_init(&be->defrag_mu, NULL);
    mt_pool_init(&be->pool);
}

static void destroy(bk_backend *be)
{
    for (uint32_t id = 1; id <= be->nbuckets; id++) {
        free(be->buckets[id]->name);
        free(be->buckets[id]->dbname);
        free(be->buckets[id]);
    }
    for (log_node *n = be->log_head, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    for (bk_view *v = be->view_pool, *next; v; v = next) {
        next = (bk_view *)v->link.next;
        free(v);
    }
    free(be->undo);
    pthread_mutex_destroy(&be->hist_mu);
    pthread_mutex_destroy(&be->reg_mu);
    pthread_mutex_destroy(&be->lock_mu);
    pthread_cond_destroy(&be->lock_cv);
    pthread_mutex_destroy(&be->ver_mu);
    pthread_mutex_destroy(&be->cmu);
    pthread_cond_destroy(&be->ccv);
    pthread_cond_destroy(&be->done_cv);
    pthread_mutex_destroy(&be->txn_mu);
    pthread_rwlock_destroy(&be->maplock);
    pthread_mutex_destroy(&be->views_mu);
    pthread_mutex_destroy(&be->log_mu);
    pthread_mutex_destroy(&be->defrag_mu);
    mt_pool_destroy(&be->pool);   /* the last view has let its batches go */
    free(be->path);
    free(be->lockpath);
    free(be);
}

static int validate(const bk_config *cfg, bk_error *err)
{
    if (!cfg->path || !*cfg->path)
        return bk_fail(err, BK_EARG, "config.path must be a non-empty string");
    if (!(cfg->batch_interval > 0) || cfg->batch_interval > 86400.0 * 365)
        return bk_fail(err, BK_EARG, "config.batch_interval must be a positive number of seconds");
    if (cfg->batch_limit < 1)
        return bk_fail(err, BK_EARG, "config.batch_limit must be at least 1");
    if (cfg->mmap_size < 4096 || cfg->mmap_size > ((uint64_t)1 << 46))
        return bk_fail(err, BK_EARG, "config.mmap_size must be between 4096 and 2^46 bytes");
    if (cfg->max_readers < 1 || cfg->max_readers > 100000)
        return bk_fail(err, BK_EARG, "config.max_readers must be between 1 and 100000");
    /* Below a few arena blocks (256 KiB each) every section would wait. */
    if (cfg->max_buffered_bytes < ((uint64_t)1 << 20) ||
        cfg->max_buffered_bytes > ((uint64_t)1 << 46))
        return bk_fail(err, BK_EARG,
                       "config.max_buffered_bytes must be between 2^20 and 2^46 bytes");
    return BK_OK;
}

int bk_open(const bk_config *cfg, bk_backend **out, bk_error *err)
{
    int rc = validate(cfg, err);
    if (rc)
        return rc;
    bk_backend *be = calloc(1, sizeof *be);
    if (!be)
        return bk_fail(err, BK_EIO, "out of memory");
    init_sync(be);
    if ((rc = bk_process_claim(&be->process, err))) {
        destroy(be);
        return rc;
    }
    be->refs = 1;
    be->cfg = *cfg;
    be->env_flags = MDB_NOSUBDIR | MDB_NOTLS |
                    (cfg->no_fsync ? MDB_NOSYNC : 0) | (cfg->readonly ? MDB_RDONLY : 0);
    if ((rc = bk_files_open(be, err))) {
        destroy(be);
        return rc;
    }
    be->cfg.path = be->path;
    be->active = mt_new(++be->next_mt_id, &be->pool);
    if (!be->active) {
        rc = bk_fail(err, BK_EIO, "out of memory");
        goto fail;
    }
    if ((rc = bk_env_open(be, err)))
        goto fail;
    if (!cfg->readonly && (rc = bk_committer_start(be, err))) {
        bk_env_close(be);
        goto fail;
    }
    *out = be;
    return BK_OK;
fail:
    mt_unref(be->active);
    bk_files_close(be);
    destroy(be);
    return rc;
}

static void remove_files(const bk_backend *be)
{
    unlink(be->path);
    unlink(be->lockpath);
    char *dcopy = strdup(be->path);
    if (dcopy)
        rmdir(dirname(dcopy));   /* only succeeds if it is now empty */
    free(dcopy);
}

int bk_close(bk_backend *be, int force, bk_error *err)
{
    int state = __atomic_load_n(&be->closed, __ATOMIC_ACQUIRE);
    if (state == 1 || bk_foreign(be))
        return BK_OK;
    int rc = BK_OK;
    bk_defrag_stop(be);   /* the old file stays the database, nothing lost */
    if (state == 2) {   /* failed: nothing can be committed; release it all */
        if (bk_pending(be))
            rc = bk_fail(err, BK_EIO, "backend failed (its database could not be "
                         "reopened): %llu writes lost", (unsigned long long)bk_pending(be));
    } else if (!be->cfg.readonly && !be->stopped) {
        if (bk_locked_by_me(be))
            bk_rollback(be, "closing the backend", err);   /* cannot fail here */
        /* Holding the lock until closed: a section another thread began
         * after the commit would be lost. */
        rc = bk_commit_holding(be, err);
        if (rc && !force)
            return rc;
        if (rc)
            bk_log(be, "error", "closing without the last writes (%llu lost): %s",
                   (unsigned long long)bk_pending(be), err->msg);
    }
    if (!be->cfg.readonly)
        bk_committer_stop(be, rc != BK_OK || state == 2);
    pthread_mutex_lock(&be->lock_mu);
    __atomic_store_n(&be->closed, 1, __ATOMIC_RELEASE);
    bk_lock_drop(be);
    pthread_cond_broadcast(&be->lock_cv);
    pthread_mutex_unlock(&be->lock_mu);

    pthread_rwlock_wrlock(&be->maplock);
    bk_invalidate_children(be, BK_ECLOSED);
    bk_env_close(be);
    pthread_rwlock_unlock(&be->maplock);
    for (memtable *m = be->qhead, *next; m; m = next) {
        next = m->qnext;
        mt_unref(m);
    }
    be->qhead = be->qtail = NULL;
    be->nqueue = 0;
    mt_unref(be->active);
    be->active = NULL;
    if (be->cfg.owns_dir)
        remove_files(be);
    bk_files_close(be);
    /* The files its defrags replaced, closed by now: their disk space is
     * free when close returns, unless another process holds them too. */
    bk_reap_wait();
    return rc;
}

void bk_free(bk_backend *be)
{
    if (!be || __atomic_sub_fetch(&be->refs, 1, __ATOMIC_ACQ_REL) != 0 || bk_foreign(be))
        return;
    bk_error err;
    bk_close(be, 1, &err);
    destroy(be);
}
