/* defrag.c: rewriting the database compactly while it stays in use. A
 * job's thread copies every bucket in key order with MDB_APPEND (pages left
 * full) from a read txn of the committed data into a fresh LMDB file, with
 * its own lock file, in a private directory beside the database (bk_tmp).
 * Writers, the committer and readers go on with the old file meanwhile:
 * the copy holds maplock only a chunk at a time, and the batches the
 * committer commits are kept (its commit log) and applied to the copy
 * again (catch-up) until little is left. The copy is fsynced; then only the
 * committer pauses (txn_mu) while the last remainder is applied, the new
 * lock file and then the new data file are renamed into place, and the new
 * environment becomes the current one. Views and snapshots opened before
 * keep reading the old file (its environment is refcounted) until they
 * close. A failure or a cancel before the renames leaves the old file in
 * service and removes the copy. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TXN_KEYS 10000        /* etcd's defragLimit: keys per txn of the copy */
#define CATCHUP_LEFT 10000    /* writes the committer's pause may apply */
#define CATCHUP_ROUNDS 100    /* then pause anyway: writers outrun the copy */
#define MAP_GROWS 40

struct bk_defrag_job {
    int refs;                      /* atomic: the backend's slot, the caller's */
    bk_backend *be;
    bk_process process;            /* be's: the job may outlive be */
    pthread_t thread;
    pthread_mutex_t mu;            /* a leaf */
    pthread_cond_t cv;
    int done;                      /* under mu */
    int cancel;                    /* atomic */
    uint64_t copied, total;        /* atomic: progress, in bytes */
    int rc;                        /* the outcome, once done */
    bk_error err;
    bk_defrag_result res;
};

/* ---- the copy ---- */

typedef struct bucket_copy {
    uint32_t id;
    uint64_t bytes, entries;       /* the source's pages and entries */
} bucket_copy;

typedef struct copy_plan {
    const gen *src;
    size_t psize;
    bucket_copy *b;
    int n;
} copy_plan;

static int plan_bucket(void *ctx, bk_bucket *b, bk_slice name)
{
    copy_plan *p = ctx;
    MDB_stat st;
    (void)name;
    if (!b || b->id >= p->src->ndbis || !p->src->dbis[b->id])
        return 0;   /* not a bucket of this state */
    int rc = mdb_stat(p->src->txn, p->src->dbis[b->id], &st);
    if (rc)
        return rc;
    bucket_copy *c = &p->b[p->n++];
    c->id = b->id;
    c->entries = st.ms_entries;
    c->bytes = (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * p->psize;
    return 0;
}

/* The buckets of src, in name order, with their sizes (maplock held). */
static int make_plan(bk_backend *be, copy_plan *p, uint64_t *total)
{
    p->n = 0;
    p->b = calloc(BK_MAX_BUCKETS, sizeof *p->b);
    if (!p->b)
        return ENOMEM;
    int rc = bk_each_bucket(be, p->src->txn, plan_bucket, p);
    *total = 0;
    for (int i = 0; !rc && i < p->n; i++)
        *total += p->b[i].bytes;
    return rc;
}

/* The LMDB environment has room for what it is given next: twice the map. */
static int grow_map(bk_env *e)
{
    MDB_envinfo info;
    int rc = mdb_env_info(e->mdb, &info);
    return rc ? rc : mdb_env_set_mapsize(e->mdb, info.me_mapsize * 2);
}

/* Where the copy stands: bucket i of the plan, after key last[0..lastlen)
 * (from its first key if !started), entries copied of it so far. */
typedef struct copy_pos {
    int i, started;
    char last[512];               /* LMDB's key limit is under it */
    size_t lastlen;
    uint64_t entries;
} copy_pos;

/* Copies up to `quota` entries of the bucket at *pos into tx, moving *pos;
 * *n: how many. The bucket is through when pos->i moved on. The source is
 * read under maplock, a chunk at a time: the committer's remaps wait at
 * most that long. 0, or an LMDB code. */
static int copy_chunk(bk_backend *be, gen *src, bk_env *dst, MDB_txn *tx, uint32_t id,
                      copy_pos *pos, size_t quota, size_t *n)
{
    MDB_cursor *in = NULL, *out = NULL;
    MDB_val k, v;
    int rc = 0;
    *n = 0;
    if (!dst->dbis[id])
        rc = mdb_dbi_open(tx, be->buckets[id]->dbname, MDB_CREATE, &dst->dbis[id]);
    pthread_rwlock_rdlock(&be->maplock);
    if (!rc && !src->txn)
        rc = MDB_BAD_TXN;   /* a reopen ended it (bk_env_reopen) */
    if (!rc)
        rc = mdb_cursor_open(src->txn, src->dbis[id], &in);
    if (!rc)
        rc = mdb_cursor_open(tx, dst->dbis[id], &out);
    if (!rc && pos->started) {
        k.mv_data = pos->last;
        k.mv_size = pos->lastlen;
        rc = mdb_cursor_get(in, &k, &v, MDB_SET_RANGE);
        if (!rc && k.mv_size == pos->lastlen && !memcmp(k.mv_data, pos->last, pos->lastlen))
            rc = mdb_cursor_get(in, &k, &v, MDB_NEXT);
    } else if (!rc) {
        rc = mdb_cursor_get(in, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(in, &k, &v, MDB_NEXT)) {
        if ((rc = mdb_cursor_put(out, &k, &v, MDB_APPEND)))
            break;
        if (++*n == quota) {
            pos->lastlen = k.mv_size;
            memcpy(pos->last, k.mv_data, k.mv_size);
            pos->started = 1;
            break;
        }
    }
    if (out)
        mdb_cursor_close(out);
    if (in)
        mdb_cursor_close(in);
    pthread_rwlock_unlock(&be->maplock);
    pos->entries += *n;
    if (rc == MDB_NOTFOUND) {   /* the bucket is through */
        pos->i++;
        pos->started = 0;
        pos->entries = 0;
        rc = 0;
    }
    return rc;
}

static int cancelled(bk_defrag_job *job)
{
    return __atomic_load_n(&job->cancel, __ATOMIC_ACQUIRE);
}

/* Bytes of the plan's pages copied once the copy is at pos. */
static uint64_t copied_at(const copy_plan *p, const copy_pos *pos)
{
    uint64_t done = 0;
    for (int i = 0; i < pos->i && i < p->n; i++)
        done += p->b[i].bytes;
    if (pos->i < p->n && p->b[pos->i].entries) {
        const bucket_copy *b = &p->b[pos->i];
        uint64_t e = pos->entries < b->entries ? pos->entries : b->entries;
        done += b->bytes / b->entries * e;
    }
    return done;
}

/* Every bucket of src into dst, TXN_KEYS entries a txn (buckets share
 * txns: a small database is copied in one); job->copied moves from 0 to
 * total. A txn that fails (a full map: grown) is done again from where the
 * last one committed. */
static int copy_all(bk_defrag_job *job, gen *src, bk_env *dst, bk_error *err)
{
    bk_backend *be = job->be;
    copy_plan p = { src, be->psize, NULL, 0 };
    copy_pos pos = { 0 }, committed = { 0 };
    uint64_t total;
    MDB_txn *tx = NULL;
    size_t in_txn = 0;
    int grows = 0;
    pthread_rwlock_rdlock(&be->maplock);
    int rc = src->txn ? make_plan(be, &p, &total) : MDB_BAD_TXN;
    pthread_rwlock_unlock(&be->maplock);
    if (!rc) {
        __atomic_store_n(&job->total, total, __ATOMIC_RELAXED);
        rc = mdb_txn_begin(dst->mdb, NULL, 0, &tx);
    }
    while (!rc && !cancelled(job)) {
        size_t n = 0;
        if (pos.i < p.n)
            rc = copy_chunk(be, src, dst, tx, p.b[pos.i].id, &pos, TXN_KEYS - in_txn, &n);
        in_txn += n;
        if (!rc && (in_txn == TXN_KEYS || pos.i == p.n)) {
            rc = mdb_txn_commit(tx);
            tx = NULL;
            if (!rc) {
                committed = pos;
                in_txn = 0;
                __atomic_store_n(&job->copied, copied_at(&p, &pos), __ATOMIC_RELAXED);
                if (pos.i == p.n)
                    break;
                rc = mdb_txn_begin(dst->mdb, NULL, 0, &tx);
            }
        }
        if (rc == MDB_MAP_FULL && grows++ < MAP_GROWS) {
            if (tx)
                mdb_txn_abort(tx);
            tx = NULL;
            /* Handles opened in the lost txn went with it. */
            for (int i = committed.i; i <= pos.i && i < p.n; i++)
                dst->dbis[p.b[i].id] = 0;
            pos = committed;
            in_txn = 0;
            if (!(rc = grow_map(dst)))
                rc = mdb_txn_begin(dst->mdb, NULL, 0, &tx);
        }
    }
    if (tx)
        mdb_txn_abort(tx);
    free(p.b);
    if (!rc && cancelled(job))
        return bk_fail(err, BK_ECANCELED, "defrag cancelled");
    if (rc == MDB_BAD_TXN)
        return bk_fail(err, BK_EIO, "defrag: the database was reopened meanwhile");
    return rc ? bk_write_fail(be, err, rc, "defrag: writing the new file") : BK_OK;
}

/* ---- catch-up ---- */

/* The batches mts[0..n), committed to the old file, applied to dst in
 * groups as large as one txn takes. */
static int replay(bk_backend *be, bk_env *dst, memtable **mts, int n, bk_error *err)
{
    int rc = 0, nm = n, grows = 0;
    for (int i = 0; i < n;) {
        if (nm > n - i)
            nm = n - i;
        rc = bk_apply_batches(be, dst, mts + i, nm);
        if (rc == MDB_TXN_FULL && nm > 1)
            nm /= 2;
        else if (rc == MDB_MAP_FULL && grows++ < MAP_GROWS && !(rc = grow_map(dst)))
            continue;
        else if (rc)
            break;
        else
            i += nm;
    }
    return rc ? bk_write_fail(be, err, rc, "defrag: catching up") : BK_OK;
}

/* Applies batches taken from the commit log to dst and releases them: the
 * writes they held in *writes, the newest batch's id in *last_id.
 * incomplete: the take ran out of memory. */
static int apply_log(bk_backend *be, bk_env *dst, memtable **mts, int n, int incomplete,
                     uint64_t *writes, uint64_t *last_id, bk_error *err)
{
    int rc = incomplete ? bk_fail(err, BK_EIO, "defrag: out of memory for the commit log")
                        : replay(be, dst, mts, n, err);
    *writes = 0;
    for (int i = 0; i < n; i++) {
        *writes += mts[i]->writes;
        if (mts[i]->id > *last_id)
            *last_id = mts[i]->id;
    }
    bk_batches_release(mts, n);
    return rc;
}

/* Takes the commit log, holding txn_mu for the take only, and applies it. */
static int catch_up(bk_backend *be, bk_env *dst, uint64_t *writes, uint64_t *last_id,
                    bk_error *err)
{
    memtable **mts;
    int n;
    pthread_mutex_lock(&be->txn_mu);
    int incomplete = bk_commit_log_take(be, &mts, &n);
    pthread_mutex_unlock(&be->txn_mu);
    return apply_log(be, dst, mts, n, incomplete, writes, last_id, err);
}

/* ---- the swap ---- */

typedef struct new_files {
    bk_tmp tmp;
    char lock[PATH_MAX], oldlock[PATH_MAX];
    int datafd, lockfd;
} new_files;

/* The writer's pause: the remainder applied, the copy made durable, the
 * new lock file then the new data file renamed into place (a process that
 * opens the database in between reads the old file under a lock file of
 * its own: our writer never writes that file again), the directory
 * fsynced, and the new environment made current. Caller holds txn_mu.
 * Before the data file is renamed any failure leaves everything as it was;
 * once it is, the swap completes. */
static int swap_in(bk_defrag_job *job, bk_env *src_env, bk_env *dst, new_files *f,
                   uint64_t *last_id, bk_env **old, bk_error *err)
{
    bk_backend *be = job->be;
    uint64_t writes;
    memtable **mts;
    int n, incomplete = bk_commit_log_take(be, &mts, &n);
    int rc = apply_log(be, dst, mts, n, incomplete, &writes, last_id, err);
    if (rc)
        return rc;
    if (be->env != src_env || bk_is_closed(be))
        return bk_fail(err, BK_EIO, "defrag: the database was reopened meanwhile");
    if (cancelled(job))
        return bk_fail(err, BK_ECANCELED, "defrag cancelled");
    if (!be->cfg.no_fsync &&
        ((rc = mdb_env_set_flags(dst->mdb, MDB_NOSYNC, 0)) || (rc = mdb_env_sync(dst->mdb, 1))))
        return bk_write_fail(be, err, rc, "defrag: syncing the new file");
    if (rename(f->lock, be->lockpath) < 0)
        return bk_fail(err, BK_EIO, "defrag: renaming %s: %s", f->lock, strerror(errno));
    if (rename(f->tmp.file, be->path) < 0) {
        rc = bk_fail(err, BK_EIO, "defrag: renaming %s: %s", f->tmp.file, strerror(errno));
        if (rename(f->oldlock, be->lockpath) < 0)   /* the old pair again */
            bk_log(be, "error", "defrag: putting the lock file back: %s", strerror(errno));
        return rc;
    }
    if (bk_fsync_dir(be->path) < 0)
        bk_log(be, "warn", "defrag: fsync of the directory failed: %s", strerror(errno));
    int old_datafd, old_lockfd;
    bk_files_swapped(be, f->datafd, f->lockfd, &old_datafd, &old_lockfd);
    f->datafd = f->lockfd = -1;
    *old = be->env;   /* the backend's reference, now the job's */
    (*old)->datafd = old_datafd;
    (*old)->lockfd = old_lockfd;
    be->env = dst;
    MDB_envinfo info;
    if (mdb_env_info(dst->mdb, &info) == 0)
        __atomic_store_n(&be->map_size, (uint64_t)info.me_mapsize, __ATOMIC_RELAXED);
    gen *g;
    bk_error gerr;
    if (bk_gen_open(be, *last_id, &g, &gerr) == BK_OK) {
        bk_sizes_update(be, g);
        if (bk_version_update(be, g, NULL))
            bk_log(be, "warn", "defrag: no memory for a new version");
        bk_gen_unref(g);
    } else {
        /* Readers go on with the old version until the next commit's. */
        bk_log(be, "warn", "defrag: no read txn on the new file: %s", gerr.msg);
    }
    return BK_OK;
}

/* ---- the job ---- */

static int prepare_files(bk_backend *be, new_files *f, bk_error *err)
{
    /* Shorter than the marker's name, which bk_tmp_create made room for. */
    if ((size_t)snprintf(f->lock, sizeof f->lock, "%s-lock", f->tmp.file) >= sizeof f->lock ||
        (size_t)snprintf(f->oldlock, sizeof f->oldlock, "%s-lock.old", f->tmp.file) >=
            sizeof f->oldlock)
        return bk_fail(err, BK_EARG, "%s: %s", be->path, strerror(ENAMETOOLONG));
    int rc = bk_files_lock_new(f->tmp.file, &f->datafd, err);
    if (!rc)
        rc = bk_files_lock_new(f->lock, &f->lockfd, err);
    /* A name for the old lock file, should the data file's rename fail. */
    if (!rc && link(be->lockpath, f->oldlock) < 0)
        rc = bk_fail(err, BK_EIO, "defrag: linking %s: %s", be->lockpath, strerror(errno));
    return rc;
}

/* Everything but the bookkeeping: 0 with *old the replaced environment. */
static int run(bk_defrag_job *job, bk_env **old, bk_error *err)
{
    bk_backend *be = job->be;
    new_files f = { .datafd = -1, .lockfd = -1 };
    bk_env *dst = NULL;
    gen *src = NULL;
    uint64_t last_id = 0, writes;
    int rc = bk_tmp_create(&f.tmp, be->path, err);
    if (rc)
        return rc;
    /* The copy is about the size of what the source uses: this reserves
     * address space for it (LMDB never uses a map's last page). */
    uint64_t map = __atomic_load_n(&be->map_size, __ATOMIC_RELAXED) +
                   __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    rc = bk_env_create(be, f.tmp.file, MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC, (size_t)map,
                       &dst, err);
    if (rc)
        goto out;
    pthread_mutex_lock(&be->txn_mu);   /* no commit between the txn and the log */
    pthread_mutex_lock(&be->cmu);
    last_id = be->committed_id;
    pthread_mutex_unlock(&be->cmu);
    rc = bk_gen_open(be, last_id, &src, err);
    if (!rc) {
        be->defrag_src = src;
        bk_commit_log_start(be);
    }
    bk_env *src_env = be->env;
    pthread_mutex_unlock(&be->txn_mu);
    if (rc)
        goto out;
    rc = copy_all(job, src, dst, err);
    pthread_mutex_lock(&be->txn_mu);
    be->defrag_src = NULL;
    pthread_mutex_unlock(&be->txn_mu);
    /* The copy is made durable as soon as it is whole (its bulk: the
     * fsync before the pause then flushes only the catch-up's pages). */
    if (!rc && !be->cfg.no_fsync && (rc = mdb_env_sync(dst->mdb, 1)))
        rc = bk_write_fail(be, err, rc, "defrag: syncing the new file");
    /* Catch up until what is left is small, make that durable, then once
     * more: the pause applies only what came during the fsync. */
    for (int round = 0; !rc; round++) {
        rc = catch_up(be, dst, &writes, &last_id, err);
        if (!rc && cancelled(job))
            rc = bk_fail(err, BK_ECANCELED, "defrag cancelled");
        if (rc || writes <= CATCHUP_LEFT || round == CATCHUP_ROUNDS)
            break;
    }
    if (!rc && !be->cfg.no_fsync && (rc = mdb_env_sync(dst->mdb, 1)))
        rc = bk_write_fail(be, err, rc, "defrag: syncing the new file");
    if (!rc)
        rc = catch_up(be, dst, &writes, &last_id, err);
    if (!rc)
        rc = prepare_files(be, &f, err);
    if (!rc) {
        pthread_mutex_lock(&be->txn_mu);
        __atomic_add_fetch(&be->defrag_pauses, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&be->defrag_pausing, 1, __ATOMIC_RELEASE);
        double t0 = bk_now();
        rc = swap_in(job, src_env, dst, &f, &last_id, old, err);
        if (!rc)
            dst = NULL;   /* the backend's now */
        job->res.swap_seconds = bk_now() - t0;
        __atomic_store_n(&be->defrag_pausing, 0, __ATOMIC_RELEASE);
        bk_commit_log_stop(be);
        pthread_mutex_unlock(&be->txn_mu);
    } else {
        pthread_mutex_lock(&be->txn_mu);
        bk_commit_log_stop(be);
        pthread_mutex_unlock(&be->txn_mu);
    }
out:
    bk_gen_unref(src);
    bk_env_unref(dst);
    if (f.datafd >= 0)
        close(f.datafd);
    if (f.lockfd >= 0)
        close(f.lockfd);
    if (f.oldlock[0])
        unlink(f.oldlock);
    bk_tmp_discard(&f.tmp);   /* the copy, unless it was renamed */
    return rc;
}

static void job_unref(bk_defrag_job *job)
{
    if (!job || __atomic_sub_fetch(&job->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    free(job);
}

static void *job_main(void *arg)
{
    bk_defrag_job *job = arg;
    bk_backend *be = job->be;
    bk_env *old = NULL;
    double t0 = bk_now();
    uint64_t before = __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    bk_log(be, "info", "defrag started, size %llu bytes", (unsigned long long)before);
    __atomic_store_n(&be->defrag_pause_max_ns, 0, __ATOMIC_RELAXED);
    int rc = run(job, &old, &job->err);
    double dt = bk_now() - t0;
    uint64_t after = __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    if (rc == BK_ECANCELED) {
        bk_log(be, "info", "defrag cancelled after %.3f s; the file is as it was", dt);
    } else if (rc) {
        bk_log(be, "error", "defrag failed: %s", job->err.msg);
    } else {
        __atomic_store(&be->defrag_s, &dt, __ATOMIC_RELAXED);
        bk_hist_observe(be, &be->defrag_hist, dt);
        bk_log(be, "info", "defrag finished in %.3f s (writer's pause %.3f ms), size %llu -> "
               "%llu bytes", dt, job->res.swap_seconds * 1e3, (unsigned long long)before,
               (unsigned long long)after);
    }
    pthread_mutex_lock(&job->mu);
    job->rc = rc;
    job->res.size_before = before;
    job->res.size_after = rc ? before : after;
    job->res.seconds = dt;
    job->res.pause_seconds =
        (double)__atomic_load_n(&be->defrag_pause_max_ns, __ATOMIC_RELAXED) / 1e9;
    job->done = 1;
    __atomic_store_n(&be->defrag_inflight, 0, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
    bk_env_unref(old);   /* after `done`: maybe the replaced file's last reference */
    return NULL;
}

/* The backend's job, if any, ended: cancelled if `cancel`, its thread
 * joined, the slot empty. Caller holds defrag_mu. */
static void job_reap(bk_backend *be, int cancel)
{
    bk_defrag_job *job = be->defrag_job;
    if (!job)
        return;
    if (cancel)
        bk_defrag_cancel(job);
    pthread_join(job->thread, NULL);
    be->defrag_job = NULL;
    job_unref(job);
}

int bk_defrag_start(bk_backend *be, bk_defrag_job **out, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    if (be->cfg.readonly)
        return bk_fail(err, BK_EREADONLY, "backend is read-only");
    int rc = bk_not_in_section(be, err);   /* as every call that commits */
    if (rc)
        return rc;
    if (be->stopped)   /* as bk_force_commit reads it: the backend is closing */
        return bk_fail(err, BK_ESTOPPED, "batch tx is stopped (commit_and_stop)");
    /* The new file takes one name: the others would keep the old file,
     * a copy that goes its own way once written through them. */
    struct stat st;
    if (fstat(be->datafd, &st) == 0 && st.st_nlink > 1)
        return bk_fail(err, BK_EARG, "defrag: %s has %ju names (hard links); a defrag would "
                       "leave the others on the old file: remove them first", be->path,
                       (uintmax_t)st.st_nlink);
    pthread_mutex_lock(&be->defrag_mu);
    if (be->defrag_job && !bk_defrag_done(be->defrag_job)) {
        pthread_mutex_unlock(&be->defrag_mu);
        return bk_fail(err, BK_EBUSY, "a defrag of this backend is already running");
    }
    job_reap(be, 0);
    bk_defrag_job *job = calloc(1, sizeof *job);
    rc = job ? 0 : ENOMEM;
    if (job) {
        job->refs = 2;
        job->be = be;
        job->process = be->process;
        pthread_mutex_init(&job->mu, NULL);
        pthread_cond_init(&job->cv, NULL);
        __atomic_store_n(&be->defrag_inflight, 1, __ATOMIC_RELAXED);
        if ((rc = bk_thread_start(&job->thread, "bk-defrag", job_main, job))) {
            __atomic_store_n(&be->defrag_inflight, 0, __ATOMIC_RELAXED);
            pthread_mutex_destroy(&job->mu);
            pthread_cond_destroy(&job->cv);
            free(job);
        }
    }
    if (!rc)
        be->defrag_job = job;
    pthread_mutex_unlock(&be->defrag_mu);
    if (rc)
        return bk_fail(err, BK_EIO, "defrag: starting its thread: %s", strerror(rc));
    *out = job;
    return BK_OK;
}

/* In a forked child a job's thread is not there, nor perhaps is the
 * thread holding its mutex: it reads as done, and ended with an error. */
int bk_defrag_done(bk_defrag_job *job)
{
    if (bk_process_foreign(&job->process))
        return 1;
    pthread_mutex_lock(&job->mu);
    int done = job->done;
    pthread_mutex_unlock(&job->mu);
    return done;
}

void bk_defrag_progress(bk_defrag_job *job, uint64_t *copied, uint64_t *total)
{
    *copied = __atomic_load_n(&job->copied, __ATOMIC_RELAXED);
    *total = __atomic_load_n(&job->total, __ATOMIC_RELAXED);
}

int bk_defrag_wait(bk_defrag_job *job, bk_defrag_result *res, bk_error *err)
{
    if (bk_process_foreign(&job->process))
        return bk_process_fail(&job->process, "defrag job", err);
    pthread_mutex_lock(&job->mu);
    while (!job->done)
        pthread_cond_wait(&job->cv, &job->mu);
    int rc = job->rc;
    if (rc)
        *err = job->err;
    else if (res)
        *res = job->res;
    pthread_mutex_unlock(&job->mu);
    return rc;
}

int bk_defrag_wait_for(bk_defrag_job *job, double seconds)
{
    if (bk_process_foreign(&job->process))
        return 1;
    struct timespec until = bk_abs_time(bk_now() + seconds);
    pthread_mutex_lock(&job->mu);
    while (!job->done && pthread_cond_timedwait(&job->cv, &job->mu, &until) != ETIMEDOUT)
        ;
    int done = job->done;
    pthread_mutex_unlock(&job->mu);
    return done;
}

void bk_defrag_cancel(bk_defrag_job *job)
{
    __atomic_store_n(&job->cancel, 1, __ATOMIC_RELEASE);
}

void bk_defrag_job_free(bk_defrag_job *job)
{
    if (job && bk_process_foreign(&job->process))
        return;
    job_unref(job);
}

void bk_defrag_stop(bk_backend *be)
{
    pthread_mutex_lock(&be->defrag_mu);
    job_reap(be, 1);
    pthread_mutex_unlock(&be->defrag_mu);
}

int bk_defrag(bk_backend *be, bk_defrag_result *res, bk_error *err)
{
    bk_defrag_job *job;
    /* What was written before is durable once it returns, as always. */
    int rc = bk_force_commit(be, err);
    if (!rc)
        rc = bk_defrag_start(be, &job, err);
    if (rc)
        return rc;
    rc = bk_defrag_wait(job, res, err);
    bk_defrag_job_free(job);
    return rc;
}
