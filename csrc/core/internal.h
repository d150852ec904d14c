/* internal.h: the structures the core's files share; not part of the API
 * (only csrc/core includes it: the other layers see backend.h and util.h).
 *
 * The state readers see is a `version`: one LMDB read txn over committed
 * data (a `gen`) plus the memtables not yet committed in it, newest first.
 * A reader takes a reference to the current version and its own sequence
 * number; writers only append to the newest memtable, the committer only
 * swaps in new versions, so a reader's view never changes and never copies.
 *
 * The files, each over the ones it calls (scripts/layers-check.lua keeps
 * the graph acyclic), and the sections below in the same order:
 *   util, crc32c, memtable, meta   helpers and formats, calling no other file
 *   reaper      the thread that frees what would stall its last user
 *   mdbenv      an LMDB environment, refcounted
 *   handle      the handle's references and closed state
 *   files       the data and lock files, temporary directories
 *   bucket      the bucket registry, name checks, bk_each_bucket
 *   version     gens and versions
 *   children    the views and snapshots listed for invalidation
 *   batch       the batch tx: sections, rotation into the commit queue
 *   env         the LMDB environment: open, reopen, grow, read txns
 *   committer   the thread that applies queued batches
 *   backend     open and close
 *   read        merged reads, views, results
 *   snapshot    snapshots, walks over committed data
 *   hash, defrag, stats   what uses all of the above (defrag: online)
 *
 * Lock order, the one place it is written: batch lock (a flag) > defrag_mu >
 * txn_mu > maplock > ver_mu > gen->mu; cmu, views_mu, log_mu, reg_mu,
 * hist_mu, pool.mu, a defrag job's mu and the reaper's mu are leaves. */
#ifndef INTERNAL_H
#define INTERNAL_H

#include "backend.h"
#include "memtable.h"
#include "util.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/types.h>

#pragma GCC visibility push(hidden)   /* as in backend.h */

/* A batch is queued once its arena holds this share of max_buffered_bytes,
 * and a commit takes at most this share (see committer_main). */
#define BK_BUFFER_SHARE 4
#define BK_HASH_SLOTS 2048         /* bucket-name hash table, > 2 * max */
#define BK_DROPPED_MAX (64u << 20) /* rolled-back bytes the active memtable may keep */
/* The largest value LMDB can write: its overflow pages go out in one
 * write(2), which Linux caps at 0x7ffff000 bytes (a short write: EIO). */
#define BK_WRITE_MAX 0x7ffff000u
#define BK_PAGE_HEADER 16          /* LMDB's PAGEHDRSZ, before an overflow value */

/* ---- the shared structures, each under the file that owns it ---- */

/* bucket.c */
typedef struct bk_bucket {
    char *name;                    /* any bytes */
    size_t len;
    char *dbname;                  /* its LMDB name: escaped, a C string */
    uint32_t id;
    int writer_exists;             /* as the batch tx sees it (lock held) */
} bk_bucket;

/* mdbenv.c: an LMDB environment and the bucket handles opened in it. The
 * backend holds its current one and each gen the one its txn is in, so a
 * file that defrag replaced stays mapped until the last view or snapshot
 * reading it closes. */
typedef struct bk_env {
    int refs;                      /* atomic */
    MDB_env *mdb;
    int datafd, lockfd;            /* a replaced pair's flocked descriptors,
                                      closed with it; else -1 */
    dev_t dev;                     /* the data file's identity, to tell */
    ino_t ino;                     /* when another is renamed over it */
    MDB_dbi dbis[BK_MAX_BUCKETS + 1];   /* by bucket id, the committer's
                                      (under txn_mu); 0 = not in LMDB */
} bk_env;

/* version.c */
typedef struct gen {
    int refs;                      /* atomic */
    bk_env *env;                   /* the txn's; a reference */
    MDB_txn *txn;
    pthread_mutex_t mu;            /* one thread at a time in the txn */
    uint64_t txnid;
    uint64_t last_mt_id;           /* memtables up to this id are in it */
    uint32_t ndbis;
    MDB_dbi *dbis;                 /* by bucket id; 0 = not in this state */
} gen;

typedef struct version {
    int refs;                      /* atomic */
    gen *g;
    int hosted;                    /* lives in mts[0]'s arena */
    int nmt;
    memtable *mts[];               /* newest first */
} version;

/* children.c (views: read.c, snapshots: snapshot.c). Views and snapshots:
 * listed in their backend so that close and defrag
 * can end their LMDB txns. The link is each one's first member. */
typedef struct bk_child {
    struct bk_child *prev, *next;
    int is_snapshot;
} bk_child;

struct bk_view {
    bk_child link;
    bk_backend *be;
    version *v;                    /* NULL once invalidated */
    uint64_t seq;
    int invalid;                   /* BK_EINVALID or BK_ECLOSED */
};

struct bk_snapshot {
    bk_child link;
    bk_backend *be;
    gen *g;                        /* pins the pages; NULL once invalid */
    int invalid;
    uint64_t size;
    size_t psize;
    char *meta;                    /* the first two pages, as written */
    double opened;
};

/* batch.c: a write of the open section, for rollback: the node, and for a bucket
 * event whether the bucket existed before it. */
typedef struct bk_undo {
    mt_node *node;
    int existed;
} bk_undo;

/* util.c: the log queue */
typedef struct log_node {
    bk_log_entry e;
    struct log_node *next;
} log_node;

/* util.c: the process a backend or a defrag job belongs to: it was made there. */
typedef struct bk_process {
    unsigned forks;   /* the process's fork count then */
    pid_t pid;
} bk_process;

/* A backend: its fields are grouped by the file that owns them. */
struct bk_backend {
    int refs;                      /* atomic: handle + views + snapshots */
    int closed;                    /* atomic: 1 closed, 2 failed (bk_set_failed) */
    bk_process process;            /* the process that opened it */
    bk_config cfg;
    char *path, *lockpath;
    bk_env *env;                   /* the current one (under txn_mu) */
    unsigned env_flags;
    int lockfd;                    /* flocked by a writer (files.c) */
    int datafd;                    /* the data file: flocked by a writer, and
                                      by a reader of a hard-linked file; else -1 */
    dev_t dev;                     /* the data file's identity, under files.c's */
    ino_t ino;                     /* mutex of open files */
    struct bk_backend *open_next;  /* in that list */
    size_t psize, maxkey;

    /* bucket registry: entries never move or die until bk_free */
    pthread_mutex_t reg_mu;        /* serialises registration */
    bk_bucket *buckets[BK_MAX_BUCKETS + 1];   /* by id, from 1 */
    uint32_t nbuckets;             /* atomic */
    uint32_t slots[BK_HASH_SLOTS]; /* atomic ids; 0 = empty */

    /* the batch tx */
    pthread_mutex_t lock_mu;
    pthread_cond_t lock_cv;
    int locked;                    /* atomic; changed under lock_mu */
    pthread_t owner;               /* atomic; stored before locked is set */
    int stopped;
    memtable *active;              /* writes go here (lock held) */
    uint64_t seq;                  /* last sequence number given out */
    uint64_t visible_seq;          /* atomic: published at unlock */
    uint64_t active_writes;        /* atomic: pending in active */
    int rotate_requested;          /* atomic: committer asks unlock */
    bk_undo *undo;                 /* the open section's writes (lock held) */
    size_t nundo, undo_cap;
    uint64_t rollbacks;            /* atomic */
    uint64_t backpressure_waits, backpressure_ns;   /* atomic */

    /* versions */
    pthread_mutex_t ver_mu;
    version *cur;

    /* commit pipeline */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;            /* wakes the committer */
    pthread_cond_t done_cv;        /* wakes waiters for commits */
    memtable *qhead, *qtail;       /* batches waiting, oldest first, by qnext */
    int nqueue;
    uint64_t queued_bytes;         /* atomic: their arena bytes (changed under cmu) */
    uint64_t active_bytes;         /* atomic: the active batch's, as of its last section */
    mt_pool pool;                  /* arena blocks for new batches */
    uint64_t next_mt_id;
    uint64_t committed_id;         /* newest memtable id in LMDB */
    uint64_t queued_writes;
    uint64_t attempts;             /* commit attempts begun so far */
    uint64_t failures;             /* failed commit attempts so far */
    uint64_t failed_attempt;       /* the number of the last failed attempt */
    bk_error last_err;             /* of the last failed attempt */
    int kick, stop;
    int committer_running;
    pthread_t committer;
    pthread_mutex_t txn_mu;        /* held around LMDB write txns */
    pthread_rwlock_t maplock;      /* readers of the map vs remap/swap */
    memtable **log;                /* committed since bk_commit_log_start */
    int nlog, log_cap, logging;    /* (under txn_mu) */
    int log_failed;                /* no memory to log one: the log is incomplete */

    /* views and snapshots, for invalidation */
    pthread_mutex_t views_mu;
    bk_child *children;
    uint64_t open_views;           /* atomic loads; changed under views_mu */
    bk_view *view_pool;            /* closed views, linked by link.next */
    int npool;

    /* stats (atomics) */
    uint64_t commits, size, size_in_use, map_size, map_grows;
    double last_commit_s, total_commit_s, defrag_s, snapshot_s;
    pthread_mutex_t hist_mu;
    bk_hist commit_hist, defrag_hist, snapshot_hist;

    /* defrag.c */
    pthread_mutex_t defrag_mu;     /* the job slot; before txn_mu */
    gen *defrag_src;               /* what a defrag copies (under txn_mu):
                                      a reopen ends its txn too */
    struct bk_defrag_job *defrag_job;   /* the last one started, until joined */
    int defrag_inflight;           /* atomic */
    int defrag_pausing;            /* atomic: the committer is paused for a swap */
    uint64_t defrag_pauses;        /* atomic: swaps begun */
    uint64_t defrag_pause_max_ns;  /* atomic: the longest writer wait in one */

    /* log queue */
    pthread_mutex_t log_mu;
    log_node *log_head, *log_tail;
    int log_len;                   /* atomic loads; changed under log_mu */
};

/* ---- util.c (beside util.h's) ---- */
/* pthread_atfork(prepare, parent, child) unless *done (set once it
 * succeeded: a failure is tried again at the next call). */
int bk_atfork_once(int *done, void (*prepare)(void), void (*parent)(void),
                   void (*child)(void), bk_error *err);
/* Makes o this process's. */
int bk_process_claim(bk_process *o, bk_error *err);
/* o is another process's, which forked this one. */
int bk_process_foreign(const bk_process *o);
/* BK_ECLOSED: "<what> belongs to process N ...". */
int bk_process_fail(const bk_process *o, const char *what, bk_error *err);
/* be was opened by another process, which forked this one. */
int bk_foreign(const bk_backend *be);
int bk_mdb_fail(bk_error *err, int rc, const char *what);
/* An LMDB failure to write: a short write (EIO) on a full disk is reported
 * as the disk being full. */
int bk_write_fail(const bk_backend *be, bk_error *err, int rc, const char *what);
void bk_log(bk_backend *be, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void bk_hist_init(bk_hist *h, double first, int n);
void bk_hist_observe(bk_backend *be, bk_hist *h, double seconds);
/* LMDB takes non-const pointers for data it only reads. */
#define BK_UNCONST(p) ((void *)(uintptr_t)(p))

/* ---- meta.c: LMDB's meta pages (pages 0 and 1 of the file) ---- */
#define BK_LMDB_MAGIC 0xBEEFC0DEu
#define BK_LMDB_VERSION 1u   /* mdb.c's MDB_DATA_VERSION; LMDB refuses any other */
#define BK_META_HEAD 152   /* the bytes of a meta page that bk_meta_parse reads */
typedef struct bk_meta {
    uint32_t magic, version, psize;
    uint16_t free_flags, main_flags;   /* the freelist's and main tree's md_flags */
    uint64_t free_root, main_root;   /* page numbers; ~0: an empty tree */
    uint64_t last_pg, txnid;         /* last_pg: allocated, maybe never written */
} bk_meta;
void bk_meta_parse(const void *page, bk_meta *m);
/* The slot (0, 1) of the newer valid meta in a pair of pages, or -1. */
int bk_meta_newest(const void *pair, size_t psize);
/* Both pages of the pair describe slot `newest`'s state, as txn txnid. */
void bk_meta_pair(void *pair, size_t psize, int newest, uint64_t txnid);
/* The LMDB file at fd (size bytes) holds every page its newest state uses,
 * and the root and freelist pages read on the way are sound: 0, or -1 with
 * why[] saying what is wrong. */
int bk_pages_check(int fd, uint64_t size, char *why, size_t whylen);

/* ---- handle.c ---- */
/* BK_ECLOSED, saying why: closed, or another process's. */
int bk_closed_fail(const bk_backend *be, bk_error *err);
/* The database could not be reopened: every call now says the backend is
 * closed, and bk_close still releases it. */
void bk_set_failed(bk_backend *be);

/* ---- files.c: the data file and its lock file ---- */
/* Opens and checks them, takes the locks, registers the file as open in
 * this process; sets path, lockpath, datafd, lockfd and MDB_NOLOCK when a
 * read-only file system has no room for a lock file. */
int bk_files_open(bk_backend *be, bk_error *err);
/* Releases what bk_files_open took (closes datafd and lockfd). */
void bk_files_close(bk_backend *be);
/* Read-only: the writer renamed a new file over ours; check it before it is
 * mapped. */
int bk_files_check_replaced(bk_backend *be, bk_error *err);
/* Is the file of this identity the one opened, or the last one checked? */
int bk_files_checked(bk_backend *be, dev_t dev, ino_t ino);
/* Defrag: the file at `from` (the new data or lock file) will be renamed
 * over ours. *fd gets a descriptor of it, flocked, so that no other writer
 * can take it. */
int bk_files_lock_new(const char *from, int *fd, bk_error *err);
/* After those renames: the new pair's descriptors are ours, the old ones
 * are returned (the caller closes them once the old file is unmapped). */
void bk_files_swapped(bk_backend *be, int datafd, int lockfd, int *old_datafd,
                      int *old_lockfd);
/* Removes the temporary directories beside target (bk_tmp_create's) whose
 * owner died; returns how many. */
int bk_tmp_sweep(const char *target);

/* ---- bucket.c ---- */
bk_bucket *bk_bucket_find(bk_backend *be, const void *name, size_t len);
bk_bucket *bk_bucket_register(bk_backend *be, const void *name, size_t len,
                              bk_error *err);
size_t bk_dbname_len(const void *name, size_t len);
/* The bucket a main-database key names; *name gets its name when it is
 * well-formed (else NULL and name.len == 0). */
bk_bucket *bk_bucket_by_dbname(bk_backend *be, const void *dbname, size_t len,
                               bk_slice *name, char buf[512]);
int bk_check_key(const bk_backend *be, const char *what, bk_slice s,
                 bk_error *err);
/* fn(ctx, b, name) for each key of txn's main database that is a bucket
 * name we could have made, in name order (the escape keeps byte order);
 * b is its registry entry, NULL if not registered. Stops at fn's first
 * non-zero return and returns it; else 0 or the LMDB code. */
typedef int (*bk_bucket_fn)(void *ctx, bk_bucket *b, bk_slice name);
int bk_each_bucket(bk_backend *be, MDB_txn *txn, bk_bucket_fn fn, void *ctx);

/* ---- version.c ---- */
version *bk_version_get(bk_backend *be);
void bk_version_unref(version *v);
void bk_gen_unref(gen *g);
/* A version over g with the memtables of `from` newer than g, plus `push`
 * in front when given. Takes new references. */
version *bk_version_make(gen *g, const version *from, memtable *push);
/* Replace the current version by one over g (NULL: the current gen) and
 * the current memtables newer than it, push in front: 0, or -1 (memory). */
int bk_version_update(bk_backend *be, gen *g, memtable *push);
void bk_version_install(bk_backend *be, version *v);
int bk_gen_make(bk_backend *be, bk_env *env, MDB_txn *txn, uint64_t last_mt_id, gen **out,
                bk_error *err);

/* ---- children.c ---- */
/* A child's invalid field (BK_EINVALID, BK_ECLOSED or 0) as an error naming
 * it as `what` ("read tx", "snapshot"). */
int bk_child_check(const int *invalid, const char *what, bk_error *err);
/* Ends every view's and snapshot's txn (caller holds maplock for writing). */
void bk_invalidate_children(bk_backend *be, int code);
void bk_child_attach(bk_backend *be, bk_child *c, int is_snapshot);
void bk_child_detach(bk_backend *be, bk_child *c);
/* The same, for a caller holding views_mu. */
void bk_child_link(bk_backend *be, bk_child *c, int is_snapshot);
void bk_child_unlink(bk_backend *be, bk_child *c);

/* ---- batch.c ---- */
/* BK_ELOCKED if the calling thread holds the batch lock: what commits
 * must not (a locked section is never committed). */
int bk_not_in_section(bk_backend *be, bk_error *err);
/* BK_OK if the batch tx is usable and the calling thread holds its lock. */
int bk_tx_held(bk_backend *be, bk_error *err);
/* Take and drop the batch lock's flag; caller holds lock_mu. */
void bk_lock_take(bk_backend *be);
void bk_lock_drop(bk_backend *be);
/* Queue the active batch for the committer (batch lock held). */
int bk_rotate(bk_backend *be, bk_error *err);
/* Takes the batch lock (between sections), queues the active batch and
 * waits until it is in LMDB; on success the lock stays taken, so that no
 * section starts after (bk_commit, and bk_close until it is closed). */
int bk_commit_holding(bk_backend *be, bk_error *err);

/* ---- reaper.c ---- */
/* run(arg) on the reaper thread, soon; on this thread if it cannot be
 * queued. Every job runs before the library is unloaded, in this process
 * only (a forked child drops them). run must take no lock that a caller of
 * bk_reap or bk_reap_wait may hold: it may run on the caller's thread, and
 * bk_reap_wait waits for it; and it must not call bk_reap_wait (it would
 * wait for itself) or fork (the child would be left in the reaper's loop). */
void bk_reap(void (*run)(void *), void *arg);
/* Returns when every job this process queued before the call has run. */
void bk_reap_wait(void);

/* ---- mdbenv.c ---- */
/* A new environment of `path` with the backend's limits; the caller has
 * its one reference. */
int bk_env_create(const bk_backend *be, const char *path, unsigned flags, size_t map_size,
                  bk_env **out, bk_error *err);
/* The last reference closes it, and the descriptors it keeps: a replaced
 * file's on the reaper thread. */
void bk_env_unref(bk_env *e);

/* ---- env.c ---- */
/* Opens be->env on the data file, with the buckets it holds and a version
 * over it. */
int bk_env_open(bk_backend *be, bk_error *err);
void bk_env_close(bk_backend *be);
/* Close and open the environment again (LMDB gave up on it); on failure
 * the backend has failed. Caller holds txn_mu and maplock for writing. */
int bk_env_reopen(bk_backend *be, const char *why, bk_error *err);
/* After a failed commit: reopen the environment if LMDB gave up on it. */
void bk_env_check(bk_backend *be);
int bk_map_grow(bk_backend *be, bk_error *err);
/* mdb_txn_begin(MDB_RDONLY), clearing dead processes' slots when full. */
int bk_read_txn_begin(MDB_env *env, MDB_txn **txn);
/* A gen over the newest committed state (caller holds txn_mu). */
int bk_gen_open(bk_backend *be, uint64_t last_mt_id, gen **out, bk_error *err);
/* The stats' size and size in use, as g sees the file. */
void bk_sizes_update(bk_backend *be, gen *g);
/* Read-only: catch up with the other process's writer. */
int bk_readonly_refresh(bk_backend *be, bk_error *err);
/* The gen holding everything committed so far (caller holds txn_mu). */
int bk_fresh_gen(bk_backend *be, gen **out, bk_error *err);

/* ---- committer.c ---- */
int bk_committer_start(bk_backend *be, bk_error *err);
void bk_committer_stop(bk_backend *be, int drop);
/* The batches mts[0..nm), oldest first, applied to env in one write txn,
 * committed: 0, or the LMDB code (txn aborted, the handles it opened or
 * dropped forgotten). */
int bk_apply_batches(bk_backend *be, bk_env *env, memtable *const *mts, int nm);
/* The commit log: from its start every group the committer commits is
 * kept, in commit order, until taken; all three with txn_mu held. */
void bk_commit_log_start(bk_backend *be);
/* The batches logged since the last take, in *mts (the caller's, with a
 * reference each: bk_batches_release) and *n; -1 if there was no memory
 * to log one (the log is incomplete). */
int bk_commit_log_take(bk_backend *be, memtable ***mts, int *n);
void bk_commit_log_stop(bk_backend *be);
void bk_batches_release(memtable **mts, int n);

/* ---- defrag.c ---- */
/* Cancels a running defrag job and joins its thread (bk_close). */
void bk_defrag_stop(bk_backend *be);

/* ---- read.c ---- */
int bk_result_append(bk_result *r, const void *k, size_t klen,
                     const void *v, size_t vlen);

/* ---- snapshot.c ---- */
/* Commit (or, read-only, catch up), then fn(be, g, ctx) on a gen holding
 * everything committed, with g->mu held: fn's non-zero LMDB code is
 * reported as `what` failing. */
typedef int (*bk_gen_visit)(bk_backend *be, gen *g, void *ctx);
int bk_visit_committed(bk_backend *be, bk_gen_visit fn, void *ctx, const char *what,
                       bk_error *err);

#pragma GCC visibility pop

#endif
