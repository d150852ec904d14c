/*
 * backend.h: the C API of the storage core, etcd's MVCC backend on LMDB.
 *
 * No Lua here: threads may share a bk_backend. Every function that can fail
 * returns a bk_code and fills the caller's bk_error (no globals, no errno
 * games), in the style of LMDB itself.
 *
 * Threading: the batch tx is used by the thread that holds its lock. A view
 * (concurrent read tx) or snapshot may be used from any thread, but by one
 * thread at a time. Everything else may be called from any thread.
 */
#ifndef BACKEND_H
#define BACKEND_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

/* Nothing of the core is exported from a shared object that links it in,
 * however that is built (luarocks passes no -fvisibility flag): only the
 * binding's entry point is. */
#pragma GCC visibility push(hidden)

#define BK_VERSION "0.4.7"

typedef struct bk_backend bk_backend;
typedef struct bk_view bk_view;
typedef struct bk_snapshot bk_snapshot;

typedef enum bk_code {
    BK_OK = 0,
    BK_EARG,        /* bad argument: empty or oversized key, bad config */
    BK_ENOBUCKET,   /* write to a bucket that does not exist */
    BK_ENOTLOCKED,  /* batch tx used without holding its lock */
    BK_ELOCKED,     /* batch tx locked twice by one thread, or a commit
                       asked for by the thread holding its lock */
    BK_ECLOSED,     /* backend (or the object) is closed */
    BK_EREADONLY,   /* write to a read-only backend */
    BK_EINVALID,    /* view or snapshot invalidated by a reopen (after a
                       failed commit; read-only, after the writer's defrag) */
    BK_EBUSY,       /* path already open (this or another process), or
                       a defrag already running */
    BK_EFORMAT,     /* file is not a database of ours */
    BK_ESTOPPED,    /* batch tx stopped by commit_and_stop */
    BK_EIO,         /* system or LMDB failure (message has the details) */
    BK_EEXIST,      /* the target of a new file already exists */
    BK_ECANCELED    /* a defrag cancelled (bk_defrag_cancel, bk_close) */
} bk_code;

typedef struct bk_error {
    int code;
    char msg[384];
} bk_error;

typedef struct bk_slice {
    const void *data;
    size_t len;
} bk_slice;

typedef struct bk_config {
    const char *path;        /* the database file itself (MDB_NOSUBDIR) */
    double batch_interval;   /* seconds between background commits */
    uint64_t batch_limit;    /* commit at unlock once this many writes pend */
    uint64_t mmap_size;      /* initial map size; grown on demand */
    uint64_t max_buffered_bytes;   /* bk_lock waits while the uncommitted
                                      batches hold this much (arena bytes) */
    unsigned max_readers;
    int no_fsync;
    int readonly;
    int owns_dir;            /* the backend owns its files: bk_close removes
                                them (and their directory once empty) */
} bk_config;

/* A histogram of durations in seconds, with Prometheus' exponential bounds:
 * bound i is first * 2^i, for i < n. */
#define BK_HIST_MAX 17
typedef struct bk_hist {
    double first;
    int n;
    uint64_t counts[BK_HIST_MAX];   /* observations in (bound i-1, bound i] */
    uint64_t count;                 /* all of them, past the last bound too */
    double sum;
} bk_hist;

/* Statistics; sizes in bytes, times in seconds. */
typedef struct bk_stats {
    uint64_t commits, pending, buffered_writes, buffered_bytes;
    uint64_t queued_batches, map_size, page_size, size, size_in_use;
    uint64_t open_read_tx_n, map_grows, commit_failures, rollbacks;
    uint64_t backpressure_waits;     /* bk_lock calls that waited for room */
    double backpressure_seconds;     /* their time waiting */
    double last_commit_seconds, total_commit_seconds;
    double defrag_seconds, snapshot_seconds;
    int defrag_inflight;
    /* etcd's bounds: commits from 1 ms (14), defrags from 0.1 s (13),
     * snapshots from 10 ms (17) */
    bk_hist commit_hist, defrag_hist, snapshot_hist;
} bk_stats;

#define BK_MAX_BUCKETS 1000   /* distinct bucket names per open backend */

/* LMDB's numbers for one bucket's committed data (mdb_stat). name points
 * into the backend's bucket registry: valid while the backend is open. */
typedef struct bk_bucket_stat {
    bk_slice name;
    uint64_t entries, depth, branch_pages, leaf_pages, overflow_pages;
} bk_bucket_stat;

/* Result of a read: entries copied out of LMDB and the buffers. The bytes
 * lie in data in entry order, each key followed by its value. */
typedef struct bk_result {
    size_t count, cap;       /* entries */
    size_t *offs;            /* 4 per entry: key off, key len, val off, val len */
    char *data;
    size_t used, size;       /* bytes of data */
} bk_result;

/* What a read through a tx or view returns, in key order. to == NULL is
 * etcd's Range of the key `from` alone, unless open_end: then every key
 * from `from` on. after: start past `from` instead of at it (iteration in
 * chunks resumes after the last key it returned). */
typedef struct bk_query {
    bk_slice bucket, from;
    const bk_slice *to;      /* exclusive */
    int open_end, after;
    int64_t limit;           /* <= 0: no limit */
} bk_query;

void bk_result_init(bk_result *r);
void bk_result_clear(bk_result *r);
void bk_result_free(bk_result *r);
bk_slice bk_result_key(const bk_result *r, size_t i);
bk_slice bk_result_value(const bk_result *r, size_t i);

void bk_config_default(bk_config *cfg);

/* Open; on success *out holds one reference, released by bk_free. */
int bk_open(const bk_config *cfg, bk_backend **out, bk_error *err);
/* Commit what is pending and close. If that commit fails the backend stays
 * open and the error is returned, unless force is set (then the writes that
 * could not be committed are lost and the error still returned). A backend
 * that failed (its database could not be reopened, after a defrag or a
 * failed commit: every call says it is closed) is released either way, with
 * an error if writes were lost. When it returns, every file its defrags
 * replaced is closed in this process. Idempotent. */
int bk_close(bk_backend *be, int force, bk_error *err);
/* Take one more reference; each is released by bk_free. */
void bk_ref(bk_backend *be);
void bk_free(bk_backend *be);
/* A backend belongs to the process that opened it. In a forked child it
 * is closed: every call that reads, writes, commits or waits fails with
 * BK_ECLOSED (saying so) before taking any lock; bk_close, bk_free and
 * the closes of its views, snapshots and defrag jobs do nothing (the
 * child's copy goes when it execs or exits); a defrag job reads as done
 * (bk_defrag_done, bk_defrag_wait_for), as no thread of the child runs it.
 * The getters that cannot fail (bk_pending, bk_locked_by_me, ...) answer
 * from the child's copy. */
int bk_is_closed(const bk_backend *be);
/* BK_OK, or BK_ECLOSED with why (closed, or another process's). */
int bk_check_open(const bk_backend *be, bk_error *err);
const char *bk_path(const bk_backend *be);
size_t bk_max_key_size(const bk_backend *be);

/* The batch tx. A section runs from bk_lock to bk_unlock (which makes its
 * writes visible to every reader at once) or bk_rollback (which discards
 * them, bucket creates and deletes included: no reader ever sees them).
 * A locked section is never committed: what commits (bk_commit,
 * bk_force_commit, snapshots, hash, defrag, close) returns BK_ELOCKED when
 * the calling thread holds the lock. */
int bk_lock(bk_backend *be, bk_error *err);
int bk_unlock(bk_backend *be, bk_error *err);
/* why: NULL, or the reason, logged as a warning with the writes undone. */
int bk_rollback(bk_backend *be, const char *why, bk_error *err);
int bk_locked_by_me(const bk_backend *be);
int bk_create_bucket(bk_backend *be, bk_slice name, bk_error *err);
int bk_delete_bucket(bk_backend *be, bk_slice name, bk_error *err);
int bk_put(bk_backend *be, bk_slice bucket, bk_slice key, bk_slice value,
           bk_error *err);
int bk_delete(bk_backend *be, bk_slice bucket, bk_slice key, bk_error *err);
/* etcd's Commit(): lock, commit every unlocked write, unlock; stop also
 * stops the batch tx for good. */
int bk_commit(bk_backend *be, int stop, bk_error *err);
/* The largest value bk_put takes: what LMDB can commit in one write. */
size_t bk_max_value_size(const bk_backend *be);
uint64_t bk_pending(bk_backend *be);
/* Reads through the batch tx see its own writes; caller holds the lock.
 * to == NULL reads the single key `from`; limit <= 0 means no limit. */
int bk_tx_range(bk_backend *be, bk_slice bucket, bk_slice from,
                const bk_slice *to, int64_t limit, bk_result *out,
                bk_error *err);
/* Any query (q NULL: as bk_tx_buckets). */
int bk_tx_read(bk_backend *be, const bk_query *q, bk_result *out, bk_error *err);

/* The names of the buckets that exist, in byte order, as the keys of out
 * (values empty): through the batch tx (its own writes included; caller
 * holds the lock) or a view. */
int bk_tx_buckets(bk_backend *be, bk_result *out, bk_error *err);
int bk_view_buckets(bk_view *v, bk_result *out, bk_error *err);

/* Commit everything written before the call, durably (BK_ELOCKED in a
 * section of the calling thread). */
int bk_force_commit(bk_backend *be, bk_error *err);
/* The same in steps, for a caller that waits in slices (as the Lua binding
 * does, to answer Ctrl-C): bk_request_commit queues what is pending; then
 * bk_commit_wait_for waits at most `seconds` (< 0: no limit) and returns 0
 * while the commit goes on, else 1 with its outcome in *rc: BK_OK once
 * committed, or the error of an attempt begun after the request. Writers
 * are not held meanwhile. */
typedef struct bk_commit_ticket {
    uint64_t target, begun;
} bk_commit_ticket;
int bk_request_commit(bk_backend *be, bk_commit_ticket *t, bk_error *err);
int bk_commit_wait_for(bk_backend *be, const bk_commit_ticket *t, double seconds, int *rc,
                       bk_error *err);

/* A consistent view as of the call: every unlocked write, nothing later.
 * Closed views are kept for reuse: opening one allocates nothing. */
int bk_view_open(bk_backend *be, bk_view **out, bk_error *err);
int bk_view_range(bk_view *v, bk_slice bucket, bk_slice from,
                  const bk_slice *to, int64_t limit, bk_result *out,
                  bk_error *err);
/* Any query (q NULL: as bk_view_buckets). */
int bk_view_read(bk_view *v, const bk_query *q, bk_result *out, bk_error *err);
/* BK_OK while the view can be read; BK_EINVALID or BK_ECLOSED after. */
int bk_view_check(bk_view *v, bk_error *err);
void bk_view_close(bk_view *v);

/* Point-in-time snapshot of the committed data (commits first). */
int bk_snapshot_open(bk_backend *be, bk_snapshot **out, bk_error *err);
uint64_t bk_snapshot_size(const bk_snapshot *s);
int bk_snapshot_check(bk_snapshot *s, bk_error *err);
/* Copy bytes [off, off+len) of the snapshot file to fd at its position. */
int bk_snapshot_copy_fd(bk_snapshot *s, int fd, uint64_t off, size_t len,
                        bk_error *err);
/* Read bytes [off, off+len) of the snapshot file into buf. */
int bk_snapshot_read(bk_snapshot *s, uint64_t off, void *buf, size_t len,
                     bk_error *err);
void bk_snapshot_close(bk_snapshot *s);
/* The names of the snapshot's buckets, in byte order (as bk_hash walks
 * them), as the keys of out (values empty). */
int bk_snapshot_buckets(bk_snapshot *s, bk_result *out, bk_error *err);
/* fn(ctx, key, value) for each entry of the snapshot's bucket in key order,
 * from `from` on (after: past it; from.len == 0: from the first). fn's
 * non-zero return stops the walk and is returned as it is; else BK_OK once
 * the bucket ends (a bucket not in the snapshot has no entries). The
 * snapshot's txn is held meanwhile: walk in bounded steps, resuming after
 * the last key. */
typedef int (*bk_entry_fn)(void *ctx, bk_slice key, bk_slice value);
int bk_snapshot_scan(bk_snapshot *s, bk_slice bucket, bk_slice from, int after,
                     bk_entry_fn fn, void *ctx, bk_error *err);

/* CRC-32C of every bucket name, key and value, as etcd's Hash; ignores is
 * an array of n (bucket, key) pairs: 2*n slices. */
int bk_hash(bk_backend *be, const bk_slice *ignores, size_t n,
            uint32_t *out, bk_error *err);

/* Defrag: the database rewritten compactly into a new file that replaces
 * it, while writes, commits and reads go on (defrag.c says how). Only the
 * committer pauses, for the swap; views and snapshots opened before it
 * keep reading the old file, which stays open until the last of them
 * closes. One at a time per backend. */
typedef struct bk_defrag_job bk_defrag_job;
typedef struct bk_defrag_result {
    uint64_t size_before, size_after;   /* bytes */
    double seconds;
    double pause_seconds;   /* the longest any bk_lock/bk_unlock waited
                               because of it (for room, while the committer
                               paused): 0 if none did */
    double swap_seconds;    /* how long the committer paused */
} bk_defrag_result;
/* Starts one on a thread of its own and returns at once; *job is the
 * caller's (bk_defrag_job_free). BK_EBUSY while one runs. */
int bk_defrag_start(bk_backend *be, bk_defrag_job **job, bk_error *err);
int bk_defrag_done(bk_defrag_job *job);
/* Bytes of the source's bucket pages copied so far, and in all (0, 0
 * before the copy starts; the catch-up after it is not counted). */
void bk_defrag_progress(bk_defrag_job *job, uint64_t *copied, uint64_t *total);
/* Waits for the end: its result, or its error (BK_ECANCELED if cancelled;
 * the old file is then still the database). Any thread, any number. */
int bk_defrag_wait(bk_defrag_job *job, bk_defrag_result *res, bk_error *err);
/* Waits at most `seconds` for the end: whether it has ended (then
 * bk_defrag_wait returns at once). */
int bk_defrag_wait_for(bk_defrag_job *job, double seconds);
/* Asks it to stop before its swap; returns at once (bk_defrag_wait). */
void bk_defrag_cancel(bk_defrag_job *job);
/* Drops the caller's reference; a running defrag goes on (bk_close
 * cancels it). */
void bk_defrag_job_free(bk_defrag_job *job);
/* Commit what is pending (bk_force_commit), start and wait: once it
 * returns, everything written before is durable. res may be NULL. */
int bk_defrag(bk_backend *be, bk_defrag_result *res, bk_error *err);

/* A temporary file to be renamed onto `target` (defrag, a snapshot written
 * to a path, an import): made in a private directory beside the target,
 * "<target>.backend-tmp.XXXXXX", that holds our marker file, flocked while
 * its owner lives. Leftovers whose owner died go at the next bk_tmp_create
 * for the same target and at a writable bk_open of it; nothing else beside
 * a database is ever removed. */
typedef struct bk_tmp {
    char dir[PATH_MAX];
    char file[PATH_MAX];     /* create the temporary file here */
    int markfd;
} bk_tmp;
int bk_tmp_create(bk_tmp *t, const char *target, bk_error *err);
/* Renames the file onto target, which must not exist (else BK_EARG,
 * "... already exists"), and fsyncs target's directory. */
int bk_tmp_publish(bk_tmp *t, const char *target, bk_error *err);
/* Removes the directory with what we put in it; idempotent. */
void bk_tmp_discard(bk_tmp *t);
int bk_stats_get(bk_backend *be, bk_stats *st, bk_error *err);

/* Committed value straight from LMDB, bypassing buffers (for tests). */
/* Commit, then the stats of every bucket in LMDB, in name order, into
 * out[0 .. *n - 1] (BK_MAX_BUCKETS entries always suffice). */
int bk_bucket_stats(bk_backend *be, bk_bucket_stat *out, size_t cap, size_t *n,
                    bk_error *err);
int bk_committed_get(bk_backend *be, bk_slice bucket, bk_slice key,
                     bk_result *out, bk_error *err);

/* Log messages queued by any thread, delivered by the owner's thread. */
typedef struct bk_log_entry {
    const char *level;       /* "debug", "info", "warn", "error" */
    char message[256];
} bk_log_entry;
/* Pop the oldest queued entry; returns 0 when the queue is empty. */
int bk_log_pop(bk_backend *be, bk_log_entry *out);

uint32_t bk_crc32c(uint32_t crc, const void *data, size_t len);

/* Whether the file at fd starts with an LMDB meta page: a database of ours
 * (not, say, an etcd file). */
int bk_is_lmdb_file(int fd);

/* The LMDB library this core runs on: its version, and its key limit (the
 * same for every environment of a build; 0 if it cannot be asked). */
void bk_lmdb_version(int *major, int *minor, int *patch);
size_t bk_lmdb_max_key_size(void);

/* Called after each chunk (8 MiB) of a snapshot written out: done and total
 * count bytes. Its non-zero return stops the write and is returned as it
 * is, err untouched. */
typedef int (*bk_progress_fn)(void *ctx, uint64_t done, uint64_t total);
/* The whole snapshot file to fd at its position; progress may be NULL. */
int bk_snapshot_write_fd(bk_snapshot *s, int fd, bk_progress_fn progress, void *ctx,
                         bk_error *err);
/* The whole snapshot file as a NEW file at path (BK_EEXIST if anything is
 * there, a link too: it may be the database itself, which truncating would
 * corrupt under its readers), made beside it (bk_tmp), fsync'd and renamed
 * into place; on any failure nothing is left at path. */
int bk_snapshot_write_path(bk_snapshot *s, const char *path, bk_progress_fn progress,
                           void *ctx, bk_error *err);

#pragma GCC visibility pop

#endif
