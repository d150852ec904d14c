/* batch_test.c: the tests of batch.c: the batch tx, its errors, rollback, key
 * limits, commit_and_stop, the commit in steps, close racing a writer. */
#include "core_test.h"

static void test_basic_semantics(void)
{
    bk_backend *be = open_path(tmp_path("basic.db"));
    bk_error err;
    bk_view *v;
    bk_result r;
    if (!be)
        return;
    bk_result_init(&r);
    mk_buckets(be, (const char *const[]){ "b", "bb", "empty", NULL });
    CHECK_OK(bk_lock(be, &err));
    const char *keys[] = { "c", "ab", "a", "abc", "b", "b0", "d" };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char val[16];
        snprintf(val, sizeof val, "v%s", keys[i]);
        CHECK_OK(bk_put(be, S("b"), S(keys[i]), S(val), &err));
    }
    CHECK_OK(bk_put(be, S("bb"), S("a"), S("other"), &err));
    /* The batch tx sees its own writes; a view opened now does not. */
    CHECK(!strcmp(range_str(be, NULL, "b", "a", "b", 0), "a=va,ab=vab,abc=vabc"));
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK(!strcmp(range_str(NULL, v, "b", "", "\xff", 0), ""));
    CHECK_OK(bk_unlock(be, &err));
    CHECK(!strcmp(range_str(NULL, v, "b", "", "\xff", 0), ""));
    bk_view_close(v);

    for (int committed = 0; committed < 2; committed++) {
        CHECK_OK(bk_view_open(be, &v, &err));
        /* to == NULL: one key, exact match (not a prefix). */
        CHECK(!strcmp(range_str(NULL, v, "b", "ab", NULL, 0), "ab=vab"));
        CHECK(!strcmp(range_str(NULL, v, "b", "aa", NULL, 0), ""));
        CHECK(!strcmp(range_str(NULL, v, "b", "abcd", NULL, 0), ""));
        /* end exclusive, prefix-shorter first */
        CHECK(!strcmp(range_str(NULL, v, "b", "a", "b", 0), "a=va,ab=vab,abc=vabc"));
        CHECK(!strcmp(range_str(NULL, v, "b", "ab", "b0", 0), "ab=vab,abc=vabc,b=vb"));
        CHECK(!strcmp(range_str(NULL, v, "b", "", "\xff", 0), "a=va,ab=vab,abc=vabc,b=vb,b0=vb0,c=vc,d=vd"));
        CHECK(!strcmp(range_str(NULL, v, "b", "aa", "abc", 0), "ab=vab"));
        /* limit: <= 0 means none */
        CHECK(!strcmp(range_str(NULL, v, "b", "a", "z", 2), "a=va,ab=vab"));
        CHECK(!strcmp(range_str(NULL, v, "b", "a", "z", 1), "a=va"));
        CHECK(!strcmp(range_str(NULL, v, "b", "a", "c", 0), "a=va,ab=vab,abc=vabc,b=vb,b0=vb0"));
        CHECK(!strcmp(range_str(NULL, v, "b", "a", "c", -1), "a=va,ab=vab,abc=vabc,b=vb,b0=vb0"));
        CHECK(!strcmp(range_str(NULL, v, "b", "a", "c", 100), "a=va,ab=vab,abc=vabc,b=vb,b0=vb0"));
        /* empty or inverted ranges */
        CHECK(!strcmp(range_str(NULL, v, "b", "b", "b", 0), ""));
        CHECK(!strcmp(range_str(NULL, v, "b", "c", "a", 0), ""));
        CHECK(!strcmp(range_str(NULL, v, "b", "e", "z", 0), ""));
        /* buckets do not leak into each other; missing ones read empty */
        CHECK(!strcmp(range_str(NULL, v, "bb", "", "\xff", 0), "a=other"));
        CHECK(!strcmp(range_str(NULL, v, "empty", "", "\xff", 0), ""));
        CHECK(!strcmp(range_str(NULL, v, "nosuch", "", "\xff", 0), ""));
        CHECK(!strcmp(range_str(NULL, v, "nosuch", "a", NULL, 0), ""));
        bk_view_close(v);
        CHECK_OK(bk_force_commit(be, &err));
    }

    /* overwrite, delete, delete of a missing key, empty and binary values */
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("a"), S("new"), &err));
    CHECK_OK(bk_delete(be, S("b"), S("ab"), &err));
    CHECK_OK(bk_delete(be, S("b"), S("zzz"), &err));
    CHECK_OK(bk_delete(be, S("b"), S("c"), &err));
    CHECK_OK(bk_put(be, S("b"), S("c"), S("again"), &err));
    CHECK_OK(bk_put(be, S("b"), S("e"), S(""), &err));
    static const char bin[] = { 'x', 0, 'y', (char)0xff };
    CHECK_OK(bk_put(be, S("b"), B(bin, 4), B(bin, 4), &err));
    CHECK(!strcmp(range_str(be, NULL, "b", "a", "b", 0), "a=new,abc=vabc"));
    CHECK_OK(bk_unlock(be, &err));
    for (int committed = 0; committed < 2; committed++) {
        CHECK_OK(bk_view_open(be, &v, &err));
        CHECK(!strcmp(range_str(NULL, v, "b", "", "x", 0),
                      "a=new,abc=vabc,b=vb,b0=vb0,c=again,d=vd,e="));
        CHECK(count_range(be, "b") == 8);
        CHECK_OK(bk_view_range(v, S("b"), S("e"), NULL, 0, &r, &err));
        CHECK(r.count == 1 && bk_result_value(&r, 0).len == 0);
        CHECK_OK(bk_view_range(v, S("b"), B(bin, 4), NULL, 0, &r, &err));
        CHECK(r.count == 1 && bk_result_value(&r, 0).len == 4 &&
              !memcmp(bk_result_value(&r, 0).data, bin, 4) &&
              !memcmp(bk_result_key(&r, 0).data, bin, 4));
        bk_slice to = B(bin, 2);   /* "x\0" < "x\0y\xff" */
        CHECK_OK(bk_view_range(v, S("b"), S("x"), &to, 0, &r, &err));
        CHECK(r.count == 0);
        to = B(bin, 3);
        CHECK_OK(bk_view_range(v, S("b"), B(bin, 2), &to, 0, &r, &err));
        CHECK(r.count == 0);
        to = S("y");
        CHECK_OK(bk_view_range(v, S("b"), B(bin, 3), &to, 0, &r, &err));
        CHECK(r.count == 1);
        bk_view_close(v);
        CHECK_OK(bk_force_commit(be, &err));
    }

    /* a large value (own arena block), before and after commit */
    size_t big = 300 * 1024;
    char *val = malloc(big);
    for (size_t i = 0; i < big; i++)
        val[i] = (char)(i * 7);
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("big"), B(val, big), &err));
    CHECK_OK(bk_put(be, S("b"), S("big2"), S("small"), &err));
    CHECK_OK(bk_unlock(be, &err));
    for (int committed = 0; committed < 2; committed++) {
        CHECK_OK(bk_view_open(be, &v, &err));
        CHECK_OK(bk_view_range(v, S("b"), S("big"), NULL, 0, &r, &err));
        CHECK(r.count == 1 && bk_result_value(&r, 0).len == big &&
              !memcmp(bk_result_value(&r, 0).data, val, big));
        CHECK(!strcmp(range_str(NULL, v, "b", "big2", NULL, 0), "big2=small"));
        bk_view_close(v);
        CHECK_OK(bk_force_commit(be, &err));
    }
    free(val);
    bk_result_free(&r);
    close_be(be);
}

static void test_errors(void)
{
    bk_backend *be = open_path(tmp_path("errors.db"));
    bk_error err;
    bk_view *v;
    bk_result r;
    char msg[64];
    if (!be)
        return;
    bk_result_init(&r);
    size_t max = bk_max_key_size(be);
    snprintf(msg, sizeof msg, "the limit is %zu bytes", max);
    char *longkey = malloc(max + 2);
    memset(longkey, 'k', max + 1);
    longkey[max + 1] = 0;

    /* not locked */
    CHECK_CODE(bk_put(be, S("b"), S("k"), S("v"), &err), BK_ENOTLOCKED);
    CHECK_CODE(bk_delete(be, S("b"), S("k"), &err), BK_ENOTLOCKED);
    CHECK_CODE(bk_create_bucket(be, S("b"), &err), BK_ENOTLOCKED);
    CHECK_CODE(bk_delete_bucket(be, S("b"), &err), BK_ENOTLOCKED);
    CHECK_CODE(bk_unlock(be, &err), BK_ENOTLOCKED);
    CHECK_CODE(bk_rollback(be, NULL, &err), BK_ENOTLOCKED);
    CHECK_OK(bk_commit(be, 0, &err));   /* etcd's Commit(): takes the lock itself */
    CHECK_CODE(bk_tx_range(be, S("b"), S("k"), NULL, 0, &r, &err), BK_ENOTLOCKED);
    CHECK(!bk_locked_by_me(be));

    /* locked twice */
    CHECK_OK(bk_lock(be, &err));
    CHECK(bk_locked_by_me(be));
    CHECK_CODE(bk_lock(be, &err), BK_ELOCKED);
    CHECK(bk_locked_by_me(be));
    /* a locked section is never committed */
    CHECK_CODE(bk_commit(be, 0, &err), BK_ELOCKED);
    CHECK(strstr(err.msg, "unlock or rollback first") != NULL);
    CHECK_CODE(bk_commit(be, 1, &err), BK_ELOCKED);
    CHECK_CODE(bk_force_commit(be, &err), BK_ELOCKED);
    CHECK_CODE(bk_defrag(be, NULL, &err), BK_ELOCKED);
    uint32_t crc;
    CHECK_CODE(bk_hash(be, NULL, 0, &crc, &err), BK_ELOCKED);
    bk_snapshot *snap = NULL;
    CHECK_CODE(bk_snapshot_open(be, &snap, &err), BK_ELOCKED);
    CHECK(snap == NULL);
    CHECK(bk_locked_by_me(be));

    /* missing bucket */
    CHECK_CODE(bk_put(be, S("nosuch"), S("k"), S("v"), &err), BK_ENOBUCKET);
    CHECK(strstr(err.msg, "nosuch") != NULL);
    CHECK_CODE(bk_delete(be, S("nosuch"), S("k"), &err), BK_ENOBUCKET);
    CHECK_OK(bk_tx_range(be, S("nosuch"), S("k"), NULL, 0, &r, &err));
    CHECK(r.count == 0);
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));   /* again: no-op */
    CHECK_OK(bk_put(be, S("b"), S("k"), S("v"), &err));

    /* keys */
    CHECK_CODE(bk_put(be, S("b"), S(""), S("v"), &err), BK_EARG);
    CHECK(strstr(err.msg, "empty") != NULL);
    CHECK_CODE(bk_delete(be, S("b"), S(""), &err), BK_EARG);
    CHECK_CODE(bk_put(be, S("b"), S(longkey), S("v"), &err), BK_EARG);
    CHECK(strstr(err.msg, msg) != NULL);
    CHECK_CODE(bk_delete(be, S("b"), S(longkey), &err), BK_EARG);
    CHECK(strstr(err.msg, msg) != NULL);
    CHECK_CODE(bk_tx_range(be, S("b"), S(longkey), NULL, 0, &r, &err), BK_EARG);
    CHECK(strstr(err.msg, msg) != NULL);
    CHECK_CODE(bk_tx_range(be, S("b"), S(""), NULL, 0, &r, &err), BK_EARG);
    CHECK_CODE(bk_tx_range(be, S(""), S("k"), NULL, 0, &r, &err), BK_EARG);
    longkey[max] = 0;   /* exactly the limit is fine */
    CHECK_OK(bk_put(be, S("b"), S(longkey), S("max"), &err));
    longkey[max] = 'k';

    /* bucket names */
    CHECK_CODE(bk_create_bucket(be, S(""), &err), BK_EARG);
    CHECK_CODE(bk_create_bucket(be, S(longkey), &err), BK_EARG);
    CHECK(strstr(err.msg, msg) != NULL);
    /* zero bytes are escaped in LMDB's names: they count twice there */
    char *zeros = calloc(max, 1);
    CHECK_CODE(bk_create_bucket(be, B(zeros, max / 2 + 1), &err), BK_EARG);
    CHECK(strstr(err.msg, msg) != NULL);
    CHECK_OK(bk_create_bucket(be, B(zeros, max / 2), &err));
    CHECK_OK(bk_put(be, B(zeros, max / 2), S("z"), S("zeros"), &err));
    free(zeros);
    CHECK_CODE(bk_put(be, S(""), S("k"), S("v"), &err), BK_EARG);
    CHECK_OK(bk_unlock(be, &err));
    CHECK(!bk_locked_by_me(be));
    CHECK_CODE(bk_unlock(be, &err), BK_ENOTLOCKED);

    /* views: the same argument checks */
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK_CODE(bk_view_range(v, S("b"), S(longkey), NULL, 0, &r, &err), BK_EARG);
    CHECK(strstr(err.msg, msg) != NULL);
    CHECK_CODE(bk_view_range(v, S("b"), S(""), NULL, 0, &r, &err), BK_EARG);
    CHECK_CODE(bk_view_range(v, S(""), S("k"), NULL, 0, &r, &err), BK_EARG);
    CHECK_OK(bk_view_check(v, &err));
    longkey[max] = 0;
    CHECK_OK(bk_view_range(v, S("b"), S(longkey), NULL, 0, &r, &err));
    CHECK(r.count == 1 && bk_result_key(&r, 0).len == max &&
          !strcmp(joined(&r) + max, "=max"));
    longkey[max] = 'k';
    bk_view_close(v);

    /* a deleted bucket refuses writes again */
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_delete_bucket(be, S("b"), &err));
    CHECK_CODE(bk_put(be, S("b"), S("k"), S("v"), &err), BK_ENOBUCKET);
    CHECK_OK(bk_delete_bucket(be, S("never"), &err));   /* no-op */
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_lock(be, &err));
    CHECK_CODE(bk_put(be, S("b"), S("k"), S("v"), &err), BK_ENOBUCKET);
    CHECK_OK(bk_unlock(be, &err));
    CHECK(count_range(be, "b") == 0);
    free(longkey);
    bk_result_free(&r);
    close_be(be);
}

/* A key of exactly the limit goes through a commit into LMDB. */
static void test_max_key_roundtrip(void)
{
    bk_backend *be = open_path(tmp_path("maxkey.db"));
    bk_error err;
    bk_result r;
    if (!be)
        return;
    bk_result_init(&r);
    size_t max = bk_max_key_size(be);
    char *key = malloc(max);
    memset(key, 'm', max);
    mk_buckets(be, (const char *const[]){ "b", NULL });
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), B(key, max), S("v"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_committed_get(be, S("b"), B(key, max), &r, &err));
    CHECK(r.count == 1);
    bk_result_free(&r);
    free(key);
    close_be(be);
}

static void test_commit_and_stop(void)
{
    bk_backend *be = open_path(tmp_path("stop.db"));
    bk_error err;
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("k"), S("v"), &err));
    CHECK_CODE(bk_commit(be, 1, &err), BK_ELOCKED);
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_commit(be, 1, &err));
    CHECK_CODE(bk_lock(be, &err), BK_ESTOPPED);
    CHECK_CODE(bk_commit(be, 0, &err), BK_ESTOPPED);
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(has(be, "b", "k", "v"));
    CHECK(hash_of(be) != 0);
    close_be(be);
}

/* A backend that commits only when asked, with a bucket "b"; *cfg its
 * config (to open it again). */
static bk_backend *open_unbatched(bk_config *cfg, const char *name)
{
    bk_config_default(cfg);
    cfg->path = tmp_path(name);
    cfg->batch_interval = 3600;
    cfg->batch_limit = 1000000;
    bk_backend *be;
    bk_error err;
    if (!CHECK_OK(bk_open(cfg, &be, &err)))
        return NULL;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    return be;
}

/* bk_force_commit in steps: a request, then waits in slices; no writer is
 * held meanwhile; nothing pending (or read-only) is done at once. */
static void test_commit_in_steps(void)
{
    bk_config cfg;
    bk_error err;
    bk_backend *be = open_unbatched(&cfg, "steps.db");
    if (!be)
        return;
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < 20000; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%06d", i);
        CHECK_OK(bk_put(be, S("b"), S(k), S("v"), &err));
    }
    CHECK_OK(bk_unlock(be, &err));
    bk_commit_ticket t;
    int rc = -1, ended = 0;
    CHECK_OK(bk_request_commit(be, &t, &err));
    CHECK_OK(bk_lock(be, &err));   /* not held by the request */
    CHECK_OK(bk_put(be, S("b"), S("later"), S("v"), &err));
    CHECK_OK(bk_unlock(be, &err));
    for (int slices = 0; !ended && slices < 3000; slices++)
        ended = bk_commit_wait_for(be, &t, 0.01, &rc, &err);
    CHECK(ended && rc == BK_OK);
    bk_result r;
    bk_result_init(&r);
    CHECK_OK(bk_committed_get(be, S("b"), S("k019999"), &r, &err));
    CHECK(r.count == 1);
    bk_result_free(&r);
    CHECK_OK(bk_lock(be, &err));
    CHECK_CODE(bk_request_commit(be, &t, &err), BK_ELOCKED);
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_request_commit(be, &t, &err));
    CHECK(bk_commit_wait_for(be, &t, 0, &rc, &err) == 1 && rc == BK_OK);
    close_be(be);
    cfg.readonly = 1;
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    CHECK_OK(bk_request_commit(be, &t, &err));
    CHECK(bk_commit_wait_for(be, &t, 0, &rc, &err) == 1 && rc == BK_OK);
    CHECK_OK(bk_close(be, 0, &err));
    CHECK_CODE(bk_request_commit(be, &t, &err), BK_ECLOSED);
    bk_free(be);
}

/* A writer thread's sections acknowledged while another thread closes the
 * backend: every one is in the file after (close holds the batch lock from
 * its last commit until it is closed; a section after that fails). */
struct close_race {
    bk_backend *be;
    int acknowledged;   /* keys 0..acknowledged-1 were unlocked with success */
};

static void *write_until_closed(void *arg)
{
    struct close_race *r = arg;
    bk_error err;
    for (int i = 0;; i++) {
        char k[16];
        snprintf(k, sizeof k, "w%07d", i);
        if (bk_lock(r->be, &err))
            break;
        int put = bk_put(r->be, S("b"), S(k), S("v"), &err);
        if (bk_unlock(r->be, &err) || put)
            break;
        __atomic_store_n(&r->acknowledged, i + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void test_close_while_writing(void)
{
    bk_config cfg;
    bk_error err;
    bk_backend *be = open_unbatched(&cfg, "closerace.db");
    if (!be)
        return;
    static char big[1000];
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < 50000; i++) {   /* a commit long enough to race with */
        char k[16];
        snprintf(k, sizeof k, "p%07d", i);
        CHECK_OK(bk_put(be, S("b"), S(k), B(big, sizeof big), &err));
    }
    CHECK_OK(bk_unlock(be, &err));
    struct close_race r = { be, 0 };
    pthread_t th;
    CHECK(pthread_create(&th, NULL, write_until_closed, &r) == 0);
    while (__atomic_load_n(&r.acknowledged, __ATOMIC_ACQUIRE) < 100)
        sched_yield();
    CHECK_OK(bk_close(be, 0, &err));
    pthread_join(th, NULL);
    bk_free(be);
    int acknowledged = r.acknowledged, missing = 0;
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    for (int i = 0; i < acknowledged; i++) {
        char k[16];
        snprintf(k, sizeof k, "w%07d", i);
        missing += !has(be, "b", k, "v");
    }
    if (!CHECK(missing == 0))
        fprintf(stderr, "%d of %d acknowledged writes lost\n", missing, acknowledged);
    close_be(be);
}

/* Rollback at the core: puts, deletes, bucket events undone; counted; a
 * value no commit could write refused at put with the limit named. */
static void test_rollback(void)
{
    bk_backend *be = open_path(tmp_path("rollback.db"));
    bk_error err;
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "a", "b", NULL });
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("a"), S("k"), S("1"), &err));
    CHECK_OK(bk_unlock(be, &err));
    uint32_t before, after;
    CHECK_OK(bk_hash(be, NULL, 0, &before, &err));
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("a"), S("k"), S("2"), &err));
    CHECK_OK(bk_delete_bucket(be, S("b"), &err));
    CHECK_OK(bk_create_bucket(be, S("c"), &err));
    CHECK_OK(bk_put(be, S("c"), S("x"), S("y"), &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_delete_bucket(be, S("b"), &err));
    CHECK(bk_pending(be) == 6);
    CHECK_OK(bk_rollback(be, NULL, &err));
    CHECK(!bk_locked_by_me(be));
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_lock(be, &err));
    CHECK_CODE(bk_put(be, S("c"), S("x"), S("y"), &err), BK_ENOBUCKET);
    CHECK_OK(bk_put(be, S("b"), S("x"), S("y"), &err));   /* b exists again */
    /* too large for one write(2): refused before the data are read */
    bk_stats st;
    CHECK_OK(bk_stats_get(be, &st, &err));
    size_t max = bk_max_value_size(be);
    CHECK(max == 0x7ffff000u / st.page_size * st.page_size - 16);
    CHECK_CODE(bk_put(be, S("a"), S("big"), B((const void *)1, max + 1), &err), BK_EARG);
    CHECK(strstr(err.msg, "the limit is") != NULL);
    CHECK_OK(bk_rollback(be, NULL, &err));
    CHECK_OK(bk_hash(be, NULL, 0, &after, &err));
    CHECK(before == after);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.rollbacks == 2);
    close_be(be);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_basic_semantics();
    test_errors();
    test_rollback();
    test_max_key_roundtrip();
    test_commit_and_stop();
    test_commit_in_steps();
    test_close_while_writing();
    return t_done();
}
