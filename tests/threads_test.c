/* threads_test.c: one writer keeps an invariant while readers check it in
 * their views, a snapshot thread checks that snapshots stay put, and the
 * committer thread commits in the background all along (batch_interval
 * 0.001 s, batch_limit 50); once more with defrags in the middle, and
 * once with a small max_buffered_bytes, so that the writer waits for
 * commits in lock() (backpressure) while all that goes on.
 *
 * The writer's sections: bucket b has "counter" = the number of "log/<n>"
 * keys, which are consecutive numbers (added at the end, deleted from the
 * front), and "total" = the number of sections; bucket c, dropped and made
 * again every 10th section, has "x" = total. */
#include "test.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <time.h>

enum { READERS = 4 };

static bk_slice S(const char *s)
{
    bk_slice x = { s, strlen(s) };
    return x;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

static int not_found(bk_error *err)
{
    err->code = BK_EIO;
    snprintf(err->msg, sizeof err->msg, "key b/k not found");
    return BK_EIO;
}

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void cfg_init(bk_config *cfg, const char *path)
{
    bk_config_default(cfg);
    cfg->path = path;
    cfg->no_fsync = 1;
    cfg->mmap_size = (uint64_t)1 << 20;   /* grows while everything runs */
    cfg->batch_interval = 0.001;
    cfg->batch_limit = 50;
}

/* ---- the invariant ---- */

typedef struct state {
    uint64_t live, total, x;   /* counter, total, c/x */
    uint64_t n, first;         /* log keys: how many, the first number */
    int ordered;               /* log keys consecutive, values = keys */
    uint32_t crc;              /* of everything read */
} state;

static int get_num(bk_view *v, const char *bucket, const char *key, bk_result *r,
                   uint64_t *out, bk_error *err)
{
    int rc = bk_view_range(v, S(bucket), S(key), NULL, 0, r, err);
    if (rc)
        return rc;
    char buf[32] = "";
    if (r->count == 1) {
        bk_slice val = bk_result_value(r, 0);
        size_t n = val.len < sizeof buf - 1 ? val.len : sizeof buf - 1;
        memcpy(buf, val.data, n);
        buf[n] = 0;
    }
    *out = r->count == 1 ? strtoull(buf, NULL, 10) : UINT64_MAX;
    return BK_OK;
}

static int read_state(bk_view *v, bk_result *r, state *st, bk_error *err)
{
    int rc;
    memset(st, 0, sizeof *st);
    if ((rc = get_num(v, "b", "counter", r, &st->live, err)) ||
        (rc = get_num(v, "b", "total", r, &st->total, err)) ||
        (rc = get_num(v, "c", "x", r, &st->x, err)))
        return rc;
    bk_slice to = S("log0");
    if ((rc = bk_view_range(v, S("b"), S("log/"), &to, 0, r, err)))
        return rc;
    st->n = r->count;
    st->ordered = 1;
    st->crc = bk_crc32c(0, &st->live, sizeof st->live);
    st->crc = bk_crc32c(st->crc, &st->total, sizeof st->total);
    for (size_t i = 0; i < r->count; i++) {
        bk_slice k = bk_result_key(r, i), val = bk_result_value(r, i);
        char buf[32];
        size_t n = k.len < sizeof buf - 1 ? k.len : sizeof buf - 1;
        memcpy(buf, k.data, n);
        buf[n] = 0;
        uint64_t id = strtoull(buf + 4, NULL, 10);
        if (i == 0)
            st->first = id;
        if (id != st->first + i || val.len != k.len || memcmp(val.data, k.data, k.len))
            st->ordered = 0;
        st->crc = bk_crc32c(st->crc, k.data, k.len);
    }
    return BK_OK;
}

/* Reports (once) what is wrong with st. */
static int consistent(const state *st, const char *who)
{
    int ok = st->live == st->n && st->x == st->total && st->ordered &&
             st->total != UINT64_MAX;
    if (!CHECK(ok) && __atomic_load_n(&t_failed, __ATOMIC_RELAXED) <= 50)
        fprintf(stderr, "  %s: inconsistent: counter %llu, %llu log keys (ordered %d), "
                "total %llu, c/x %llu\n", who, (unsigned long long)st->live,
                (unsigned long long)st->n, st->ordered, (unsigned long long)st->total,
                (unsigned long long)st->x);
    return ok;
}

/* ---- the threads ---- */

typedef struct shared {
    bk_backend *be;
    int stop;                  /* atomic */
    int defrags;               /* defrag runs in the middle */
    uint64_t total;            /* atomic: sections the writer finished */
    uint64_t reads, views, snaps, copies;   /* atomic */
} shared;

static void add(uint64_t *p, uint64_t n)
{
    __atomic_add_fetch(p, n, __ATOMIC_RELAXED);
}

static int stopped(shared *sh)
{
    return __atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE);
}

static void *writer_main(void *arg)
{
    shared *sh = arg;
    bk_backend *be = sh->be;
    bk_error err;
    bk_result r;
    uint64_t n = 0, next = 1, oldest = 1, live = 0;
    uint32_t seed = 12345;
    char key[32], val[32];
    bk_result_init(&r);
    while (!stopped(sh)) {
        if (n % 7 == 0) {
            /* A section that breaks every invariant, rolled back: no reader
             * may see any of it, while they read on other threads. */
            if (!CHECK_OK(bk_lock(be, &err)))
                break;
            CHECK_OK(bk_put(be, S("b"), S("counter"), S("999999"), &err));
            CHECK_OK(bk_put(be, S("b"), S("log/9999999999"), S("stray"), &err));
            CHECK_OK(bk_delete(be, S("b"), S("total"), &err));
            CHECK_OK(bk_delete_bucket(be, S("c"), &err));
            CHECK_OK(bk_rollback(be, NULL, &err));
        }
        if (!CHECK_OK(bk_lock(be, &err)))
            break;
        n++;
        if (n % 10 == 0) {
            CHECK_OK(bk_delete_bucket(be, S("c"), &err));
            CHECK_OK(bk_create_bucket(be, S("c"), &err));
        }
        if (live < 300 || xorshift(&seed) % 2) {
            snprintf(key, sizeof key, "log/%010llu", (unsigned long long)next++);
            CHECK_OK(bk_put(be, S("b"), S(key), S(key), &err));
            live++;
        } else {
            snprintf(key, sizeof key, "log/%010llu", (unsigned long long)oldest++);
            CHECK_OK(bk_delete(be, S("b"), S(key), &err));
            live--;
        }
        snprintf(val, sizeof val, "%llu", (unsigned long long)live);
        CHECK_OK(bk_put(be, S("b"), S("counter"), S(val), &err));
        snprintf(val, sizeof val, "%llu", (unsigned long long)n);
        CHECK_OK(bk_put(be, S("b"), S("total"), S(val), &err));
        CHECK_OK(bk_put(be, S("c"), S("x"), S(val), &err));
        if (n % 3 == 0) {   /* the batch tx reads its own writes */
            CHECK_OK(bk_tx_range(be, S("c"), S("x"), NULL, 0, &r, &err));
            if (!CHECK(r.count == 1 && bk_result_value(&r, 0).len == strlen(val) &&
                       !memcmp(bk_result_value(&r, 0).data, val, strlen(val))))
                fprintf(stderr, "  writer: section %llu reads c/x %.*s\n", (unsigned long long)n,
                        r.count ? (int)bk_result_value(&r, 0).len : 6,
                        r.count ? (const char *)bk_result_value(&r, 0).data : "absent");
        }
        if (n % 97 == 0)
            CHECK_CODE(bk_force_commit(be, &err), BK_ELOCKED);   /* never a locked section */
        CHECK_OK(bk_unlock(be, &err));
        if (n % 97 == 0)
            CHECK_OK(bk_commit(be, 0, &err));
        __atomic_store_n(&sh->total, n, __ATOMIC_RELEASE);
        if (n % 50 == 0)
            CHECK_OK(bk_force_commit(be, &err));
        if (n % 64 == 0)
            sched_yield();
    }
    bk_result_free(&r);
    return NULL;
}

static void *reader_main(void *arg)
{
    shared *sh = arg;
    bk_error err;
    bk_result r;
    bk_view *v = NULL;
    state first = { 0 }, st;
    uint64_t last_total = 0;
    int uses = 0;
    bk_result_init(&r);
    while (!stopped(sh)) {
        if (!v) {
            if (!CHECK_OK(bk_view_open(sh->be, &v, &err))) {
                v = NULL;
                continue;
            }
            add(&sh->views, 1);
            uses = 0;
        }
        int rc = read_state(v, &r, &st, &err);   /* a defrag never ends a view */
        if (!CHECK_OK(rc))
            break;
        add(&sh->reads, 1);
        consistent(&st, "reader");
        if (uses == 0) {
            /* a later view sees no less than an earlier one */
            if (!CHECK(st.total >= last_total))
                fprintf(stderr, "  reader: new view has total %llu, an older one had %llu\n",
                        (unsigned long long)st.total, (unsigned long long)last_total);
            last_total = st.total;
            first = st;
        } else if (!CHECK(st.crc == first.crc && st.total == first.total)) {
            fprintf(stderr, "  reader: view changed: total %llu then %llu\n",
                    (unsigned long long)first.total, (unsigned long long)st.total);
        }
        if (++uses == 4) {
            bk_view_close(v);
            v = NULL;
        }
    }
    bk_view_close(v);
    bk_result_free(&r);
    return NULL;
}

/* The whole snapshot into a buffer (NULL and *rc set on failure). */
static char *snap_bytes(bk_snapshot *s, int *rc, bk_error *err)
{
    uint64_t size = bk_snapshot_size(s);
    char *buf = malloc(size);
    *rc = BK_OK;
    for (uint64_t off = 0; buf && off < size && !*rc; off += 1 << 20) {
        size_t len = size - off < (1 << 20) ? (size_t)(size - off) : (size_t)1 << 20;
        *rc = bk_snapshot_read(s, off, buf + off, len, err);
    }
    if (*rc) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

/* Copy s to path; BK_OK or the error. */
static int snap_copy(bk_snapshot *s, const char *path, bk_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (!CHECK(fd >= 0))
        return BK_EIO;
    int rc = bk_snapshot_copy_fd(s, fd, 0, bk_snapshot_size(s), err);
    close(fd);
    return rc;
}

/* Open a copy, check its state and that its hash holds still. */
static void check_copy(const char *path, uint64_t max_total, uint32_t *hash)
{
    bk_config cfg;
    bk_backend *cb;
    bk_view *v;
    bk_error err;
    bk_result r;
    state st;
    uint32_t h1 = 0, h2 = 1;
    cfg_init(&cfg, path);
    cfg.mmap_size = (uint64_t)1 << 24;
    cfg.batch_interval = 1;
    if (!CHECK_OK(bk_open(&cfg, &cb, &err)))
        return;
    bk_result_init(&r);
    if (CHECK_OK(bk_view_open(cb, &v, &err))) {
        if (CHECK_OK(read_state(v, &r, &st, &err))) {
            consistent(&st, "snapshot copy");
            CHECK(st.total <= max_total);
        }
        bk_view_close(v);
    }
    CHECK_OK(bk_hash(cb, NULL, 0, &h1, &err));
    CHECK_OK(bk_hash(cb, NULL, 0, &h2, &err));
    CHECK(h1 == h2);
    *hash = h1;
    bk_result_free(&r);
    CHECK_OK(bk_close(cb, 0, &err));
    bk_free(cb);
}

static void remove_db(const char *path)
{
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(path);
    unlink(lock);
}

/* Each snapshot is written out three ways, some time apart while the
 * writer and the committer go on: read into memory, copied twice to an fd.
 * The bytes of pages free in the snapshot may differ (later commits reuse
 * them), but all three must open as the same, consistent database. */
static void *snapshot_main(void *arg)
{
    shared *sh = arg;
    bk_error err;
    int round = 0;
    while (!stopped(sh)) {
        bk_snapshot *s;
        int rc;
        if (!CHECK_OK(bk_snapshot_open(sh->be, &s, &err)))
            continue;
        add(&sh->snaps, 1);
        uint64_t max_total = __atomic_load_n(&sh->total, __ATOMIC_ACQUIRE) + 1;
        char name[3][64];
        const char *paths[3];
        for (int i = 0; i < 3; i++) {
            snprintf(name[i], sizeof name[i], "snap-%d-%d.db", round, i);
            paths[i] = tmp_path(name[i]);
        }
        round++;
        char *bytes = snap_bytes(s, &rc, &err);
        if (!rc) {
            int fd = open(paths[0], O_WRONLY | O_CREAT | O_TRUNC, 0600);
            CHECK(fd >= 0 && write(fd, bytes, bk_snapshot_size(s)) ==
                                 (ssize_t)bk_snapshot_size(s));
            close(fd);
            sleep_s(0.002);
            rc = snap_copy(s, paths[1], &err);
        }
        if (!rc) {
            sleep_s(0.002);
            rc = snap_copy(s, paths[2], &err);
        }
        if (!rc) {
            add(&sh->copies, 3);
            uint32_t h[3] = { 0, 1, 2 };
            for (int i = 0; i < 3; i++)
                check_copy(paths[i], max_total, &h[i]);
            if (!CHECK(h[0] == h[1] && h[1] == h[2]))
                fprintf(stderr, "  snapshot: hashes of its copies differ: %08x %08x %08x\n",
                        h[0], h[1], h[2]);
        }
        CHECK_OK(rc);   /* a defrag never ends a snapshot */
        for (int i = 0; i < 3; i++)
            remove_db(paths[i]);
        free(bytes);
        bk_snapshot_close(s);
    }
    return NULL;
}

static void final_check(bk_backend *be, uint64_t total, uint32_t *hash)
{
    bk_error err;
    bk_view *v;
    bk_result r;
    state st;
    bk_result_init(&r);
    if (CHECK_OK(bk_view_open(be, &v, &err))) {
        if (CHECK_OK(read_state(v, &r, &st, &err))) {
            consistent(&st, "final");
            CHECK(st.total == total);
        }
        bk_view_close(v);
    }
    bk_result_free(&r);
    CHECK_OK(bk_hash(be, NULL, 0, hash, &err));
}

static void run(const char *name, double secs, int defrags, uint64_t max_buffered)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    shared sh;
    pthread_t writer, readers[READERS], snapper;
    cfg_init(&cfg, tmp_path(name));
    cfg.max_buffered_bytes = max_buffered;
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    memset(&sh, 0, sizeof sh);
    sh.be = be;
    sh.defrags = defrags;
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_create_bucket(be, S("c"), &err));
    CHECK_OK(bk_put(be, S("b"), S("counter"), S("0"), &err));
    CHECK_OK(bk_put(be, S("b"), S("total"), S("0"), &err));
    CHECK_OK(bk_put(be, S("c"), S("x"), S("0"), &err));
    CHECK_OK(bk_unlock(be, &err));

    pthread_create(&writer, NULL, writer_main, &sh);
    for (int i = 0; i < READERS; i++)
        pthread_create(&readers[i], NULL, reader_main, &sh);
    pthread_create(&snapper, NULL, snapshot_main, &sh);
    double t0 = now();
    for (int i = 1; i <= defrags; i++) {
        sleep_s(t0 + secs * i / (defrags + 1) - now());
        CHECK_OK(bk_defrag(be, NULL, &err));
    }
    if (defrags) {   /* and one cancelled while the others run */
        bk_defrag_job *job;
        CHECK_OK(bk_defrag_start(be, &job, &err));
        bk_defrag_cancel(job);
        int rc = bk_defrag_wait(job, NULL, &err);
        CHECK(rc == BK_OK || rc == BK_ECANCELED);
        bk_defrag_job_free(job);
    }
    double left = t0 + secs - now();
    if (left > 0)
        sleep_s(left);
    __atomic_store_n(&sh.stop, 1, __ATOMIC_RELEASE);
    pthread_join(writer, NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(readers[i], NULL);
    pthread_join(snapper, NULL);

    CHECK(sh.total > 0 && sh.reads > 0 && sh.snaps > 0);
    uint32_t h1 = 0, h2 = 1;
    final_check(be, sh.total, &h1);
    bk_stats st;
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commit_failures == 0);
    CHECK(st.open_read_tx_n == 0);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    if (CHECK_OK(bk_open(&cfg, &be, &err))) {
        final_check(be, sh.total, &h2);
        CHECK(h1 == h2);
        CHECK_OK(bk_close(be, 0, &err));
        bk_free(be);
    }
    printf("%s: %llu sections, %llu commits, %llu map grows, %llu backpressure waits, "
           "%llu reads in %llu views, %llu snapshots (%llu copied)\n", name,
           (unsigned long long)sh.total, (unsigned long long)st.commits,
           (unsigned long long)st.map_grows, (unsigned long long)st.backpressure_waits,
           (unsigned long long)sh.reads,
           (unsigned long long)sh.views, (unsigned long long)sh.snaps,
           (unsigned long long)sh.copies);
}

/* ---- read-your-writes while the committer swaps versions ---- */

/* Every unlock queues a batch (batch_limit 1), so the writer's version
 * changes race with the committer's. The batch tx must read its own
 * writes, and a view opened after the unlock must see them. */
static void test_read_your_writes(double secs)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    bk_result r;
    cfg_init(&cfg, tmp_path("ryw.db"));
    cfg.batch_limit = 1;
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    bk_result_init(&r);
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_unlock(be, &err));
    uint64_t i = 0, tx_stale = 0, view_stale = 0;
    double end = now() + secs;
    for (; now() < end; i++) {
        char v[24];
        snprintf(v, sizeof v, "%llu", (unsigned long long)i);
        size_t len = strlen(v);
        CHECK_OK(bk_lock(be, &err));
        CHECK_OK(bk_put(be, S("b"), S("k"), S(v), &err));
        CHECK_OK(bk_tx_range(be, S("b"), S("k"), NULL, 0, &r, &err));
        tx_stale += !(r.count == 1 && bk_result_value(&r, 0).len == len &&
                      !memcmp(bk_result_value(&r, 0).data, v, len));
        CHECK_OK(bk_unlock(be, &err));
        bk_view *view;
        if (CHECK_OK(bk_view_open(be, &view, &err))) {
            CHECK_OK(bk_view_range(view, S("b"), S("k"), NULL, 0, &r, &err));
            view_stale += !(r.count == 1 && bk_result_value(&r, 0).len == len &&
                            !memcmp(bk_result_value(&r, 0).data, v, len));
            bk_view_close(view);
        }
    }
    if (!CHECK(tx_stale == 0 && view_stale == 0))
        fprintf(stderr, "  read-your-writes: %llu stale reads in the batch tx, %llu in "
                "views, of %llu sections\n", (unsigned long long)tx_stale,
                (unsigned long long)view_stale, (unsigned long long)i);
    bk_result_free(&r);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

/* ---- views opened and closed at a high rate while defrag swaps the file
 * and commits replace versions ---- */

enum { OPENERS = 3, HELD = 3 };

typedef struct opener_arg {
    bk_backend *be;
    int *stop;                     /* atomic */
    uint64_t ok, failed;
    int code;                      /* of the first failure */
    char msg[384];
} opener_arg;

/* Reads b/k, which is always "v"; BK_OK or the error. */
static int read_k(bk_view *v, bk_result *r, bk_error *err)
{
    int rc = bk_view_range(v, S("b"), S("k"), NULL, 0, r, err);
    if (rc == BK_OK && !(r->count == 1 && bk_result_value(r, 0).len == 1 &&
                         *(const char *)bk_result_value(r, 0).data == 'v'))
        rc = not_found(err);
    return rc;
}

/* Keeps HELD views open, closing the oldest before each open (so closed
 * views are reused at once), and reads through all of them: whatever
 * defrags swapped files meanwhile, every read succeeds. */
static void *opener_main(void *arg)
{
    opener_arg *a = arg;
    bk_error err;
    bk_result r;
    bk_view *held[HELD] = { NULL };
    bk_result_init(&r);
    for (unsigned n = 0; !__atomic_load_n(a->stop, __ATOMIC_ACQUIRE); n++) {
        unsigned slot = n % HELD;
        bk_view_close(held[slot]);
        held[slot] = NULL;
        int rc = bk_view_open(a->be, &held[slot], &err);
        for (unsigned i = 0; i < HELD && rc == BK_OK; i++)
            if (held[i])
                rc = read_k(held[i], &r, &err);
        if (rc == BK_OK) {
            a->ok++;
        } else if (a->failed++ == 0) {
            a->code = rc;
            snprintf(a->msg, sizeof a->msg, "%s", err.msg);
        }
    }
    for (unsigned i = 0; i < HELD; i++)
        bk_view_close(held[i]);
    bk_result_free(&r);
    return NULL;
}

/* Puts and commits, so versions are replaced under the views. */
static void *committing_writer(void *arg)
{
    opener_arg *a = arg;
    bk_error err;
    char key[32];
    for (unsigned n = 0; !__atomic_load_n(a->stop, __ATOMIC_ACQUIRE); n++) {
        snprintf(key, sizeof key, "n%u", n % 1000);
        if (!CHECK_OK(bk_lock(a->be, &err)))
            break;
        CHECK_OK(bk_put(a->be, S("b"), S(key), S("x"), &err));
        CHECK_OK(bk_unlock(a->be, &err));
        if (n % 16 == 0)
            CHECK_OK(bk_force_commit(a->be, &err));
    }
    return NULL;
}

/* Views opened while other threads defrag and commit work, before and
 * after the swaps: the backend is not closed, no view leaks, and a closed
 * view's reuse never inherits its old state. */
static void test_view_open_during_defrag(int defrags)
{
    bk_config cfg;
    bk_error err;
    bk_backend *be;
    pthread_t openers[OPENERS], writer;
    opener_arg a[OPENERS + 1];
    int stop = 0;
    cfg_init(&cfg, tmp_path("defrag-open.db"));
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_put(be, S("b"), S("k"), S("v"), &err));
    CHECK_OK(bk_unlock(be, &err));
    memset(a, 0, sizeof a);
    for (int i = 0; i <= OPENERS; i++) {
        a[i].be = be;
        a[i].stop = &stop;
    }
    for (int i = 0; i < OPENERS; i++)
        pthread_create(&openers[i], NULL, opener_main, &a[i]);
    pthread_create(&writer, NULL, committing_writer, &a[OPENERS]);
    for (int i = 0; i < defrags; i++) {
        CHECK_OK(bk_defrag(be, NULL, &err));
        sched_yield();
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(writer, NULL);
    uint64_t ok = 0;
    for (int i = 0; i < OPENERS; i++) {
        pthread_join(openers[i], NULL);
        ok += a[i].ok;
        if (!CHECK(a[i].failed == 0))
            fprintf(stderr, "  %llu of %llu view rounds failed during %d defrags; the first: "
                    "code %d (%s)\n", (unsigned long long)a[i].failed,
                    (unsigned long long)(a[i].ok + a[i].failed), defrags, a[i].code, a[i].msg);
    }
    CHECK(!bk_is_closed(be));
    bk_stats st;
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.open_read_tx_n == 0);
    printf("views during defrag: %llu rounds of %d views, %d defrags\n",
           (unsigned long long)ok, HELD, defrags);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

/* ---- the batch lock between threads ---- */

typedef struct lock_arg {
    bk_backend *be;
    int put_rc, locked_by_me, got_lock;   /* got_lock atomic */
} lock_arg;

static void *locker_main(void *arg)
{
    lock_arg *a = arg;
    bk_error err;
    a->put_rc = bk_put(a->be, S("b"), S("k"), S("other"), &err);
    a->locked_by_me = bk_locked_by_me(a->be);
    if (bk_lock(a->be, &err) == BK_OK) {
        __atomic_store_n(&a->got_lock, 1, __ATOMIC_RELEASE);
        bk_put(a->be, S("b"), S("k"), S("second"), &err);
        bk_unlock(a->be, &err);
    }
    return NULL;
}

static void test_lock_between_threads(void)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    pthread_t t;
    cfg_init(&cfg, tmp_path("lock.db"));
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    lock_arg a = { be, -1, -1, 0 };
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    pthread_create(&t, NULL, locker_main, &a);
    sleep_s(0.1);
    CHECK(!__atomic_load_n(&a.got_lock, __ATOMIC_ACQUIRE));   /* waits for us */
    CHECK_OK(bk_put(be, S("b"), S("k"), S("first"), &err));
    CHECK_OK(bk_unlock(be, &err));
    pthread_join(t, NULL);
    CHECK(a.put_rc == BK_ENOTLOCKED);
    CHECK(a.locked_by_me == 0);
    CHECK(a.got_lock == 1);
    bk_view *v;
    bk_result r;
    bk_result_init(&r);
    if (CHECK_OK(bk_view_open(be, &v, &err))) {
        CHECK_OK(bk_view_range(v, S("b"), S("k"), NULL, 0, &r, &err));
        CHECK(r.count == 1 && bk_result_value(&r, 0).len == 6 &&
              !memcmp(bk_result_value(&r, 0).data, "second", 6));
        bk_view_close(v);
    }
    bk_result_free(&r);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

int main(void)
{
    /* Seconds per run; longer under ThreadSanitizer, which slows every access. */
    const char *env = getenv("BACKEND_TEST_SECONDS");
    double secs = env ? atof(env) : t_quick() ? 0.6 : 1.5;
    test_lock_between_threads();
    test_read_your_writes(secs * 0.6);
    bk_config defaults;
    bk_config_default(&defaults);
    run("threads.db", secs, 0, defaults.max_buffered_bytes);
    run("threads-defrag.db", secs, 2, defaults.max_buffered_bytes);
    /* The least: every section is a batch (one 256 KiB arena block), four
     * of them fill the buffer, and each commit takes one. */
    run("threads-backpressure.db", secs, 1, 1 << 20);
    /* last: against the current core it can crash (see the report) */
    fflush(stdout);
    test_view_open_during_defrag(t_quick() ? 10 : 30);
    return t_done();
}
