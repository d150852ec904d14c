/* defrag_test.c: the tests of defrag.c: defragmentation and its temporary
 * files. */
#include "core_test.h"

/* Temporary directories "<path>.backend-tmp.*" beside path. */
static int count_leftovers(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash + 1;
    size_t blen = strlen(base);
    *slash = 0;
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += !strncmp(e->d_name, base, blen) && !strncmp(e->d_name + blen, ".backend-tmp.", 13);
    if (d)
        closedir(d);
    return n;
}

static void test_defrag(void)
{
    const char *path = tmp_path("defrag.db");
    bk_backend *be = open_path(path);
    bk_error err;
    bk_stats st;
    if (!be)
        return;
    int n = t_quick() ? 2000 : 5000;
    populate(be, "d", n, 200);
    populate(be, "keep", 10, 10);
    CHECK_OK(bk_force_commit(be, &err));
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < n; i++)
        if (i % 10) {
            char k[16];
            snprintf(k, sizeof k, "k%06d", i);
            CHECK_OK(bk_delete(be, S("d"), S(k), &err));
        }
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_force_commit(be, &err));
    uint32_t h = hash_of(be);
    CHECK_OK(bk_stats_get(be, &st, &err));
    uint64_t size0 = st.size, inuse0 = st.size_in_use;
    off_t fsize0 = file_size(path);
    CHECK(inuse0 < size0);
    while (bk_log_pop(be, &(bk_log_entry){ 0 }))
        ;

    bk_view *v;
    bk_snapshot *s;
    bk_result r;
    bk_result_init(&r);
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK_OK(bk_snapshot_open(be, &s, &err));
    put1(be, "keep", "buffered", "yes");   /* pending at defrag time */

    CHECK_OK(bk_defrag(be, &err));
    CHECK(!bk_is_closed(be));
    CHECK(has(be, "keep", "buffered", "yes"));
    CHECK(bk_pending(be) == 0);
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.size < size0 / 2);
    CHECK(file_size(path) < fsize0 / 2);
    CHECK(st.defrag_seconds > 0);
    CHECK_CODE(bk_view_check(v, &err), BK_EINVALID);
    CHECK_CODE(bk_view_range(v, S("d"), S("k000000"), NULL, 0, &r, &err), BK_EINVALID);
    bk_view_close(v);
    CHECK_CODE(bk_snapshot_check(s, &err), BK_EINVALID);
    char c;
    CHECK_CODE(bk_snapshot_read(s, 0, &c, 1, &err), BK_EINVALID);
    CHECK_CODE(bk_snapshot_copy_fd(s, 1, 0, 1, &err), BK_EINVALID);
    bk_snapshot_close(s);
    bk_log_entry e;
    int started = 0, finished = 0;
    while (bk_log_pop(be, &e)) {
        started += strstr(e.message, "defrag started") != NULL;
        finished += strstr(e.message, "defrag finished") != NULL && !strcmp(e.level, "info");
    }
    CHECK(started == 1 && finished == 1);
    CHECK(!bk_log_pop(be, &e));

    /* contents and hash unchanged (but for the key written meanwhile) */
    CHECK(count_range(be, "d") == (uint64_t)n / 10);
    CHECK(has(be, "d", "k000001", NULL));
    bk_slice ign[] = { S("keep"), S("buffered") };
    uint32_t h2;
    CHECK_OK(bk_hash(be, ign, 1, &h2, &err));
    CHECK(h2 == h);

    /* keeps working: writes, commits, growth, a second defrag (none in a section) */
    put1(be, "d", "k000001", "back");
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(has(be, "d", "k000001", "back"));
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S("d"), S("k000002"), S("locked"), &err));
    CHECK_CODE(bk_defrag(be, &err), BK_ELOCKED);
    CHECK(bk_locked_by_me(be));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_defrag(be, &err));
    put1(be, "d", "k000003", "after");
    CHECK(has(be, "d", "k000002", "locked"));
    CHECK(has(be, "d", "k000003", "after"));
    populate(be, "more", 2000, 100);
    h = hash_of(be);
    close_be(be);

    /* no temporary files left behind */
    CHECK(count_leftovers(path) == 0);
    be = open_path(path);
    if (be) {
        CHECK(hash_of(be) == h);
        CHECK(count_range(be, "more") == 2000);
        close_be(be);
    }
    bk_result_free(&r);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_defrag();
    return t_done();
}
