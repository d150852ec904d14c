/* env.c: the LMDB environments of a backend: the current one, opened with
 * the buckets its file holds, reopened when LMDB gave up on it, its map
 * grown; read txns and the gens over them; following another process's
 * writer when read-only; the sizes the stats show. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* LMDB gives up on an environment whose meta page it failed to write (it
 * sets MDB_FATAL_ERROR: every txn then fails with MDB_PANIC), and one it
 * failed to map again in a resize (no map is left: the next txn would
 * crash). The file is intact, its meta pages still name the last commit,
 * so close the environment and open it again: views and snapshots pin
 * txns of the old one and are invalidated, and so is the copy a defrag
 * reads; the current version keeps its batches, over the reopened state.
 * The old environment closes now, whoever still refers to it (two
 * environments of one file in a process would share its fcntl locks). If
 * even that fails the backend has failed. Caller holds txn_mu and maplock
 * for writing, so no reader or rotation is inside a txn. */
int bk_env_reopen(bk_backend *be, const char *why, bk_error *err)
{
    bk_invalidate_children(be, BK_EINVALID);
    gen *live[] = { be->cur ? be->cur->g : NULL, be->defrag_src };
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] && live[i]->env == be->env && live[i]->txn) {
            mdb_txn_abort(live[i]->txn);
            live[i]->txn = NULL;   /* the gen goes with its holder */
        }
    mdb_env_close(be->env->mdb);
    be->env->mdb = NULL;
    bk_env_unref(be->env);
    be->env = NULL;
    int rc = bk_env_open(be, err);
    if (rc) {
        bk_env_close(be);
        bk_set_failed(be);
        pthread_mutex_lock(&be->cmu);
        be->stop = 2;   /* nothing can be committed any more */
        pthread_cond_signal(&be->ccv);
        pthread_mutex_unlock(&be->cmu);
        bk_log(be, "error", "reopening the database failed, backend closed, "
               "%llu writes lost: %s", (unsigned long long)bk_pending(be), err->msg);
        return rc;
    }
    bk_log(be, "warn", "database reopened (%s); open read txns and snapshots were "
           "invalidated", why);
    return BK_OK;
}

/* Resize the map with no cursor alive anywhere (readers hold maplock). */
static int map_resize(bk_backend *be, size_t size, bk_error *err)
{
    pthread_rwlock_wrlock(&be->maplock);
    int rc = mdb_env_set_mapsize(be->env->mdb, size);
    MDB_envinfo info;
    bk_error rerr;
    if (!rc)
        rc = mdb_env_info(be->env->mdb, &info);
    else   /* it unmaps first: a failed mmap leaves no map */
        bk_env_reopen(be, "growing the map failed", &rerr);
    pthread_rwlock_unlock(&be->maplock);
    if (rc)
        return bk_mdb_fail(err, rc, "resizing the map");
    __atomic_store_n(&be->map_size, (uint64_t)info.me_mapsize, __ATOMIC_RELAXED);
    return BK_OK;
}

int bk_map_grow(bk_backend *be, bk_error *err)
{
    size_t old = (size_t)__atomic_load_n(&be->map_size, __ATOMIC_RELAXED);
    int rc = map_resize(be, old * 2, err);
    if (rc)
        return rc;
    __atomic_add_fetch(&be->map_grows, 1, __ATOMIC_RELAXED);
    bk_log(be, "info", "map grown from %zu to %zu bytes", old, old * 2);
    return BK_OK;
}

/* After a failed commit: a failed meta-page write leaves LMDB's environment
 * fatal (mdb_env_write_meta), which the next txn tells: reopen it now. */
void bk_env_check(bk_backend *be)
{
    MDB_txn *txn;
    bk_error rerr;
    int rc = mdb_txn_begin(be->env->mdb, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        mdb_txn_abort(txn);
    if (rc != MDB_PANIC)
        return;
    pthread_rwlock_wrlock(&be->maplock);
    bk_env_reopen(be, "LMDB gave up on it after a failed commit", &rerr);
    pthread_rwlock_unlock(&be->maplock);
}

/* Begin a read txn. A process killed while reading (SIGKILL) leaves its
 * reader slots taken, and LMDB clears them only when asked: when the table
 * is full, clear the slots of dead processes (mdb_reader_check) and retry. */
int bk_read_txn_begin(MDB_env *env, MDB_txn **txn)
{
    int dead = 0, rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_READERS_FULL && mdb_reader_check(env, &dead) == 0 && dead > 0)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
    return rc;
}

/* Size and size in use of the state g sees: the page high-water mark, less
 * the pages listed in the free database. */
void bk_sizes_update(bk_backend *be, gen *g)
{
    MDB_envinfo info;
    MDB_cursor *c;
    MDB_val k, v;
    if (mdb_env_info(g->env->mdb, &info) || mdb_cursor_open(g->txn, 0, &c))
        return;
    uint64_t free_pages = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        size_t n;
        memcpy(&n, v.mv_data, sizeof n);
        free_pages += n;
    }
    mdb_cursor_close(c);
    uint64_t size = ((uint64_t)info.me_last_pgno + 1) * be->psize;
    __atomic_store_n(&be->size, size, __ATOMIC_RELAXED);
    __atomic_store_n(&be->size_in_use, size - free_pages * be->psize, __ATOMIC_RELAXED);
}

/* A gen over the newest committed state. Callers hold txn_mu (or are
 * alone, opening): the map is only resized under it. */
int bk_gen_open(bk_backend *be, uint64_t last_mt_id, gen **out, bk_error *err)
{
    MDB_txn *txn;
    int rc = bk_read_txn_begin(be->env->mdb, &txn);
    if (rc == MDB_MAP_RESIZED && !map_resize(be, 0, err))
        rc = bk_read_txn_begin(be->env->mdb, &txn);
    if (rc)
        return bk_mdb_fail(err, rc, "beginning a read transaction");
    return bk_gen_make(be, be->env, txn, last_mt_id, out, err);
}

typedef struct sync_job {
    bk_backend *be;
    MDB_txn *txn;
    bk_error *err;
} sync_job;

static int sync_bucket(void *ctx, bk_bucket *b, bk_slice name)
{
    sync_job *job = ctx;
    MDB_dbi *dbi;
    if (!b && !(b = bk_bucket_register(job->be, name.data, name.len, job->err)))
        return -1;
    dbi = &job->be->env->dbis[b->id];
    if (!*dbi && mdb_dbi_open(job->txn, b->dbname, 0, dbi))
        *dbi = 0;   /* a plain key in the main db: skip */
    b->writer_exists = *dbi != 0;
    return 0;
}

/* Register every bucket in the main database and open its handle, in a read
 * txn that is committed so the handles outlive it (LMDB's rule). */
static int buckets_sync(bk_backend *be, bk_error *err)
{
    sync_job job = { be, NULL, err };
    int rc = bk_read_txn_begin(be->env->mdb, &job.txn);
    if (rc)
        return bk_mdb_fail(err, rc, "reading bucket names");
    rc = bk_each_bucket(be, job.txn, sync_bucket, &job);
    if (rc == -1) {
        mdb_txn_abort(job.txn);
        return err->code;
    }
    if (rc) {
        mdb_txn_abort(job.txn);
        return bk_mdb_fail(err, rc, "reading bucket names");
    }
    if ((rc = mdb_txn_commit(job.txn)))
        return bk_mdb_fail(err, rc, "reading bucket names");
    return BK_OK;
}

int bk_env_open(bk_backend *be, bk_error *err)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc = bk_env_create(be, be->path, be->env_flags, be->cfg.mmap_size, &be->env, err);
    if (rc)
        return rc;
    int dead;
    if (!be->cfg.readonly)
        mdb_reader_check(be->env->mdb, &dead);
    /* A new file's meta pages are durable before its first commit writes
     * pages behind them (files.c is_unborn: what a power cut may leave). */
    if (!be->cfg.readonly && !be->cfg.no_fsync &&
        (rc = mdb_env_info(be->env->mdb, &info)) == 0 && info.me_last_txnid == 0)
        rc = mdb_env_sync(be->env->mdb, 1);
    if (rc) {
        bk_env_close(be);
        return bk_mdb_fail(err, rc, "syncing the new file's meta pages");
    }
    gen *g;
    if ((rc = mdb_env_info(be->env->mdb, &info)) || (rc = mdb_env_stat(be->env->mdb, &st))) {
        bk_env_close(be);
        return bk_mdb_fail(err, rc, "reading the environment");
    }
    be->psize = st.ms_psize;
    be->maxkey = (size_t)mdb_env_get_maxkeysize(be->env->mdb);
    __atomic_store_n(&be->map_size, (uint64_t)info.me_mapsize, __ATOMIC_RELAXED);
    if ((rc = buckets_sync(be, err)) || (rc = bk_gen_open(be, be->committed_id, &g, err))) {
        bk_env_close(be);
        return rc;
    }
    bk_sizes_update(be, g);
    /* Reopened by bk_env_reopen: the batches of the current version stay. */
    version *v = be->cur ? bk_version_make(g, be->cur, NULL) : bk_version_make(g, NULL, be->active);
    bk_gen_unref(g);
    if (!v) {
        bk_env_close(be);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    bk_version_install(be, v);
    return BK_OK;
}

void bk_env_close(bk_backend *be)
{
    bk_version_install(be, NULL);
    bk_env_unref(be->env);
    be->env = NULL;
}

/* The writer's defrag renamed a new file over ours: is the path another
 * file? One stat a read in read-only mode: ours' identity is the env's. */
static int file_replaced(bk_backend *be)
{
    struct stat now;
    return !stat(be->path, &now) && (be->env->ino != now.st_ino || be->env->dev != now.st_dev);
}

/* In read-only mode another process commits: move to its newest state. */
int bk_readonly_refresh(bk_backend *be, bk_error *err)
{
    MDB_envinfo info;
    int rc = BK_OK;
    if (bk_foreign(be))
        return bk_closed_fail(be, err);
    pthread_mutex_lock(&be->txn_mu);
    if (!be->env) {   /* a reopen failed: the backend is closed */
        pthread_mutex_unlock(&be->txn_mu);
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    }
    /* Checked before LMDB maps it, as at open; the old file stays mapped if
     * the new one is damaged. A file renamed over it again between the
     * check and the reopen is mapped unchecked: it is checked and reopened
     * in turn, and not read until it passes. */
    for (int tries = 0; !rc && (file_replaced(be) || !bk_files_checked(be, be->env->dev, be->env->ino));
         tries++) {
        if (tries == 3) {
            rc = bk_fail(err, BK_EIO, "%s: replaced again each time it was reopened", be->path);
            break;
        }
        if ((rc = bk_files_check_replaced(be, err)))
            break;
        pthread_rwlock_wrlock(&be->maplock);
        rc = bk_env_reopen(be, "the writer defragmented it", err);
        pthread_rwlock_unlock(&be->maplock);
    }
    version *v = rc ? NULL : bk_version_get(be);
    if (v && !mdb_env_info(be->env->mdb, &info) && (uint64_t)info.me_last_txnid != v->g->txnid) {
        gen *g;
        rc = buckets_sync(be, err);
        if (!rc)
            rc = bk_gen_open(be, 0, &g, err);
        if (!rc) {
            bk_sizes_update(be, g);
            if (bk_version_update(be, g, NULL))
                rc = bk_fail(err, BK_EIO, "out of memory");
            bk_gen_unref(g);
        }
    }
    bk_version_unref(v);
    pthread_mutex_unlock(&be->txn_mu);
    return rc;
}

/* The gen holding everything committed so far, for hash and snapshot. The
 * committer may have failed to open one (no reader slot): then try now, and
 * fail rather than answer from an older state. Caller holds txn_mu. */
int bk_fresh_gen(bk_backend *be, gen **out, bk_error *err)
{
    version *v = bk_version_get(be);
    if (!v)
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    uint64_t committed;
    pthread_mutex_lock(&be->cmu);
    committed = be->committed_id;
    pthread_mutex_unlock(&be->cmu);
    gen *g = v->g;
    int rc = BK_OK;
    if (be->cfg.readonly || g->last_mt_id >= committed) {
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
    } else if ((rc = bk_gen_open(be, committed, &g, err)) == BK_OK) {
        if (bk_version_update(be, g, NULL)) {
            bk_gen_unref(g);
            rc = bk_fail(err, BK_EIO, "out of memory");
        }
    }
    bk_version_unref(v);
    if (rc == BK_OK)
        *out = g;
    return rc;
}

void bk_lmdb_version(int *major, int *minor, int *patch)
{
    mdb_version(major, minor, patch);
}

size_t bk_lmdb_max_key_size(void)
{
    MDB_env *env;
    if (mdb_env_create(&env))
        return 0;
    size_t n = (size_t)mdb_env_get_maxkeysize(env);
    mdb_env_close(env);
    return n;
}
