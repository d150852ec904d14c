/* defrag_test.c: the tests of defrag.c: defragmentation, online (writes
 * and reads going on, views and snapshots outliving the swap), its job
 * (progress, cancel, one at a time, close), and its temporary files. */
#include "core_test.h"
#include "core/internal.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

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

    bk_defrag_result res;
    CHECK_OK(bk_defrag(be, &res, &err));
    CHECK(!bk_is_closed(be));
    CHECK(has(be, "keep", "buffered", "yes"));
    CHECK(bk_pending(be) == 0);   /* committed first */
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.size < size0 / 2);
    CHECK(res.size_before >= size0 && res.size_after == st.size);
    CHECK(res.seconds > 0 && res.swap_seconds > 0 && res.swap_seconds <= res.seconds);
    CHECK(res.pause_seconds == 0);   /* no writer waited */
    CHECK(file_size(path) < fsize0 / 2);
    CHECK(st.defrag_seconds > 0);
    CHECK(!st.defrag_inflight);
    /* The view and the snapshot opened before read the replaced file. */
    CHECK_OK(bk_view_check(v, &err));
    CHECK(count_range_view(v, "d") == (uint64_t)n / 10);
    char buf[8];
    CHECK(vget(be, v, "keep", "buffered", buf, sizeof buf) == 0);
    bk_view_close(v);
    const char *copy = tmp_path("defrag-snap.db");
    int fd = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK_OK(bk_snapshot_write_fd(s, fd, NULL, NULL, &err));
    close(fd);
    bk_snapshot_close(s);
    bk_backend *sb = open_path(copy);
    if (sb) {
        CHECK(hash_of(sb) == h);
        close_be(sb);
    }
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
    CHECK_CODE(bk_defrag(be, NULL, &err), BK_ELOCKED);
    CHECK(bk_locked_by_me(be));
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_defrag(be, NULL, &err));
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

/* A writer that keeps putting while a background defrag runs. */
typedef struct writer {
    bk_backend *be;
    int stop;    /* atomic */
    int n;       /* keys written: "w%08d" */
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    bk_error err;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        char k[16];
        snprintf(k, sizeof k, "w%08d", w->n);
        if (!CHECK_OK(bk_lock(w->be, &err)))
            break;
        CHECK_OK(bk_put(w->be, S("w"), S(k), S("value"), &err));
        CHECK_OK(bk_unlock(w->be, &err));
        w->n++;
    }
    return NULL;
}

/* Writes and reads go on during the defrag, and nothing is lost. */
static void test_online(void)
{
    const char *path = tmp_path("online.db");
    bk_backend *be = open_path(path);
    bk_error err;
    if (!be)
        return;
    int n = t_quick() ? 20000 : 100000;
    populate(be, "d", n, 100);
    mk_buckets(be, (const char *const[]){ "w", NULL });
    CHECK_OK(bk_force_commit(be, &err));
    uint32_t h0 = hash_of(be);
    bk_view *v;
    CHECK_OK(bk_view_open(be, &v, &err));

    writer w = { be, 0, 0 };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, write_loop, &w) == 0);
    bk_defrag_job *job, *second;
    CHECK_OK(bk_defrag_start(be, &job, &err));
    CHECK_CODE(bk_defrag_start(be, &second, &err), BK_EBUSY);
    CHECK(strstr(err.msg, "already running") != NULL);
    bk_stats st;
    CHECK_OK(bk_stats_get(be, &st, &err));
    CHECK(st.defrag_inflight);   /* a copy of n keys takes milliseconds */
    uint64_t copied, total, last = 0;
    while (!bk_defrag_wait_for(job, 0.001)) {   /* a millisecond at most */
        bk_defrag_progress(job, &copied, &total);
        CHECK(copied >= last && copied <= total);
        last = copied;
    }
    CHECK(bk_defrag_done(job) && bk_defrag_wait_for(job, 0) == 1);
    bk_defrag_result res;
    CHECK_OK(bk_defrag_wait(job, &res, &err));
    CHECK_OK(bk_defrag_wait(job, &res, &err));   /* any number of times */
    bk_defrag_progress(job, &copied, &total);
    CHECK(total > 0 && copied == total);
    bk_defrag_job_free(job);
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK(w.n > 0);

    /* The view from before reads what it did; every write is there. */
    CHECK(count_range_view(v, "d") == (uint64_t)n);
    CHECK(count_range_view(v, "w") == 0);
    bk_view_close(v);
    CHECK(count_range(be, "w") == (uint64_t)w.n);
    CHECK_OK(bk_force_commit(be, &err));
    uint32_t h = hash_of(be);
    close_be(be);
    CHECK(count_leftovers(path) == 0);
    be = open_path(path);
    if (be) {
        CHECK(hash_of(be) == h);
        CHECK(count_range(be, "w") == (uint64_t)w.n);
        CHECK(count_range(be, "d") == (uint64_t)n);
        close_be(be);
    }
    CHECK(h != h0);
}

/* A cancelled defrag, and one that close cancels, leave the file as it
 * was and nothing beside it. */
static void test_cancel(void)
{
    const char *path = tmp_path("cancel.db");
    bk_backend *be = open_path(path);
    bk_error err;
    if (!be)
        return;
    populate(be, "d", t_quick() ? 50000 : 200000, 100);
    CHECK_OK(bk_force_commit(be, &err));
    uint32_t h = hash_of(be);
    struct stat before, after;
    CHECK(stat(path, &before) == 0);
    bk_defrag_job *job;
    CHECK_OK(bk_defrag_start(be, &job, &err));
    bk_defrag_cancel(job);
    CHECK_CODE(bk_defrag_wait(job, NULL, &err), BK_ECANCELED);
    CHECK(strstr(err.msg, "cancelled") != NULL);
    CHECK(bk_defrag_done(job));
    bk_defrag_job_free(job);
    CHECK(stat(path, &after) == 0 && after.st_ino == before.st_ino);
    CHECK(count_leftovers(path) == 0);
    CHECK(hash_of(be) == h);
    CHECK(log_has(be, "defrag cancelled"));

    /* a second name (a hard link) would keep the old file: refused */
    const char *other = tmp_path("cancel-link.db");
    if (CHECK(link(path, other) == 0)) {
        CHECK_CODE(bk_defrag_start(be, &job, &err), BK_EARG);
        CHECK(strstr(err.msg, "hard links") != NULL);
        CHECK(unlink(other) == 0);
    }

    /* close while one runs: cancelled, the handle still answers */
    CHECK_OK(bk_defrag_start(be, &job, &err));
    put1(be, "d", "last", "write");
    close_be(be);
    CHECK(bk_defrag_done(job));
    int rc = bk_defrag_wait(job, NULL, &err);
    CHECK(rc == BK_ECANCELED || rc == BK_OK);   /* it may have been through */
    bk_defrag_job_free(job);
    CHECK(count_leftovers(path) == 0);
    be = open_path(path);
    if (be) {
        CHECK(has(be, "d", "last", "write"));
        close_be(be);
    }
}

/* The descriptors this process holds on path's files that were replaced. */
static int replaced_fds(const char *path)
{
    char want[PATH_MAX + 16], real[PATH_MAX];
    if (!realpath(path, real))
        return -1;
    snprintf(want, sizeof want, "%s (deleted)", real);
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char link[PATH_MAX + 32], target[PATH_MAX + 16];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len > 0) {
            target[len] = 0;
            n += !strcmp(target, want);
        }
    }
    if (d)
        closedir(d);
    return n;
}

static void sleep_job(void *unused)
{
    (void)unused;
    usleep(300 * 1000);
}

/* A defrag of path under a view, then the view's close: the replaced file
 * is closed (by the reaper) within 10 s, or, if `then_close`, by the time
 * the backend's close returns, even behind a slow job. */
static void replaced_file_closes(const char *path, int then_close)
{
    bk_backend *be = open_path(path);
    bk_error err;
    if (!be)
        return;
    populate(be, "d", 2000, 100);
    CHECK_OK(bk_force_commit(be, &err));
    bk_view *v;
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK_OK(bk_defrag(be, NULL, &err));
    CHECK(replaced_fds(path) > 0);
    CHECK(count_range_view(v, "d") == 2000);
    if (then_close)
        bk_reap(sleep_job, NULL);
    bk_view_close(v);   /* the replaced file's last reference: a reaper job */
    if (then_close) {
        close_be(be);
        CHECK(replaced_fds(path) == 0);
        return;
    }
    int tries = 0;
    while (replaced_fds(path) > 0 && tries++ < 1000)
        usleep(10000);
    CHECK(replaced_fds(path) == 0);
    close_be(be);
}

/* The replaced file closes, in this process and in a child forked after
 * the reaper started (which starts its own, and exits, running the
 * library's destructors, without its parent's). */
static void test_replaced_file_closes(void)
{
    replaced_file_closes(tmp_path("replaced.db"), 0);
    replaced_file_closes(tmp_path("replaced-close.db"), 1);
    pid_t pid = t_fork();
    if (pid == 0) {
        replaced_file_closes(tmp_path("replaced-child.db"), 0);
        t_child_exit();
    }
    t_child_ok(pid);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_defrag();
    test_online();
    test_cancel();
    test_replaced_file_closes();
    return t_done();
}
