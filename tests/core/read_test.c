/* read_test.c: the tests of read.c: ranges, views and random reads and writes
 * against a model. */
#include "core_test.h"

/* A range whose start is longer than the key size limit is still a valid
 * range (no key can equal it, but keys after it exist). */
static void test_range_long_from(void)
{
    bk_backend *be = open_path(tmp_path("longfrom.db"));
    bk_error err;
    bk_view *v;
    bk_result r;
    if (!be)
        return;
    bk_result_init(&r);
    size_t max = bk_max_key_size(be);
    char *from = malloc(max + 10);
    memset(from, 'a', max + 10);
    mk_buckets(be, (const char *const[]){ "b", NULL });
    put1(be, "b", "b", "1");
    put1(be, "b", "a", "0");
    bk_slice to = S("c");
    for (int committed = 0; committed < 2; committed++) {
        CHECK_OK(bk_view_open(be, &v, &err));
        CHECK_OK(bk_view_range(v, S("b"), B(from, max + 10), &to, 0, &r, &err));
        CHECK(r.count == 1 && !strcmp(joined(&r), "b=1"));
        bk_view_close(v);
        CHECK_OK(bk_force_commit(be, &err));
    }
    free(from);
    bk_result_free(&r);
    close_be(be);
}

static void test_view_consistency(void)
{
    bk_backend *be = open_path(tmp_path("views.db"));
    bk_error err;
    bk_view *v1, *v2, *v3, *v4;
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "b", "c", NULL });
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("a"), S("1"), &err));
    CHECK_OK(bk_put(be, S("b"), S("b"), S("2"), &err));
    CHECK_OK(bk_put(be, S("c"), S("x"), S("c1"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_view_open(be, &v1, &err));   /* buffered state */

    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("b"), S("a"), S("10"), &err));
    CHECK_OK(bk_delete(be, S("b"), S("b"), &err));
    CHECK_OK(bk_put(be, S("b"), S("c"), S("3"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK(!strcmp(range_str(NULL, v1, "b", "", "\xff", 0), "a=1,b=2"));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(!strcmp(range_str(NULL, v1, "b", "", "\xff", 0), "a=1,b=2"));
    CHECK_OK(bk_view_open(be, &v2, &err));   /* committed state */
    CHECK(!strcmp(range_str(NULL, v2, "b", "", "\xff", 0), "a=10,c=3"));

    /* delete_bucket + create_bucket of the same name in one section */
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_delete_bucket(be, S("b"), &err));
    CHECK_OK(bk_create_bucket(be, S("b"), &err));
    CHECK_OK(bk_put(be, S("b"), S("z"), S("new"), &err));
    CHECK(!strcmp(range_str(be, NULL, "b", "", "\xff", 0), "z=new"));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_view_open(be, &v3, &err));
    CHECK(!strcmp(range_str(NULL, v3, "b", "", "\xff", 0), "z=new"));
    CHECK(!strcmp(range_str(NULL, v3, "b", "a", NULL, 0), ""));
    CHECK(!strcmp(range_str(NULL, v2, "b", "", "\xff", 0), "a=10,c=3"));
    CHECK(!strcmp(range_str(NULL, v1, "b", "", "\xff", 0), "a=1,b=2"));
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(!strcmp(range_str(NULL, v3, "b", "", "\xff", 0), "z=new"));
    CHECK(!strcmp(range_str(NULL, v2, "b", "", "\xff", 0), "a=10,c=3"));
    CHECK(!strcmp(range_str(NULL, v2, "b", "c", NULL, 0), "c=3"));
    CHECK(!strcmp(range_str(NULL, v1, "b", "", "\xff", 0), "a=1,b=2"));

    /* drop without re-creating, committed; then other buckets take the
     * handles: old views keep their contents */
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_delete_bucket(be, S("b"), &err));
    CHECK_OK(bk_delete_bucket(be, S("c"), &err));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_view_open(be, &v4, &err));
    CHECK(!strcmp(range_str(NULL, v4, "b", "", "\xff", 0), ""));
    CHECK_OK(bk_force_commit(be, &err));
    mk_buckets(be, (const char *const[]){ "d", "e", NULL });
    put1(be, "d", "a", "d-a");
    put1(be, "e", "a", "e-a");
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(!strcmp(range_str(NULL, v4, "b", "", "\xff", 0), ""));
    CHECK(!strcmp(range_str(NULL, v4, "d", "", "\xff", 0), ""));
    CHECK(!strcmp(range_str(NULL, v3, "b", "", "\xff", 0), "z=new"));
    CHECK(!strcmp(range_str(NULL, v3, "c", "", "\xff", 0), "x=c1"));
    CHECK(!strcmp(range_str(NULL, v2, "b", "", "\xff", 0), "a=10,c=3"));
    CHECK(!strcmp(range_str(NULL, v1, "b", "", "\xff", 0), "a=1,b=2"));
    CHECK(!strcmp(range_str(NULL, v1, "c", "x", NULL, 0), "x=c1"));
    /* re-create b: empty, old views unchanged */
    mk_buckets(be, (const char *const[]){ "b", NULL });
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(count_range(be, "b") == 0);
    CHECK(has(be, "d", "a", "d-a"));
    CHECK(!strcmp(range_str(NULL, v2, "b", "", "\xff", 0), "a=10,c=3"));
    CHECK(!strcmp(range_str(NULL, v4, "b", "", "\xff", 0), ""));

    bk_stats st;
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.open_read_tx_n == 4);
    bk_view_close(v1);
    bk_view_close(v2);
    bk_view_close(v3);
    bk_view_close(v4);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.open_read_tx_n == 0);
    close_be(be);
}

typedef struct { unsigned char k[6]; size_t klen; char v[24]; } mentry;
typedef struct { mentry e[1400]; size_t n; } model;

static int ment_cmp(const void *a, size_t alen, const mentry *e)
{
    return mt_keycmp(a, alen, e->k, e->klen);
}

static void model_put(model *m, const void *k, size_t klen, const char *v)
{
    size_t i = 0;
    while (i < m->n && ment_cmp(k, klen, &m->e[i]) > 0)
        i++;
    if (i == m->n || ment_cmp(k, klen, &m->e[i]) != 0) {
        memmove(&m->e[i + 1], &m->e[i], (m->n - i) * sizeof *m->e);
        m->n++;
        memcpy(m->e[i].k, k, klen);
        m->e[i].klen = klen;
    }
    snprintf(m->e[i].v, sizeof m->e[i].v, "%s", v);
}

static void model_del(model *m, const void *k, size_t klen)
{
    for (size_t i = 0; i < m->n; i++)
        if (!ment_cmp(k, klen, &m->e[i])) {
            memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof *m->e);
            m->n--;
            return;
        }
}

/* Is e among what q reads (limit aside)? */
static int model_in(const mentry *e, const bk_query *q)
{
    int c = ment_cmp(q->from.data, q->from.len, e);
    if (!q->to && !q->open_end)
        return c == 0;
    if (c > 0 || (c == 0 && q->after))
        return 0;
    return !q->to || ment_cmp(q->to->data, q->to->len, e) > 0;
}

/* Does r hold the model's entries that q reads? */
static int model_matches(const model *m, const bk_result *r, const bk_query *q)
{
    size_t j = 0;
    for (size_t i = 0; i < m->n; i++) {
        const mentry *e = &m->e[i];
        if (!model_in(e, q))
            continue;
        if (q->limit > 0 && (int64_t)j >= q->limit)
            break;
        if (j >= r->count)
            return 0;
        bk_slice k = bk_result_key(r, j), v = bk_result_value(r, j);
        if (k.len != e->klen || memcmp(k.data, e->k, k.len) ||
            v.len != strlen(e->v) || memcmp(v.data, e->v, v.len))
            return 0;
        j++;
    }
    return j == r->count;
}

static void hex(FILE *f, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", ((const unsigned char *)p)[i]);
}

static void model_dump(const char *what, const model *m, const bk_result *r,
                       const bk_query *q)
{
    static int dumps;
    if (dumps++ >= 3)
        return;
    fprintf(stderr, "  %s read from=", what);
    hex(stderr, q->from.data, q->from.len);
    fprintf(stderr, " to=");
    if (q->to)
        hex(stderr, q->to->data, q->to->len);
    else
        fprintf(stderr, "NULL");
    fprintf(stderr, " open_end=%d after=%d limit=%lld\n  got:", q->open_end, q->after,
            (long long)q->limit);
    for (size_t i = 0; i < r->count; i++) {
        bk_slice k = bk_result_key(r, i), v = bk_result_value(r, i);
        fprintf(stderr, " ");
        hex(stderr, k.data, k.len);
        fprintf(stderr, "=%.*s", (int)v.len, (const char *)v.data);
    }
    fprintf(stderr, "\n  model:");
    for (size_t i = 0; i < m->n; i++) {
        fprintf(stderr, " ");
        hex(stderr, m->e[i].k, m->e[i].klen);
        fprintf(stderr, "=%s", m->e[i].v);
    }
    fprintf(stderr, "\n");
}

/* Random reads of a view (or of the batch tx when v is NULL): single keys,
 * ranges, and the scans iteration makes (open end, starting after a key). */
static void model_check(bk_backend *be, bk_view *v, const model *m, int tries)
{
    bk_error err;
    bk_result r;
    bk_result_init(&r);
    for (int t = 0; t < tries; t++) {
        unsigned char from[6], to[6];
        size_t flen = rand_key(from), tlen = rand_key(to);
        int single = rnd() % 4 == 0;
        if (!single && rnd() % 4 == 0)
            flen = 0;
        if (!single && rnd() % 4 == 0) {
            to[0] = 0xff, to[1] = 0xff, to[2] = 0xff, to[3] = 0xff, to[4] = 0xff;
            tlen = 5;
        }
        bk_slice ts = B(to, tlen);
        bk_query q = { S("m"), B(from, flen), single ? NULL : &ts, 0, 0,
                       rnd() % 3 == 0 ? (int64_t)(rnd() % 6) - 1 : 0 };
        if (!single && rnd() % 2) {
            q.open_end = 1;
            q.after = (int)(rnd() % 2);
            if (rnd() % 2)
                q.to = NULL;
        }
        int rc = v ? bk_view_read(v, &q, &r, &err) : bk_tx_read(be, &q, &r, &err);
        if (!CHECK_OK(rc))
            break;
        if (!CHECK(model_matches(m, &r, &q))) {
            model_dump(v ? "view" : "tx", m, &r, &q);
            break;
        }
    }
    bk_result_free(&r);
}

/* background: commits by the committer thread (batch_limit and interval)
 * interleave; else only this thread's commits happen. */
static void test_model_random(int background)
{
    bk_config cfg;
    cfg_init(&cfg, tmp_path(background ? "model-bg.db" : "model.db"));
    cfg.batch_limit = background ? 7 : 1000000;
    cfg.batch_interval = background ? 0.002 : 1000;
    bk_backend *be = open_cfg(&cfg);
    bk_error err;
    if (!be)
        return;
    model *m = calloc(1, sizeof *m), *old = calloc(1, sizeof *old);
    model *pre = calloc(1, sizeof *pre);   /* as of the section's lock */
    bk_view *oldv = NULL;
    int steps = t_quick() ? 400 : 2000;
    mk_buckets(be, (const char *const[]){ "m", NULL });
    for (int step = 0; step < steps; step++) {
        CHECK_OK(bk_lock(be, &err));
        *pre = *m;
        int ops = 1 + (int)(rnd() % 8);
        for (int i = 0; i < ops; i++) {
            unsigned char k[6];
            size_t klen = rand_key(k);
            int what = (int)(rnd() % 100);
            if (what < 65) {
                char val[24];
                snprintf(val, sizeof val, "v%d.%d", step, i);
                CHECK_OK(bk_put(be, S("m"), B(k, klen), S(val), &err));
                model_put(m, k, klen, val);
            } else if (what < 97) {
                CHECK_OK(bk_delete(be, S("m"), B(k, klen), &err));
                model_del(m, k, klen);
            } else {
                CHECK_OK(bk_delete_bucket(be, S("m"), &err));
                CHECK_OK(bk_create_bucket(be, S("m"), &err));
                m->n = 0;
            }
        }
        model_check(be, NULL, m, 2);
        if (rnd() % 5 == 0) {
            /* rolled back: a view taken during the section never saw it */
            bk_view *during;
            CHECK_OK(bk_view_open(be, &during, &err));
            CHECK_OK(bk_rollback(be, NULL, &err));
            *m = *pre;
            model_check(be, during, m, 2);
            bk_view_close(during);
        } else {
            CHECK_OK(bk_unlock(be, &err));
        }
        if (rnd() % 20 == 0)
            CHECK_OK(bk_commit(be, 0, &err));
        if (rnd() % 25 == 0)
            CHECK_OK(bk_force_commit(be, &err));
        bk_view *v;
        if (CHECK_OK(bk_view_open(be, &v, &err))) {
            model_check(be, v, m, 4);
            bk_view_close(v);
        }
        if (step % 50 == 0) {
            if (oldv) {
                model_check(be, oldv, old, 20);
                bk_view_close(oldv);
            }
            CHECK_OK(bk_view_open(be, &oldv, &err));
            *old = *m;
        }
    }
    if (oldv) {
        model_check(be, oldv, old, 20);
        bk_view_close(oldv);
    }
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
    be = open_cfg(&cfg);
    if (be) {
        bk_view *v;
        CHECK_OK(bk_view_open(be, &v, &err));
        model_check(be, v, m, 50);
        bk_view_close(v);
        close_be(be);
    }
    free(m);
    free(old);
    free(pre);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* Where the single core_test's RNG stood here, 144950 draws in: the
     * model runs the same op sequences as before the split. */
    rng_state = 1657641524358149962ull;
    test_range_long_from();
    test_view_consistency();
    test_model_random(0);
    test_model_random(1);
    return t_done();
}
