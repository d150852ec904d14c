/* snapshot.c: a point-in-time copy of the committed data. The snapshot pins
 * an LMDB read txn (a gen), so no page it can reach is reused, and keeps
 * the file's two meta pages as they were at that moment, both rewritten to
 * point at its state. write_to then copies the file's other pages with
 * copy_file_range: the speed of a file copy, not of LMDB's page walk.
 * Also here: the walks over a snapshot's buckets and keys (bolt's export)
 * and over the committed state (hash, bucket stats). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_GONE (-1)       /* capture_meta: a writer committed meanwhile */
#define META_TRIES 100

/* Both meta pages describe txn `txnid` (bk_meta_pair, as bbolt's WriteTo
 * does), so neither can point at pages that later commits reused. Returns
 * META_GONE when neither page holds that txn any more. */
static int capture_meta(bk_backend *be, gen *g, bk_snapshot *s, bk_error *err)
{
    int fd;
    int rc = mdb_env_get_fd(g->env->mdb, &fd);
    if (rc)
        return bk_mdb_fail(err, rc, "snapshot");
    if (!s->meta)
        s->meta = malloc(2 * be->psize);
    if (!s->meta)
        return bk_fail(err, BK_EIO, "out of memory");
    if (bk_read_full(fd, s->meta, 2 * be->psize, 0))
        return bk_fail(err, BK_EIO, "snapshot: reading meta pages: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        bk_meta m;
        bk_meta_parse(s->meta + (size_t)i * be->psize, &m);
        if (m.magic != BK_LMDB_MAGIC || m.txnid != g->txnid)
            continue;
        bk_meta_pair(s->meta, be->psize, i, g->txnid);
        s->size = (m.last_pg + 1) * be->psize;
        return BK_OK;
    }
    return META_GONE;
}

int bk_snapshot_open(bk_backend *be, bk_snapshot **out, bk_error *err)
{
    int rc = be->cfg.readonly ? bk_readonly_refresh(be, err) : bk_force_commit(be, err);
    if (rc)
        return rc;
    bk_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return bk_fail(err, BK_EIO, "out of memory");
    s->opened = bk_now();
    s->psize = be->psize;
    for (int tries = 1;; tries++) {
        /* txn_mu: no commit moves the meta pages (nor does a defrag swap
         * files); maplock: a reopen sees the snapshot registered. */
        pthread_mutex_lock(&be->txn_mu);
        pthread_rwlock_rdlock(&be->maplock);
        rc = bk_fresh_gen(be, &s->g, err);
        if (!rc)
            rc = capture_meta(be, s->g, s, err);
        if (!rc) {
            s->be = be;
            bk_child_attach(be, &s->link, 1);
        } else {   /* its txn ends under maplock: before a reopen closes the env */
            bk_gen_unref(s->g);
            s->g = NULL;
        }
        pthread_rwlock_unlock(&be->maplock);
        pthread_mutex_unlock(&be->txn_mu);
        /* Read-only, another process's writer can commit twice between our
         * txn and our read of the pages (txn_mu keeps only ours out): catch
         * up with it and try again. */
        if (rc != META_GONE)
            break;
        if (tries == META_TRIES) {
            rc = bk_fail(err, BK_EIO, "snapshot: a writer committed before each of %d "
                         "reads of the meta pages; retry", META_TRIES);
            break;
        }
        if ((rc = bk_readonly_refresh(be, err)))
            break;
    }
    if (rc) {
        free(s->meta);
        free(s);
        return rc;
    }
    *out = s;
    return BK_OK;
}

uint64_t bk_snapshot_size(const bk_snapshot *s)
{
    return s->size;
}

/* Not invalidated (by a close or a reopen); bk_snapshot_check also asks
 * whether s is this process's, which the reads ask before their locks. */
static int snapshot_valid(bk_snapshot *s, bk_error *err)
{
    return bk_child_check(&s->invalid, "snapshot", err);
}

int bk_snapshot_check(bk_snapshot *s, bk_error *err)
{
    if (bk_foreign(s->be))
        return bk_closed_fail(s->be, err);
    return snapshot_valid(s, err);
}

static int usable(bk_snapshot *s, uint64_t off, size_t len, bk_error *err)
{
    int rc = snapshot_valid(s, err);
    if (rc)
        return rc;
    if (off > s->size || len > s->size - off)
        return bk_fail(err, BK_EARG, "snapshot range out of bounds");
    return BK_OK;
}

/* The data file's bytes [off, off+len) to out, fastest way first. */
static int copy_pages(int in, int out, uint64_t off, size_t len)
{
    int fast = 1;
    while (len) {
        ssize_t n = -1;
        if (fast) {
            off_t o = (off_t)off;
            n = copy_file_range(in, &o, out, NULL, len, 0);
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                          errno == EOPNOTSUPP || errno == EBADF)) {
                fast = 0;
                continue;
            }
        } else {
            char buf[1 << 16];
            size_t want = len < sizeof buf ? len : sizeof buf;
            if (bk_read_full(in, buf, want, off) || bk_write_full(out, buf, want))
                return -1;
            n = (ssize_t)want;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {   /* short file: the rest are zero pages */
            fast = 0;
            continue;
        }
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

/* Bytes [off, off+len) of the snapshot file, to fd (at its position) or
 * into buf: the kept meta pages from memory, the rest from the data file. */
static int transfer(bk_snapshot *s, uint64_t off, size_t len, int fd, char *buf,
                    bk_error *err)
{
    bk_backend *be = s->be;
    if (bk_foreign(be))   /* before its locks */
        return bk_closed_fail(be, err);
    pthread_rwlock_rdlock(&be->maplock);   /* no reopen ends the txn meanwhile */
    int rc = usable(s, off, len, err), in;
    uint64_t meta_end = 2 * (uint64_t)s->psize;
    if (!rc && off < meta_end) {
        size_t n = (size_t)(meta_end - off) < len ? (size_t)(meta_end - off) : len;
        if (buf)
            memcpy(buf, s->meta + off, n);
        else if (bk_write_full(fd, s->meta + off, n))
            rc = bk_fail(err, BK_EIO, "snapshot write: %s", strerror(errno));
        buf = buf ? buf + n : NULL;
        off += n;
        len -= n;
    }
    /* The snapshot's file: after a defrag's swap, the replaced one. */
    if (!rc && len && (rc = mdb_env_get_fd(s->g->env->mdb, &in)))
        rc = bk_mdb_fail(err, rc, "snapshot");
    if (!rc && len && (buf ? bk_read_full(in, buf, len, off) : copy_pages(in, fd, off, len)))
        rc = bk_fail(err, BK_EIO, "snapshot %s: %s", buf ? "read" : "write", strerror(errno));
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

int bk_snapshot_copy_fd(bk_snapshot *s, int fd, uint64_t off, size_t len,
                        bk_error *err)
{
    return transfer(s, off, len, fd, NULL, err);
}

int bk_snapshot_read(bk_snapshot *s, uint64_t off, void *buf, size_t len,
                     bk_error *err)
{
    return transfer(s, off, len, -1, buf, err);
}

/* ---- the committed state, walked ---- */

int bk_visit_committed(bk_backend *be, bk_gen_visit fn, void *ctx, const char *what,
                       bk_error *err)
{
    int rc = be->cfg.readonly ? bk_readonly_refresh(be, err) : bk_force_commit(be, err);
    if (rc)
        return rc;
    gen *g;
    pthread_mutex_lock(&be->txn_mu);
    pthread_rwlock_rdlock(&be->maplock);
    rc = bk_fresh_gen(be, &g, err);
    /* Commits may go on while we read; remaps wait for us. */
    pthread_mutex_unlock(&be->txn_mu);
    if (rc == BK_OK) {
        pthread_mutex_lock(&g->mu);
        int mrc = fn(be, g, ctx);
        pthread_mutex_unlock(&g->mu);
        if (mrc)
            rc = bk_mdb_fail(err, mrc, what);
        bk_gen_unref(g);
    }
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

/* fn(be, s->g, ctx) with maplock (no remap nor swap under it) and the
 * gen's mutex held: its code is returned as it is. */
static int with_gen(bk_snapshot *s, bk_gen_visit fn, void *ctx, bk_error *err)
{
    bk_backend *be = s->be;
    if (bk_foreign(be))   /* before its locks */
        return bk_closed_fail(be, err);
    pthread_rwlock_rdlock(&be->maplock);
    int rc = snapshot_valid(s, err);
    if (!rc) {
        pthread_mutex_lock(&s->g->mu);
        rc = fn(be, s->g, ctx);
        pthread_mutex_unlock(&s->g->mu);
    }
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

typedef struct names_job {
    const gen *g;
    bk_result *out;
    bk_error *err;
} names_job;

static int add_name(void *ctx, bk_bucket *b, bk_slice name)
{
    names_job *job = ctx;
    if (!b || b->id >= job->g->ndbis || !job->g->dbis[b->id])
        return 0;   /* not a bucket of ours */
    return bk_result_append(job->out, name.data, name.len, "", 0) ? -1 : 0;
}

static int list_names(bk_backend *be, gen *g, void *ctx)
{
    names_job *job = ctx;
    job->g = g;
    int rc = bk_each_bucket(be, g->txn, add_name, job);
    if (rc == -1)
        return bk_fail(job->err, BK_EIO, "out of memory");
    return rc ? bk_mdb_fail(job->err, rc, "snapshot") : BK_OK;
}

int bk_snapshot_buckets(bk_snapshot *s, bk_result *out, bk_error *err)
{
    names_job job = { NULL, out, err };
    bk_result_clear(out);
    return with_gen(s, list_names, &job, err);
}

typedef struct scan_job {
    bk_slice bucket, from;
    int after;
    bk_entry_fn fn;
    void *ctx;
    bk_error *err;
} scan_job;

static int scan_gen(bk_backend *be, gen *g, void *ctx)
{
    scan_job *job = ctx;
    bk_bucket *b = bk_bucket_find(be, job->bucket.data, job->bucket.len);
    if (!b || b->id >= g->ndbis || !g->dbis[b->id])
        return BK_OK;   /* not in the snapshot: no keys */
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(g->txn, g->dbis[b->id], &c), stop = 0;
    if (rc)
        return bk_mdb_fail(job->err, rc, "snapshot");
    if (job->from.len) {
        k.mv_data = BK_UNCONST(job->from.data);
        k.mv_size = job->from.len;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (!rc && job->after && k.mv_size == job->from.len &&
            !memcmp(k.mv_data, job->from.data, job->from.len))
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        bk_slice key = { k.mv_data, k.mv_size }, value = { v.mv_data, v.mv_size };
        if ((stop = job->fn(job->ctx, key, value)))
            break;
    }
    mdb_cursor_close(c);
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND ? BK_OK : bk_mdb_fail(job->err, rc, "snapshot");
}

int bk_snapshot_scan(bk_snapshot *s, bk_slice bucket, bk_slice from, int after,
                     bk_entry_fn fn, void *ctx, bk_error *err)
{
    scan_job job = { bucket, from, after, fn, ctx, err };
    return with_gen(s, scan_gen, &job, err);
}

void bk_snapshot_close(bk_snapshot *s)
{
    if (!s || bk_foreign(s->be))
        return;
    bk_backend *be = s->be;
    double dt = bk_now() - s->opened;
    pthread_rwlock_rdlock(&be->maplock);   /* the txn ends before any reopen */
    bk_child_detach(be, &s->link);
    bk_gen_unref(s->g);
    pthread_rwlock_unlock(&be->maplock);
    __atomic_store(&be->snapshot_s, &dt, __ATOMIC_RELAXED);
    bk_hist_observe(be, &be->snapshot_hist, dt);
    /* etcd warns when a snapshot is slower than 100 MB/s, after 30 s. */
    double expected = (double)s->size / 100e6;
    if (dt > 30 && dt > expected)
        bk_log(be, "warn", "snapshot took %.1f s for %llu bytes", dt,
               (unsigned long long)s->size);
    free(s->meta);
    free(s);
    bk_free(be);
}

#define WRITE_CHUNK ((size_t)8 << 20)   /* progress is reported after each */

int bk_snapshot_write_fd(bk_snapshot *s, int fd, bk_progress_fn progress, void *ctx,
                         bk_error *err)
{
    uint64_t total = bk_snapshot_size(s), done = 0;
    int rc = BK_OK;
    while (!rc && done < total) {
        size_t n = total - done < WRITE_CHUNK ? (size_t)(total - done) : WRITE_CHUNK;
        if (!(rc = bk_snapshot_copy_fd(s, fd, done, n, err))) {
            done += n;
            rc = progress ? progress(ctx, done, total) : BK_OK;
        }
    }
    return rc;
}

int bk_snapshot_write_path(bk_snapshot *s, const char *path, bk_progress_fn progress,
                           void *ctx, bk_error *err)
{
    struct stat exists;
    bk_tmp tmp;
    int rc = bk_snapshot_check(s, err);   /* no file made for nothing */
    if (rc)
        return rc;
    if (lstat(path, &exists) == 0)
        return bk_fail(err, BK_EEXIST, "%s already exists", path);
    rc = bk_tmp_create(&tmp, path, err);
    if (rc)
        return rc;
    int fd = open(tmp.file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = bk_fail(err, BK_EIO, "%s: %s", tmp.file, strerror(errno));
    } else {
        rc = bk_snapshot_write_fd(s, fd, progress, ctx, err);
        if (!rc && fsync(fd) < 0)
            rc = bk_fail(err, BK_EIO, "%s: %s", path, strerror(errno));
        if (close(fd) < 0 && !rc)
            rc = bk_fail(err, BK_EIO, "%s: %s", path, strerror(errno));
        if (!rc)
            rc = bk_tmp_publish(&tmp, path, err);
    }
    bk_tmp_discard(&tmp);
    return rc;
}
