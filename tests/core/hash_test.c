/* hash_test.c: the tests of hash.c: etcd's hash, ignores included. */
#include "core_test.h"

static void test_hash(void)
{
    bk_backend *be = open_path(tmp_path("hash.db"));
    bk_error err;
    if (!be)
        return;
    CHECK(hash_of(be) == 0);
    mk_buckets(be, (const char *const[]){ "b", "a", "empty", NULL });
    put1(be, "b", "k2", "v2");
    put1(be, "b", "k1", "v1");
    put1(be, "a", "x", "y");
    /* hash commits first; buckets by name, keys in order */
    uint32_t want = crc_chain((const char *const[]){ "a", "x", "y", "b", "k1", "v1", "k2", "v2",
                                                     "empty", NULL });
    CHECK(hash_of(be) == want);
    bk_slice ign[] = { S("b"), S("k1"), S("nosuch"), S("k"), S("a"), S("zz") };
    uint32_t h;
    CHECK_OK(bk_hash(be, ign, 3, &h, &err));
    CHECK(h == crc_chain((const char *const[]){ "a", "x", "y", "b", "k2", "v2", "empty", NULL }));
    /* buffered writes count once committed */
    put1(be, "a", "x", "z");
    CHECK(hash_of(be) == crc_chain((const char *const[]){ "a", "x", "z", "b", "k1", "v1", "k2",
                                                          "v2", "empty", NULL }));
    close_be(be);

    /* binary bucket names: distinct, in byte order, kept across reopen */
    const char *path = tmp_path("binnames.db");
    be = open_path(path);
    if (!be)
        return;
    static const struct { const char *s; size_t n; } names[] = {
        { "a", 1 }, { "a\0b", 3 }, { "a\0", 2 }, { "a\1", 2 }, { "a\2", 2 }, { "\1", 1 }, { "\0", 1 },
    };
    enum { NN = sizeof names / sizeof *names };
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < NN; i++) {
        char val[8];
        snprintf(val, sizeof val, "%d", i);
        CHECK_OK(bk_create_bucket(be, B(names[i].s, names[i].n), &err));
        CHECK_OK(bk_put(be, B(names[i].s, names[i].n), S("k"), S(val), &err));
    }
    CHECK_OK(bk_unlock(be, &err));
    /* byte order: "\0" "\1" "a" "a\0" "a\0b" "a\1" "a\2" */
    static const int order[NN] = { 6, 5, 0, 2, 1, 3, 4 };
    uint32_t want2 = 0;
    for (int i = 0; i < NN; i++) {
        char val[8];
        snprintf(val, sizeof val, "%d", order[i]);
        want2 = bk_crc32c(want2, names[order[i]].s, names[order[i]].n);
        want2 = bk_crc32c(want2, "k", 1);
        want2 = bk_crc32c(want2, val, strlen(val));
    }
    CHECK(hash_of(be) == want2);
    for (int round = 0; round < 2; round++) {
        bk_view *v;
        bk_result r;
        bk_result_init(&r);
        CHECK_OK(bk_view_open(be, &v, &err));
        for (int i = 0; i < NN; i++) {
            char wantkv[16];
            snprintf(wantkv, sizeof wantkv, "k=%d", i);
            CHECK_OK(bk_view_range(v, B(names[i].s, names[i].n), S("k"), NULL, 0, &r, &err));
            CHECK(r.count == 1 && !strcmp(joined(&r), wantkv));
        }
        bk_result_free(&r);
        bk_view_close(v);
        close_be(be);
        be = open_path(path);
        if (!be)
            return;
        CHECK(hash_of(be) == want2);
    }
    CHECK_OK(bk_defrag(be, NULL, &err));
    CHECK(hash_of(be) == want2);
    CHECK(has(be, "a", "k", "0"));
    close_be(be);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_hash();
    return t_done();
}
