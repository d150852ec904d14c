/* failure_test.c: a commit that fails loses nothing. RLIMIT_FSIZE makes
 * LMDB's writes past a size fail (EFBIG, SIGXFSZ ignored) like a full disk:
 * the failure is reported by force_commit and logged, the writes stay
 * buffered and readable, and once the limit is lifted the retry commits
 * them all. Then close() with a failing commit raises and stays open.
 * Batches queued behind a failure commit in groups of up to twice
 * batch_limit writes, each group one txn, in order. */
#include "test.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

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

static void write_batch(bk_backend *be, int from)
{
    bk_error err;
    char key[32], val[1000];
    memset(val, 'v', sizeof val);
    bk_slice v = { val, sizeof val };
    CHECK_OK(bk_lock(be, &err));
    for (int i = from; i < from + N; i++) {
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

static void test_group_commit(void)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    bk_stats st;
    struct stat sb;
    struct rlimit normal, full;
    getrlimit(RLIMIT_FSIZE, &normal);
    bk_config_default(&cfg);
    cfg.path = tmp_path("group.db");
    cfg.batch_limit = 10;
    cfg.batch_interval = 0.01;
    CHECK_OK(bk_open(&cfg, &be, &err));
    CHECK(stat(cfg.path, &sb) == 0);
    full = normal;
    full.rlim_cur = (rlim_t)sb.st_size;   /* no commit can add a page */
    CHECK(setrlimit(RLIMIT_FSIZE, &full) == 0);
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
    CHECK(setrlimit(RLIMIT_FSIZE, &normal) == 0);
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commits == before + 4);   /* 8 batches of 10, 20 writes a txn */
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

int main(void)
{
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
    write_batch(be, 0);
    CHECK_CODE(bk_force_commit(be, &err), BK_EIO);
    CHECK(strstr(err.msg, "commit") != NULL);
    CHECK(has_log(be, "error", "commit failed"));
    CHECK(bk_pending(be) == N);
    CHECK_OK(bk_view_open(be, &view, &err));
    CHECK(count(be, view) == N);
    /* More writes queue up behind the failing batch. */
    write_batch(be, N);
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
    test_group_commit();
    return t_done();
}
