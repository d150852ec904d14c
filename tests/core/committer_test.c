/* committer_test.c: the tests of committer.c: pending commits, durability
 * across a crash, map growth. */
#include "core_test.h"

static int wait_for(bk_backend *be, const char *bucket, const char *key, double secs)
{
    bk_error err;
    bk_result r;
    bk_result_init(&r);
    int found = 0;
    for (int i = 0; i < (int)(secs * 200) && !found; i++) {
        if (!CHECK_OK(bk_committed_get(be, S(bucket), S(key), &r, &err)))
            break;
        found = r.count == 1;
        if (!found)
            usleep(5000);
    }
    bk_result_free(&r);
    return found;
}

static void test_pending_commits(void)
{
    bk_config cfg;
    cfg_init(&cfg, tmp_path("pending.db"));
    cfg.batch_interval = 1000;
    cfg.batch_limit = 1000;
    bk_backend *be = open_cfg(&cfg);
    bk_error err;
    bk_stats st;
    bk_result r;
    if (!be)
        return;
    bk_result_init(&r);
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_stats_get(be, &st, &err));
    uint64_t c0 = st.commits;
    CHECK(st.page_size >= 4096 && st.map_size >= cfg.mmap_size && st.size > 0);
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_put(be, S("b"), S("k1"), S("v1"), &err));
    CHECK_OK(bk_put(be, S("b"), S("k2"), S("v2"), &err));
    CHECK_OK(bk_delete(be, S("b"), S("k3"), &err));
    CHECK(bk_pending(be) == 4);
    CHECK_OK(bk_unlock(be, &err));
    CHECK(bk_pending(be) == 4);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.pending == 4 && st.buffered_writes == 4 && st.commits == c0);
    CHECK_OK(bk_committed_get(be, S("b"), S("k1"), &r, &err));
    CHECK(r.count == 0);
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commits == c0 + 1 && st.pending == 0 && st.queued_batches == 0);
    CHECK(st.commit_failures == 0);
    CHECK_OK(bk_committed_get(be, S("b"), S("k1"), &r, &err));
    CHECK(r.count == 1 && !strcmp(joined(&r), "k1=v1"));
    /* nothing pending: no commit */
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commits == c0 + 1);

    /* bk_commit between sections; none while locked */
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("k4"), S("v4"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_commit(be, 0, &err));
    CHECK(!bk_locked_by_me(be));
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("k5"), S("v5"), &err));
    CHECK(bk_pending(be) == 1);
    CHECK_CODE(bk_force_commit(be, &err), BK_ELOCKED);
    CHECK(bk_locked_by_me(be));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.commits == c0 + 3);
    CHECK_OK(bk_committed_get(be, S("b"), S("k5"), &r, &err));
    CHECK(r.count == 1);
    CHECK(has(be, "b", "k4", "v4"));
    bk_result_free(&r);
    close_be(be);

    /* batch_limit: the unlock that reaches it queues the batch */
    cfg_init(&cfg, tmp_path("limit.db"));
    cfg.batch_interval = 1000;
    cfg.batch_limit = 5;
    be = open_cfg(&cfg);
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < 3; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_OK(bk_put(be, S("b"), S(k), S("v"), &err));
    }
    CHECK_OK(bk_unlock(be, &err));   /* 4 writes: below the limit */
    usleep(50000);
    CHECK(bk_pending(be) == 4);
    put1(be, "b", "k3", "v");
    CHECK(wait_for(be, "b", "k3", 5));
    for (int i = 0; i < 400 && bk_pending(be); i++)
        usleep(5000);
    CHECK(bk_pending(be) == 0);
    close_be(be);

    /* batch_interval: the committer commits on its own */
    cfg_init(&cfg, tmp_path("interval.db"));
    cfg.batch_interval = 0.01;
    be = open_cfg(&cfg);
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    put1(be, "b", "k", "v");
    CHECK(wait_for(be, "b", "k", 5));
    /* and also while someone holds the lock: at its unlock */
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("k2"), S("v"), &err));
    usleep(50000);
    CHECK_OK(bk_committed_get(be, S("b"), S("k2"), &r, &err));
    CHECK(r.count == 0);
    CHECK_OK(bk_unlock(be, &err));
    CHECK(wait_for(be, "b", "k2", 5));
    bk_result_free(&r);
    close_be(be);
}

/* Child: writes, force-commits, writes more without committing, and dies
 * without closing. */
static int child_crash(const char *path)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    cfg_init(&cfg, path);
    cfg.no_fsync = 0;
    cfg.batch_interval = 1000;
    cfg.batch_limit = 1000000;
    if (bk_open(&cfg, &be, &err) || bk_lock(be, &err) ||
        bk_create_bucket(be, S("b"), &err))
        return 3;
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        if (bk_put(be, S("b"), S(k), S("durable"), &err))
            return 4;
    }
    if (bk_unlock(be, &err) || bk_force_commit(be, &err) || bk_lock(be, &err) ||
        bk_put(be, S("b"), S("lost"), S("x"), &err) || bk_unlock(be, &err))
        return 5;
    _exit(0);
}

static void test_durability(void)
{
    const char *path = tmp_path("crash.db");
    CHECK(run_child((const char *const[]){ "--child-crash", path, NULL }) == 0);
    bk_backend *be = open_path(path);
    if (!be)
        return;
    CHECK(count_range(be, "b") == 100);
    CHECK(has(be, "b", "k000", "durable"));
    CHECK(has(be, "b", "k099", "durable"));
    CHECK(has(be, "b", "lost", NULL));
    close_be(be);
}

static void test_map_growth(void)
{
    bk_config cfg;
    const char *path = tmp_path("grow.db");
    cfg_init(&cfg, path);
    cfg.mmap_size = 65536;
    bk_backend *be = open_cfg(&cfg);
    bk_error err;
    bk_stats st;
    if (!be)
        return;
    int n = t_quick() ? 2048 : 4096;
    char val[1000];
    mk_buckets(be, (const char *const[]){ "g", NULL });
    for (int i = 0; i < n; i += 256) {
        CHECK_OK(bk_lock(be, &err));
        for (int j = i; j < i + 256; j++) {
            char k[16];
            snprintf(k, sizeof k, "k%06d", j);
            memset(val, 'a' + j % 26, sizeof val);
            CHECK_OK(bk_put(be, S("g"), S(k), B(val, sizeof val), &err));
        }
        CHECK_OK(bk_unlock(be, &err));
        if (i % 1024 == 0)
            CHECK_OK(bk_force_commit(be, &err));
    }
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.map_grows >= 1);
    CHECK(st.map_size >= (uint64_t)n * 1000);
    CHECK(st.commit_failures == 0);
    CHECK(log_has(be, "map grown"));
    uint32_t h = hash_of(be);
    close_be(be);

    be = open_cfg(&cfg);   /* the small map size again */
    if (!be)
        return;
    CHECK(hash_of(be) == h);
    bk_view *v;
    bk_result r;
    bk_result_init(&r);
    bk_slice to = S("l");
    if (CHECK_OK(bk_view_open(be, &v, &err))) {
        CHECK_OK(bk_view_range(v, S("g"), S("k"), &to, 0, &r, &err));
        CHECK(r.count == (size_t)n);
        int bad = 0;
        for (size_t i = 0; i < r.count; i++) {
            char k[32];
            snprintf(k, sizeof k, "k%06zu", i);
            bk_slice ks = bk_result_key(&r, i), vs = bk_result_value(&r, i);
            memset(val, 'a' + (int)(i % 26), sizeof val);
            bad += ks.len != strlen(k) || memcmp(ks.data, k, ks.len) ||
                   vs.len != sizeof val || memcmp(vs.data, val, sizeof val);
        }
        CHECK(bad == 0);
        bk_view_close(v);
    }
    /* and it still grows */
    CHECK_OK(bk_lock(be, &err));
    for (int j = 0; j < 1024; j++) {
        char k[16];
        snprintf(k, sizeof k, "m%06d", j);
        CHECK_OK(bk_put(be, S("g"), S(k), B(val, sizeof val), &err));
    }
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(count_range(be, "g") == (uint64_t)n + 1024);
    bk_result_free(&r);
    close_be(be);
}

int main(int argc, char **argv)
{
    argv0 = argv[0];
    if (argc >= 3 && !strcmp(argv[1], "--child-crash"))
        return child_crash(argv[2]);

    test_pending_commits();
    test_durability();
    test_map_growth();
    return t_done();
}
