/* snapshot_test.c: the tests of snapshot.c: snapshots, their reads and
 * copies. */
#include "core_test.h"

static int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = getc(fa), cb = getc(fb);
        if (ca != cb)
            eq = 0;
        if (ca == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return eq;
}

static void test_snapshot(void)
{
    bk_backend *be = open_path(tmp_path("snap.db"));
    bk_error err;
    bk_snapshot *s;
    bk_stats st;
    if (!be)
        return;
    populate(be, "a", 500, 100);
    populate(be, "b", 50, 3000);   /* overflow pages */
    put1(be, "a", "x", "before");
    CHECK_OK(bk_force_commit(be, &err));
    uint32_t h0 = hash_of(be);
    /* opening commits first */
    put1(be, "a", "y", "pending");
    if (!CHECK_OK(bk_snapshot_open(be, &s, &err))) {
        close_be(be);
        return;
    }
    uint32_t h1 = hash_of(be);
    CHECK(h1 != h0);
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_stats_get(be, &st, &err));
    uint64_t size = bk_snapshot_size(s);
    CHECK(size > 0 && size % st.page_size == 0 && size <= (uint64_t)file_size(bk_path(be)));
    CHECK(st.open_read_tx_n == 1);
    CHECK_OK(bk_snapshot_check(s, &err));

    /* many later commits that free and reuse pages */
    for (int round = 0; round < 20; round++) {
        CHECK_OK(bk_lock(be, &err));
        for (int i = 0; i < 500; i += 2) {
            char k[16], v[32];
            snprintf(k, sizeof k, "k%06d", i);
            snprintf(v, sizeof v, "round %d", round);
            if (round % 3 == 2)
                CHECK_OK(bk_delete(be, S("a"), S(k), &err));
            else
                CHECK_OK(bk_put(be, S("a"), S(k), S(v), &err));
        }
        CHECK_OK(bk_delete_bucket(be, S("b"), &err));
        CHECK_OK(bk_put(be, S("a"), S("x"), S("after"), &err));
        CHECK_OK(bk_unlock(be, &err));
        CHECK_OK(bk_force_commit(be, &err));
    }
    uint32_t h2 = hash_of(be);
    CHECK(h2 != h1);

    /* whole copy, chunked copy (across the meta pages), and reads agree */
    const char *copy = tmp_path("snap-copy.db"), *copy2 = tmp_path("snap-copy2.db");
    int fd = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK_OK(bk_snapshot_copy_fd(s, fd, 0, size, &err));
    close(fd);
    CHECK(file_size(copy) == (off_t)size);
    fd = open(copy2, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    uint64_t chunks[] = { 100, 5000, 3192, 1 };
    uint64_t off = 0;
    for (int i = 0; off < size; i++) {
        uint64_t len = i < 4 ? chunks[i] : 65536;
        if (len > size - off)
            len = size - off;
        CHECK_OK(bk_snapshot_copy_fd(s, fd, off, len, &err));
        off += len;
    }
    close(fd);
    CHECK(files_equal(copy, copy2));
    char *buf = malloc(size), *buf2 = malloc(size);
    CHECK_OK(bk_snapshot_read(s, 0, buf, size, &err));
    CHECK_OK(bk_snapshot_read(s, 0, buf2, 4096 + 17, &err));
    CHECK_OK(bk_snapshot_read(s, 4096 + 17, buf2 + 4096 + 17, size - 4096 - 17, &err));
    CHECK(!memcmp(buf, buf2, size));
    fd = open(copy, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf2, size) == (ssize_t)size && !memcmp(buf, buf2, size));
    close(fd);
    free(buf);
    free(buf2);
    char c;
    CHECK_CODE(bk_snapshot_copy_fd(s, 1, size, 1, &err), BK_EARG);
    CHECK_CODE(bk_snapshot_read(s, size - 1, &c, 2, &err), BK_EARG);
    CHECK_OK(bk_snapshot_read(s, size, &c, 0, &err));

    /* the copy is a database with the snapshot's contents */
    bk_backend *cb = open_path(copy);
    if (cb) {
        CHECK(hash_of(cb) == h1);
        CHECK(has(cb, "a", "x", "before"));
        CHECK(has(cb, "a", "y", "pending"));
        CHECK(count_range(cb, "a") == 502);
        CHECK(count_range(cb, "b") == 50);
        close_be(cb);
    }
    bk_snapshot_close(s);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.open_read_tx_n == 0);
    CHECK(hash_of(be) == h2);

    /* a snapshot of a closed backend */
    CHECK_OK(bk_snapshot_open(be, &s, &err));
    CHECK_OK(bk_close(be, 0, &err));
    CHECK_CODE(bk_snapshot_check(s, &err), BK_ECLOSED);
    CHECK_CODE(bk_snapshot_read(s, 0, &c, 1, &err), BK_ECLOSED);
    bk_snapshot_close(s);
    bk_free(be);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_snapshot();
    return t_done();
}
