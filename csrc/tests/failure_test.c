/* failure_test.c: a commit that fails loses nothing. RLIMIT_FSIZE makes
 * LMDB's writes past a size fail (EFBIG, SIGXFSZ ignored) like a full disk:
 * the failure is reported by force_commit and logged, the writes stay
 * buffered and readable, and once the limit is lifted the retry commits
 * them all. Then close() with a failing commit raises and stays open. */
#include "test.h"

#include <signal.h>
#include <sys/resource.h>

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
    return t_done();
}
