/* defrag.c: rewrite the database compactly. Every bucket is copied in key
 * order with MDB_APPEND into a fresh LMDB file in a temporary directory
 * beside the database (bk_tmp_create; a sequential fill leaves pages full,
 * unlike a compacting copy), which is fsynced, flocked and renamed over the
 * original. Until the rename nothing of the open backend is touched, so any
 * failure leaves it as it was. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TXN_KEYS 10000   /* etcd's defragLimit: puts per temp-file txn */

static int copy_bucket(MDB_env *dst, MDB_txn **tx, MDB_txn *src, MDB_dbi sdbi,
                       const char *name, size_t *puts)
{
    MDB_dbi ddbi;
    MDB_cursor *c, *out = NULL;
    MDB_val k, v;
    int rc = mdb_dbi_open(*tx, name, MDB_CREATE, &ddbi);
    if (rc || (rc = mdb_cursor_open(src, sdbi, &c)))
        return rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (!out && (rc = mdb_cursor_open(*tx, ddbi, &out)))
            break;
        if ((rc = mdb_cursor_put(out, &k, &v, MDB_APPEND)))
            break;
        if (++*puts % TXN_KEYS == 0) {
            mdb_cursor_close(out);   /* a write txn's cursors end with it */
            out = NULL;
            if ((rc = mdb_txn_commit(*tx)) || (rc = mdb_txn_begin(dst, NULL, 0, tx))) {
                *tx = NULL;
                break;
            }
        }
    }
    if (out)
        mdb_cursor_close(out);
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

typedef struct copy_job {
    MDB_env *dst;
    MDB_txn **tx;
    MDB_txn *src;
    size_t *puts;
} copy_job;

/* Buckets with a handle only: the others are not in LMDB. */
static int copy_one(void *ctx, bk_bucket *b, bk_slice name)
{
    copy_job *job = ctx;
    (void)name;
    if (!b || !b->dbi)
        return 0;
    return copy_bucket(job->dst, job->tx, job->src, b->dbi, b->dbname, job->puts);
}

/* The new file starts its txn ids where the database's left off: another
 * process (a readonly reader) keeps the lock file open, so LMDB reuses the
 * lock's last txn id after the swap instead of the file's, and picks meta
 * pages by its parity. Both meta pages get the new file's state: the last
 * fill txn's as txnid, and as txnid - 1. */
static int continue_txnids(const char *tmp, size_t psize, uint64_t txnid, bk_error *err)
{
    char *pair = malloc(2 * psize);
    int fd = open(tmp, O_RDWR | O_NOFOLLOW | O_CLOEXEC), rc = -1;
    if (pair && fd >= 0 && !bk_read_full(fd, pair, 2 * psize, 0)) {
        int newest = bk_meta_newest(pair, psize);
        if (newest < 0) {
            errno = EINVAL;
        } else {
            bk_meta_pair(pair, psize, newest, txnid > 0 ? txnid : 1);
            /* pread left the file offset at 0: the pair goes back in place */
            rc = bk_write_full(fd, pair, 2 * psize) || fdatasync(fd) ? -1 : 0;
        }
    }
    int saved = pair ? errno : ENOMEM;
    if (fd >= 0)
        close(fd);
    free(pair);
    return rc ? bk_fail(err, BK_EIO, "defrag: writing the new file's meta pages: %s",
                        strerror(saved)) : BK_OK;
}

/* Fill the file at tmp with the state src sees. */
static int fill(bk_backend *be, const char *tmp, MDB_txn *src, bk_error *err)
{
    MDB_env *dst;
    MDB_txn *tx = NULL;
    size_t puts = 0;
    /* Not just the source's map: a database opened with a smaller mmap_size
     * (or just defragmented) has a map exactly its size, which cannot hold a
     * copy (LMDB never uses a map's last page), so that defrag failed with
     * MDB_MAP_FULL. The copy is at most about the source's size; this only
     * reserves address space. */
    uint64_t map = __atomic_load_n(&be->map_size, __ATOMIC_RELAXED) +
                   __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    int rc = mdb_env_create(&dst);
    if (rc)
        return bk_mdb_fail(err, rc, "defrag");
    if ((rc = mdb_env_set_maxdbs(dst, BK_MAX_BUCKETS)) ||
        (rc = mdb_env_set_mapsize(dst, (size_t)map)) ||
        (rc = mdb_env_open(dst, tmp, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC, 0600)) ||
        (rc = mdb_txn_begin(dst, NULL, 0, &tx)))
        goto out;
    copy_job job = { dst, &tx, src, &puts };
    rc = bk_each_bucket(be, src, copy_one, &job);
    if (!rc) {
        rc = mdb_txn_commit(tx);
        tx = NULL;
    }
    if (!rc)
        rc = mdb_env_sync(dst, 1);
out:
    if (tx)
        mdb_txn_abort(tx);
    mdb_env_close(dst);
    if (rc)   /* the new file is beside the database, on its file system */
        return bk_write_fail(be, err, rc, "defrag: writing the new file");
    return continue_txnids(tmp, be->psize, mdb_txn_id(src), err);
}

/* Swap the filled file in: no LMDB txn may live, so views and snapshots are
 * invalidated first. The new file is flocked before the rename, so that no
 * other writer can take it; the replaced one's descriptor is closed later.
 * Caller holds txn_mu. */
static int swap_in(bk_backend *be, const char *tmp, bk_error *err)
{
    int fd, rc = bk_files_lock_new(tmp, &fd, err), old = -1;
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&be->maplock);
    bk_invalidate_children(be, BK_EINVALID);
    bk_env_close(be);
    if (rename(tmp, be->path) < 0) {
        rc = bk_fail(err, BK_EIO, "defrag: renaming %s: %s", tmp, strerror(errno));
        close(fd);
    } else {
        old = bk_files_swapped(be, fd);
        if (bk_fsync_dir(be->path) < 0)
            bk_log(be, "warn", "defrag: fsync of the directory failed: %s", strerror(errno));
    }
    bk_error oerr;
    /* Reopen the new file, or the untouched original if the rename failed. */
    if (bk_env_open(be, &oerr)) {
        bk_set_failed(be);   /* bk_close still stops the committer, frees all */
        rc = bk_fail(err, BK_EIO, "defrag: reopening %s failed, backend closed: %s",
                     be->path, oerr.msg);
    }
    pthread_rwlock_unlock(&be->maplock);
    bk_files_close_later(be, old);
    return rc;
}

int bk_defrag(bk_backend *be, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    if (be->cfg.readonly)
        return bk_fail(err, BK_EREADONLY, "backend is read-only");
    int rc = bk_not_in_section(be, err);
    if (rc || (rc = bk_lock(be, err)))
        return rc;
    /* Writers wait on the lock; everything is in LMDB once this returns. */
    if ((rc = bk_rotate(be, err)) || (rc = bk_wait_committed(be, err))) {
        bk_error uerr;
        bk_unlock(be, &uerr);
        return rc;
    }
    double t0 = bk_now();
    uint64_t before = __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    bk_log(be, "info", "defrag started, size %llu bytes", (unsigned long long)before);
    bk_tmp tmp;
    __atomic_store_n(&be->defrag_inflight, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&be->txn_mu);   /* the committer waits meanwhile */
    rc = bk_tmp_create(&tmp, be->path, err);
    if (!rc) {
        MDB_txn *src = NULL;
        int mrc = bk_read_txn_begin(be, &src);
        rc = mrc ? bk_mdb_fail(err, mrc, "defrag") : fill(be, tmp.file, src, err);
        if (src)
            mdb_txn_abort(src);
        if (!rc)
            rc = swap_in(be, tmp.file, err);
        bk_tmp_discard(&tmp);   /* the whole copy, if it is still there */
    }
    pthread_mutex_unlock(&be->txn_mu);
    __atomic_store_n(&be->defrag_inflight, 0, __ATOMIC_RELAXED);
    double dt = bk_now() - t0;
    if (rc) {
        bk_log(be, "error", "defrag failed: %s", err->msg);
    } else {
        __atomic_store(&be->defrag_s, &dt, __ATOMIC_RELAXED);
        bk_hist_observe(be, &be->defrag_hist, dt);
        bk_log(be, "info", "defrag finished in %.3f s, size %llu -> %llu bytes", dt,
               (unsigned long long)before,
               (unsigned long long)__atomic_load_n(&be->size, __ATOMIC_RELAXED));
    }
    if (!bk_is_closed(be)) {
        bk_error uerr;
        bk_unlock(be, &uerr);
    }
    return rc;
}
