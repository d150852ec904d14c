/* failure_test.c: a commit that fails loses nothing. RLIMIT_FSIZE makes
 * LMDB's writes past a size fail (EFBIG, SIGXFSZ ignored) like a full disk:
 * the failure is reported by force_commit and logged, the writes stay
 * buffered and readable, and once the limit is lifted the retry commits
 * them all. Then close() with a failing commit raises and stays open.
 * Batches queued behind a failure commit together, each group one txn of
 * up to a quarter of max_buffered_bytes, in order; a group LMDB finds too
 * big (MDB_TXN_FULL, faked below) is split. A writer over
 * max_buffered_bytes waits in lock() until commits free memory. */
#include "test.h"

#include <dlfcn.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* LMDB's limit on a write txn's dirty pages, faked: while txn_put_limit is
 * set, a write txn takes that many puts into named databases (the
 * buckets), and the next fails with MDB_TXN_FULL. These definitions take
 * the place of liblmdb's for the core linked into this program. */
static int txn_put_limit, txn_puts;   /* atomic */
static int (*real_txn_begin)(MDB_env *, MDB_txn *, unsigned, MDB_txn **);
static int (*real_cursor_put)(MDB_cursor *, MDB_val *, MDB_val *, unsigned);

int mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn)
{
    if (!(flags & MDB_RDONLY))
        __atomic_store_n(&txn_puts, 0, __ATOMIC_RELAXED);
    return real_txn_begin(env, parent, flags, txn);
}

int mdb_cursor_put(MDB_cursor *mc, MDB_val *key, MDB_val *data, unsigned flags)
{
    int limit = __atomic_load_n(&txn_put_limit, __ATOMIC_RELAXED);
    if (limit && mdb_cursor_dbi(mc) > 1 &&   /* not LMDB's free or main db */
        __atomic_add_fetch(&txn_puts, 1, __ATOMIC_RELAXED) > limit)
        return MDB_TXN_FULL;
    return real_cursor_put(mc, key, data, flags);
}

#define N 500

static bk_slice str(const char *s)
{
    bk_slice x = { s, strlen(s) };
    return x;
}

static size_t count(bk_backend *be, bk_view *v)
{
    bk_result r;
    bk_error err;
    bk_slice to = str("~");
    bk_result_init(&r);
    int rc = v ? bk_view_range(v, str("b"), str(""), &to, 0, &r, &err)
               : bk_tx_range(be, str("b"), str(""), &to, 0, &r, &err);
    size_t n = rc ? (size_t)-1 : r.count;
    bk_result_free(&r);
    return n;
}

/* One section putting keys from .. from+n-1, 1000-byte values. */
static void write_batch(bk_backend *be, int from, int n)
{
    bk_error err;
    char key[32], val[1000];
    memset(val, 'v', sizeof val);
    bk_slice v = { val, sizeof val };
    CHECK_OK(bk_lock(be, &err));
    for (int i = from; i < from + n; i++) {
        snprintf(key, sizeof key, "k%06d", i);
        CHECK_OK(bk_put(be, str("b"), str(key), v, &err));
    }
    CHECK_OK(bk_unlock(be, &err));
}

static int has_log(bk_backend *be, const char *level, const char *needle)
{
    bk_log_entry e;
    int found = 0;
    while (bk_log_pop(be, &e))
        found |= !strcmp(e.level, level) && strstr(e.message, needle) != NULL;
    return found;
}

/* Bucket g as "key=value;" pairs in key order. */
static const char *dump(bk_backend *be, bk_view *v)
{
    static char out[4096];
    bk_result r;
    bk_error err;
    bk_slice to = str("~");
    size_t len = 0;
    bk_result_init(&r);
    out[0] = 0;
    if (CHECK_OK(v ? bk_view_range(v, str("g"), str(""), &to, 0, &r, &err)
                   : bk_tx_range(be, str("g"), str(""), &to, 0, &r, &err)))
        for (size_t i = 0; i < r.count && len < sizeof out; i++) {
            bk_slice k = bk_result_key(&r, i), val = bk_result_value(&r, i);
            len += (size_t)snprintf(out + len, sizeof out - len, "%.*s=%.*s;", (int)k.len,
                                    (const char *)k.data, (int)val.len, (const char *)val.data);
        }
    bk_result_free(&r);
    return out;
}

/* One section of exactly 10 writes (the batch_limit below), so each unlock
 * queues a batch: op 'p' puts keys from..to-1, 'd' deletes them. */
static void section(bk_backend *be, const char *ops)
{
    bk_error err;
    char key[16];
    CHECK_OK(bk_lock(be, &err));
    for (const char *op = ops; *op; op += 6) {
        int from = (op[1] - '0') * 10 + (op[2] - '0'), to = (op[3] - '0') * 10 + (op[4] - '0');
        if (*op == 'D') {
            CHECK_OK(bk_delete_bucket(be, str("g"), &err));
        } else if (*op == 'C') {
            CHECK_OK(bk_create_bucket(be, str("g"), &err));
        }
        for (int i = from; i < to; i++) {
            snprintf(key, sizeof key, "k%02d", i);
            if (*op == 'd')
                CHECK_OK(bk_delete(be, str("g"), str(key), &err));
            else if (*op == 'p')
                CHECK_OK(bk_put(be, str("g"), str(key), str(ops + strlen(ops) + 1), &err));
        }
    }
    CHECK(bk_pending(be) % 10 == 0);
    CHECK_OK(bk_unlock(be, &err));
}

/* No commit can add a page to the file at cfg->path from now on. */
static void disk_full(const bk_config *cfg)
{
    struct stat sb;
    struct rlimit full;
    CHECK(stat(cfg->path, &sb) == 0);
    getrlimit(RLIMIT_FSIZE, &full);
    full.rlim_cur = (rlim_t)sb.st_size;
    CHECK(setrlimit(RLIMIT_FSIZE, &full) == 0);
}

static void disk_free(void)
{
    struct rlimit normal;
    getrlimit(RLIMIT_FSIZE, &normal);
    normal.rlim_cur = normal.rlim_max;
    CHECK(setrlimit(RLIMIT_FSIZE, &normal) == 0);
}

/* 8 batches of 10 writes queue behind a full disk; once it has room they
 * commit in groups of up to a quarter of max_buffered_bytes of arena:
 * want_commits txns. */
static void test_group_commit(const char *name, uint64_t max_buffered, int want_commits)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    bk_stats st;
    bk_config_default(&cfg);
    cfg.path = tmp_path(name);
    cfg.batch_limit = 10;
    cfg.batch_interval = 0.01;
    cfg.max_buffered_bytes = max_buffered;
    CHECK_OK(bk_open(&cfg, &be, &err));
    disk_full(&cfg);
    /* Each string: ops of 6 chars ("pFFTT ", C/D for create/drop), then
     * after its NUL the value. Overwrites, deletes and a drop cross batches. */
    static const char *const sections[] = {
        "C0000 p0009 \0v1", "p0010 \0v2", "d0005 p1015 \0v3",
        "D0000 C0000 p2028 \0v4", "p3040 \0v5", "d3035 p3540 \0v6",
        "p0010 \0v7", "p4050 \0v8",
    };
    for (int i = 0; i < 8; i++)
        section(be, sections[i]);
    CHECK_CODE(bk_force_commit(be, &err), BK_EIO);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.queued_batches == 8 && st.pending == 80);
    char want[1024] = "";
    for (int i = 0; i < 50; i++) {
        const char *v = i < 10 ? "v7" : i >= 20 && i < 28 ? "v4" : i >= 35 && i < 40 ? "v6"
                      : i >= 40 ? "v8" : NULL;
        if (v)
            snprintf(want + strlen(want), sizeof want - strlen(want), "k%02d=%s;", i, v);
    }
    CHECK_OK(bk_lock(be, &err));
    CHECK(!strcmp(dump(be, NULL), want));
    CHECK_OK(bk_unlock(be, &err));

    uint64_t before = st.commits;
    disk_free();
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commits == before + (uint64_t)want_commits);
    CHECK(st.pending == 0 && st.queued_batches == 0);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    CHECK_OK(bk_open(&cfg, &be, &err));
    bk_view *v;
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK(!strcmp(dump(be, v), want));
    bk_view_close(v);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

static size_t committed_count(const bk_config *cfg)
{
    bk_backend *be;
    bk_error err;
    size_t n = (size_t)-1;
    if (!CHECK_OK(bk_open(cfg, &be, &err)))
        return n;
    if (CHECK_OK(bk_lock(be, &err))) {
        n = count(be, NULL);
        CHECK_OK(bk_unlock(be, &err));
    }
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    return n;
}

/* A backend on cfg (its path and batch_interval set here) with bucket b
 * committed, and then the disk full. */
static bk_backend *open_full(bk_config *cfg, const char *name)
{
    bk_backend *be;
    bk_error err;
    cfg->path = tmp_path(name);
    cfg->batch_interval = 3600;   /* a failed commit is retried when asked */
    if (!CHECK_OK(bk_open(cfg, &be, &err)))
        return NULL;
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, str("b"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    disk_full(cfg);
    return be;
}

/* A group LMDB cannot take in one txn is halved until it can. 8 batches of
 * 10 puts, 25 puts a txn: 8 and 4 fail, 2 go in; then 6, 3, 1; 5, 2; 3,
 * 1; 2: five commits, everything in. */
static void test_txn_full(void)
{
    bk_config cfg;
    bk_error err;
    bk_stats st;
    bk_config_default(&cfg);
    cfg.batch_limit = 10;
    bk_backend *be = open_full(&cfg, "split.db");
    if (!be)
        return;
    for (int i = 0; i < 8; i++)
        write_batch(be, 10 * i, 10);
    CHECK_CODE(bk_force_commit(be, &err), BK_EIO);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.queued_batches == 8);
    uint64_t before = st.commits;
    disk_free();
    __atomic_store_n(&txn_put_limit, 25, __ATOMIC_RELAXED);
    CHECK_OK(bk_force_commit(be, &err));
    __atomic_store_n(&txn_put_limit, 0, __ATOMIC_RELAXED);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commits == before + 5);
    CHECK(st.pending == 0);
    CHECK(has_log(be, "info", "8 batches are too much for one LMDB transaction"));
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    CHECK(committed_count(&cfg) == 80);
}

/* force_commit answers for a commit attempt that began after it was called:
 * an attempt that was already failing on the full disk when room came back
 * is not its answer. The committer retries every millisecond here, so some
 * of these rounds free the disk while an attempt is in flight. */
static void test_failure_in_flight(void)
{
    bk_config cfg;
    bk_error err;
    bk_config_default(&cfg);
    bk_backend *be = open_full(&cfg, "inflight.db");
    if (!be)
        return;
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    disk_free();
    cfg.batch_interval = 0.001;
    cfg.batch_limit = 5;
    CHECK_OK(bk_open(&cfg, &be, &err));
    int rounds = getenv("BACKEND_TEST_QUICK") ? 50 : 1000;
    for (int r = 0; r < rounds; r++) {
        disk_full(&cfg);
        write_batch(be, 10 * r, 10);
        struct timespec ts = { 0, 200000 * (r % 10) };
        nanosleep(&ts, NULL);
        disk_free();
        CHECK_OK(bk_force_commit(be, &err));
    }
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    CHECK(committed_count(&cfg) == (size_t)(10 * rounds));
}

typedef struct writer {
    bk_backend *be;
    int from, sections;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < w->sections; i++)
        write_batch(w->be, w->from + i * N, N);
    return NULL;
}

/* The stats once a writer has begun to wait (within a minute). */
static bk_stats writer_waiting(bk_backend *be)
{
    bk_stats st;
    bk_error err;
    for (int i = 0; i < 60000; i++) {
        if (!CHECK_OK(bk_stats_get(be, &st, &err)) || st.backpressure_waits > 0)
            break;
        usleep(1000);
    }
    return st;
}

/* max_buffered_bytes 1 MiB, the disk full: one section of 2 MB goes
 * through (nothing waits inside a section); the next lock(), in another
 * thread, waits until commits free memory; nothing is lost. */
static void test_backpressure(void)
{
    bk_config cfg;
    bk_error err;
    bk_stats st;
    bk_config_default(&cfg);
    cfg.max_buffered_bytes = 1 << 20;
    bk_backend *be = open_full(&cfg, "pressure.db");
    if (!be)
        return;
    write_batch(be, 0, 4 * N);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.buffered_bytes > cfg.max_buffered_bytes && st.queued_batches == 1);
    CHECK(st.backpressure_waits == 0 && st.backpressure_seconds == 0);

    writer w = { be, 4 * N, 4 };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, writer_main, &w) == 0);
    st = writer_waiting(be);
    CHECK(st.backpressure_waits == 1);
    CHECK(st.pending == 4 * N);   /* it waits before its section */
    disk_free();
    CHECK_OK(bk_force_commit(be, &err));   /* the retry: room again */
    pthread_join(t, NULL);
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.backpressure_waits >= 1 && st.backpressure_seconds > 0 && st.pending == 0);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    CHECK(committed_count(&cfg) == 8 * N);
}

int main(void)
{
    *(void **)&real_txn_begin = dlsym(RTLD_NEXT, "mdb_txn_begin");
    *(void **)&real_cursor_put = dlsym(RTLD_NEXT, "mdb_cursor_put");
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    bk_view *view;
    struct rlimit normal, low;
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &normal);
    low = normal;
    low.rlim_cur = 256 * 1024;

    bk_config_default(&cfg);
    cfg.path = tmp_path("db");
    cfg.batch_interval = 0.01;
    CHECK_OK(bk_open(&cfg, &be, &err));
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, str("b"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));

    /* The disk is "full": the commit fails, nothing is lost. */
    CHECK(setrlimit(RLIMIT_FSIZE, &low) == 0);
    write_batch(be, 0, N);
    CHECK_CODE(bk_force_commit(be, &err), BK_EIO);
    CHECK(strstr(err.msg, "commit") != NULL);
    CHECK(has_log(be, "error", "commit failed"));
    CHECK(bk_pending(be) == N);
    CHECK_OK(bk_view_open(be, &view, &err));
    CHECK(count(be, view) == N);
    /* More writes queue up behind the failing batch. */
    write_batch(be, N, N);
    CHECK(bk_pending(be) == 2 * N);
    CHECK_CODE(bk_close(be, 0, &err), BK_EIO);   /* refuses: would lose writes */
    CHECK(!bk_is_closed(be));

    /* The disk has room again: the retry commits everything. */
    CHECK(setrlimit(RLIMIT_FSIZE, &normal) == 0);
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(bk_pending(be) == 0);
    CHECK(count(be, view) == N);   /* the view is as it was */
    bk_view_close(view);
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);

    CHECK_OK(bk_open(&cfg, &be, &err));
    CHECK_OK(bk_lock(be, &err));
    CHECK(count(be, NULL) == 2 * N);
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    /* Every batch is one 256 KiB arena block (its memtable in it):
     * everything queued in one txn; 4 in a quarter of 4 MiB. */
    test_group_commit("group.db", (uint64_t)256 << 20, 1);
    test_group_commit("group4.db", 4 << 20, 2);
    test_txn_full();
    test_failure_in_flight();
    test_backpressure();
    return t_done();
}
