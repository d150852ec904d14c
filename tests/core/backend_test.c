/* backend_test.c: the tests of backend.c, files.c, env.c, handle.c: config,
 * open and close, busy and foreign files, read-only opens, reader slots and
 * a backend in a forked child. */
#include "core_test.h"
#include "core/internal.h"

#include <unistd.h>

static void test_config(void)
{
    bk_config cfg;
    bk_backend *be = NULL;
    bk_error err;
    const char *path = tmp_path("cfg.db");

    cfg_init(&cfg, NULL);
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    cfg_init(&cfg, "");
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    cfg_init(&cfg, path);
    cfg.batch_interval = 0;
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    cfg_init(&cfg, path);
    cfg.batch_limit = 0;
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    cfg_init(&cfg, path);
    cfg.mmap_size = 100;
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    cfg_init(&cfg, path);
    cfg.max_readers = 0;
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    cfg_init(&cfg, path);
    cfg.max_buffered_bytes = (1 << 20) - 1;
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    CHECK(strstr(err.msg, "max_buffered_bytes") != NULL);
    cfg.max_buffered_bytes = ((uint64_t)1 << 46) + 1;
    CHECK_CODE(bk_open(&cfg, &be, &err), BK_EARG);
    CHECK(file_size(path) < 0);   /* nothing created */
    cfg_init(&cfg, tmp_path("no/such/dir/x.db"));
    CHECK(bk_open(&cfg, &be, &err) != BK_OK);
}

static void test_open_close_reopen(void)
{
    const char *path = tmp_path("reopen.db");
    bk_error err;
    bk_view *v;
    bk_backend *be = open_path(path);
    if (!be)
        return;
    CHECK(!bk_is_closed(be));
    CHECK(bk_path(be)[0] == '/');
    CHECK(strstr(bk_path(be), "reopen.db") != NULL);
    CHECK(bk_max_key_size(be) >= 500);
    mk_buckets(be, (const char *const[]){ "b", NULL });
    put1(be, "b", "k1", "v1");
    put1(be, "b", "k2", "v2");
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK_OK(bk_close(be, 0, &err));
    CHECK(bk_is_closed(be));
    CHECK_OK(bk_close(be, 0, &err));   /* idempotent */
    CHECK_CODE(bk_view_check(v, &err), BK_ECLOSED);
    bk_result r;
    bk_result_init(&r);
    CHECK_CODE(bk_view_range(v, S("b"), S("k1"), NULL, 0, &r, &err), BK_ECLOSED);
    bk_view_close(v);
    CHECK_CODE(bk_lock(be, &err), BK_ECLOSED);
    CHECK_CODE(bk_view_open(be, &v, &err), BK_ECLOSED);
    CHECK_CODE(bk_force_commit(be, &err), BK_ECLOSED);
    bk_stats st;
    CHECK_CODE(bk_stats_get(be, &st, &err), BK_ECLOSED);
    bk_free(be);

    be = open_path(path);
    if (!be)
        return;
    CHECK(has(be, "b", "k1", "v1"));
    CHECK(has(be, "b", "k2", "v2"));
    CHECK_OK(bk_committed_get(be, S("b"), S("k2"), &r, &err));
    CHECK(r.count == 1 && !strcmp(joined(&r), "k2=v2"));
    bk_result_free(&r);
    /* bk_free alone closes (and commits) too. */
    put1(be, "b", "k3", "v3");
    bk_free(be);
    be = open_path(path);
    CHECK(be && has(be, "b", "k3", "v3"));
    close_be(be);

    /* owns_dir: closing removes the files and the emptied directory. */
    const char *dir = tmp_path("rmdir");
    CHECK(mkdir(dir, 0700) == 0);
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s/x.db", dir);
    bk_config cfg;
    cfg_init(&cfg, file);
    cfg.owns_dir = 1;
    be = open_cfg(&cfg);
    if (be) {
        mk_buckets(be, (const char *const[]){ "b", NULL });
        put1(be, "b", "k", "v");
        close_be(be);
    }
    CHECK(file_size(file) < 0);
    CHECK(file_size(dir) < 0);
}

static void test_busy_and_format(void)
{
    const char *path = tmp_path("busy.db");
    bk_backend *be = open_path(path), *b2 = NULL;
    bk_config cfg;
    bk_error err;
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    put1(be, "b", "k", "v");
    CHECK_OK(bk_force_commit(be, &err));
    cfg_init(&cfg, path);
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EBUSY);
    cfg.readonly = 1;
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EBUSY);
    /* the same file by another name */
    const char *link = tmp_path("busy-link.db");
    CHECK(symlink(path, link) == 0);
    cfg_init(&cfg, link);
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EBUSY);
    char dotted[PATH_MAX];
    snprintf(dotted, sizeof dotted, "%s", path);
    char *slash = strrchr(dotted, '/');
    memmove(slash + 2, slash, strlen(slash) + 1);
    slash[0] = '/';
    slash[1] = '.';
    cfg_init(&cfg, dotted);
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EBUSY);
    /* another process: writable refused, read-only fine */
    char code[8];
    snprintf(code, sizeof code, "%d", BK_EBUSY);
    CHECK(run_child((const char *const[]){ "--child-open", path, "0", code, NULL }) == 0);
    snprintf(code, sizeof code, "%d", BK_OK);
    CHECK(run_child((const char *const[]){ "--child-open", path, "1", code, NULL }) == 0);
    close_be(be);
    /* free again once closed */
    cfg_init(&cfg, link);
    be = open_cfg(&cfg);
    CHECK(be && has(be, "b", "k", "v"));
    close_be(be);

    /* not ours */
    const char *junk = tmp_path("junk.db");
    char text[200];
    memset(text, 'x', sizeof text);
    write_file(junk, text, sizeof text);
    cfg_init(&cfg, junk);
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EFORMAT);
    CHECK(strstr(err.msg, "not a backend database") != NULL);
    cfg.readonly = 1;
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EFORMAT);
    write_file(junk, "abc", 3);
    cfg.readonly = 0;
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EFORMAT);
    uint32_t bolt = 0xED0CDAEDu;
    memcpy(text + 16, &bolt, 4);
    write_file(junk, text, sizeof text);
    CHECK_CODE(bk_open(&cfg, &b2, &err), BK_EFORMAT);
    CHECK(strstr(err.msg, "bbolt") != NULL);
    CHECK(file_size(junk) == sizeof text);   /* untouched */
    /* a missing file cannot be opened read-only; an empty one is created */
    cfg_init(&cfg, tmp_path("missing.db"));
    cfg.readonly = 1;
    CHECK(bk_open(&cfg, &b2, &err) != BK_OK);
    const char *empty = tmp_path("empty.db");
    write_file(empty, "", 0);
    cfg_init(&cfg, empty);
    be = open_cfg(&cfg);
    if (be) {
        mk_buckets(be, (const char *const[]){ "b", NULL });
        close_be(be);
    }
}

static int child_open(const char *path, int readonly, int want)
{
    bk_config cfg;
    bk_backend *be = NULL;
    bk_error err;
    cfg_init(&cfg, path);
    cfg.readonly = readonly;
    int rc = bk_open(&cfg, &be, &err);
    if (rc != want)
        fprintf(stderr, "child: bk_open: %d (%s), want %d\n", rc, rc ? err.msg : "", want);
    if (!rc) {
        bk_close(be, 0, &err);
        bk_free(be);
    }
    return rc == want ? 0 : 1;
}

/* Child: read-only; reports b/k, waits for a byte, reports b/k again from
 * a new view, then the code of bk_lock. */
static int child_ro(const char *path, int rfd, int wfd)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    char buf[64], line[128];
    cfg_init(&cfg, path);
    cfg.readonly = 1;
    if (bk_open(&cfg, &be, &err))
        return 3;
    for (int round = 0; round < 2; round++) {
        int found = vget(be, NULL, "b", "k", buf, sizeof buf);
        snprintf(line, sizeof line, "%s\n", found == 1 ? buf : "<none>");
        if (write(wfd, line, strlen(line)) < 0)
            return 4;
        if (round == 0 && read(rfd, buf, 1) != 1)
            return 5;
    }
    snprintf(line, sizeof line, "%d\n", bk_lock(be, &err));
    if (write(wfd, line, strlen(line)) < 0)
        return 6;
    bk_close(be, 0, &err);
    bk_free(be);
    return t_failed ? 7 : 0;
}

static void test_readonly(void)
{
    const char *path = tmp_path("ro.db");
    bk_backend *be = open_path(path);
    bk_config cfg;
    bk_error err;
    if (!be)
        return;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    put1(be, "b", "k", "v1");
    CHECK_OK(bk_force_commit(be, &err));

    /* another process follows our commits */
    int p2c[2], c2p[2];
    CHECK(pipe(p2c) == 0 && pipe(c2p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char r[16], w[16];
        snprintf(r, sizeof r, "%d", p2c[0]);
        snprintf(w, sizeof w, "%d", c2p[1]);
        execl(argv0, argv0, "--child-ro", path, r, w, (char *)NULL);
        _exit(127);
    }
    close(p2c[0]);
    close(c2p[1]);
    FILE *in = fdopen(c2p[0], "r");
    char line[128] = "";
    CHECK(in && fgets(line, sizeof line, in) && !strcmp(line, "v1\n"));
    put1(be, "b", "k", "v2");
    CHECK_OK(bk_force_commit(be, &err));
    CHECK(write(p2c[1], "x", 1) == 1);
    CHECK(in && fgets(line, sizeof line, in) && !strcmp(line, "v2\n"));
    char want[16];
    snprintf(want, sizeof want, "%d\n", BK_EREADONLY);
    CHECK(in && fgets(line, sizeof line, in) && !strcmp(line, want));
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (in)
        fclose(in);
    close(p2c[1]);
    uint32_t h = hash_of(be);
    close_be(be);

    /* in this process once the writer is closed */
    cfg_init(&cfg, path);
    cfg.readonly = 1;
    be = open_cfg(&cfg);
    if (!be)
        return;
    CHECK(has(be, "b", "k", "v2"));
    CHECK(hash_of(be) == h);
    CHECK_CODE(bk_lock(be, &err), BK_EREADONLY);
    CHECK_CODE(bk_put(be, S("b"), S("k"), S("v"), &err), BK_EREADONLY);
    CHECK_CODE(bk_create_bucket(be, S("c"), &err), BK_EREADONLY);
    CHECK_CODE(bk_defrag(be, NULL, &err), BK_EREADONLY);
    CHECK_OK(bk_force_commit(be, &err));
    bk_snapshot *s;
    if (CHECK_OK(bk_snapshot_open(be, &s, &err))) {
        CHECK(bk_snapshot_size(s) > 0);
        bk_snapshot_close(s);
    }
    close_be(be);
}

/* More views than LMDB has reader slots, each over its own commit. */
static void test_reader_slots(void)
{
    bk_config cfg;
    cfg_init(&cfg, tmp_path("readers.db"));
    cfg.max_readers = 4;
    bk_backend *be = open_cfg(&cfg);
    bk_error err;
    if (!be)
        return;
    enum { N = 150 };
    bk_view *views[N];
    mk_buckets(be, (const char *const[]){ "b", NULL });
    for (int i = 0; i < N; i++) {
        char val[16];
        snprintf(val, sizeof val, "%d", i);
        put1(be, "b", "n", val);
        CHECK_OK(bk_force_commit(be, &err));
        views[i] = NULL;
        CHECK_OK(bk_view_open(be, &views[i], &err));
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        char val[16], got[16];
        snprintf(val, sizeof val, "%d", i);
        bad += !views[i] || vget(be, views[i], "b", "n", got, sizeof got) != 1 || strcmp(got, val);
    }
    CHECK(bad == 0);
    CHECK(has(be, "b", "n", "149"));
    /* With the reader slots taken the commits' read txns fail: hash must
     * then fail too, or hash the newest state, never an older one. */
    uint32_t h = 0;
    int hrc = bk_hash(be, NULL, 0, &h, &err);
    CHECK(hrc != BK_OK || h == crc_chain((const char *const[]){ "b", "n", "149", NULL }));
    for (int i = 0; i < N; i++)
        bk_view_close(views[i]);
    put1(be, "b", "n", "last");
    CHECK(hash_of(be) == crc_chain((const char *const[]){ "b", "n", "last", NULL }));
    CHECK(has(be, "b", "n", "last"));
    close_be(be);
}

/* Every lock a call could wait on, held by this thread (in lock order:
 * txn_mu, maplock, ver_mu, then the leaves); a child forked meanwhile has
 * them held for good, by a thread it lacks. */
static void hold_locks(bk_backend *be, int hold)
{
    pthread_mutex_t *leaves[] = { &be->views_mu, &be->cmu, &be->lock_mu, &be->log_mu };
    if (hold) {
        pthread_mutex_lock(&be->txn_mu);
        pthread_rwlock_wrlock(&be->maplock);
        pthread_mutex_lock(&be->ver_mu);
        for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++)
            pthread_mutex_lock(leaves[i]);
        return;
    }
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++)
        pthread_mutex_unlock(leaves[i]);
    pthread_mutex_unlock(&be->ver_mu);
    pthread_rwlock_unlock(&be->maplock);
    pthread_mutex_unlock(&be->txn_mu);
}

/* A writer whose committer cannot commit (its txn_mu held) and whose
 * queue is over max_buffered_bytes, with a commit requested (*t): a
 * bk_lock or bk_commit_wait_for would wait on its cmu, held as well. */
static bk_backend *open_stalled(const char *path, bk_commit_ticket *t)
{
    bk_error err;
    bk_config cfg;
    cfg_init(&cfg, path);
    cfg.max_buffered_bytes = (uint64_t)1 << 20;
    bk_backend *be = open_cfg(&cfg);
    if (!be)
        return NULL;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    static char value[32 << 10];
    pthread_mutex_lock(&be->txn_mu);
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < 64; i++) {   /* 2 MiB in one section */
        char key[8];
        snprintf(key, sizeof key, "k%03d", i);
        CHECK_OK(bk_put(be, S("b"), S(key), B(value, sizeof value), &err));
    }
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_request_commit(be, t, &err));
    pthread_mutex_lock(&be->cmu);
    return be;
}

/* In a forked child the parent's backends (a writer, a stalled writer, a
 * read-only one), a view, a snapshot and a defrag job running at the fork
 * refuse every call, saying whose they are, without waiting on the
 * parent's locks (all held at the fork); closing and freeing them does
 * nothing, even the last reference; a backend the child opens is its own.
 * The parent's go on. */
static void test_forked_child(void)
{
    bk_error err;
    const char *path = tmp_path("forked.db"), *copy = tmp_path("forked-copy.db");
    const char *ro_path = tmp_path("forked-ro.db");
    bk_backend *be = open_path(path), *ro = open_path(ro_path), *stalled;
    if (!be || !ro)
        return;
    mk_buckets(ro, (const char *const[]){ "r", NULL });
    put1(ro, "r", "k", "v");
    close_be(ro);
    bk_config cfg;
    cfg_init(&cfg, ro_path);
    cfg.readonly = 1;
    if (!(ro = open_cfg(&cfg)))
        return;
    mk_buckets(be, (const char *const[]){ "b", NULL });
    put1(be, "b", "k", "v");
    CHECK_OK(bk_force_commit(be, &err));
    bk_view *v = NULL;
    bk_snapshot *s = NULL;
    bk_defrag_job *job = NULL;
    bk_commit_ticket t;
    CHECK_OK(bk_view_open(be, &v, &err));
    CHECK_OK(bk_snapshot_open(be, &s, &err));
    put1(be, "b", "k2", "v2");   /* pending when the child is forked */
    if (!(stalled = open_stalled(tmp_path("forked-stalled.db"), &t)))
        return;
    char owner[64];
    snprintf(owner, sizeof owner, "belongs to process %ld", (long)getpid());

    hold_locks(be, 1);
    pthread_mutex_lock(&ro->txn_mu);
    CHECK_OK(bk_defrag_start(be, &job, &err));   /* its first log waits for log_mu */
    t_quiet();   /* every other thread waits for a lock held here */
    pid_t pid = t_fork();
    if (pid == 0) {
        char buf[16];
        bk_result r;
        bk_stats st;
        uint32_t h;
        bk_log_entry e;
        int rc;
        bk_result_init(&r);
        CHECK(bk_is_closed(be));
        CHECK_CODE(bk_check_open(be, &err), BK_ECLOSED);
        CHECK(strstr(err.msg, owner) != NULL);
        CHECK_CODE(bk_lock(be, &err), BK_ECLOSED);
        CHECK(strstr(err.msg, owner) != NULL);
        CHECK_CODE(bk_put(be, S("b"), S("k"), S("x"), &err), BK_ECLOSED);
        CHECK_CODE(bk_force_commit(be, &err), BK_ECLOSED);
        CHECK_CODE(bk_view_open(be, &v, &err), BK_ECLOSED);   /* v is kept */
        CHECK_CODE(bk_view_range(v, S("b"), S("k"), NULL, 0, &r, &err), BK_ECLOSED);
        CHECK(strstr(err.msg, owner) != NULL);
        CHECK_CODE(bk_view_check(v, &err), BK_ECLOSED);
        CHECK_CODE(bk_snapshot_read(s, 0, buf, sizeof buf, &err), BK_ECLOSED);
        CHECK_CODE(bk_snapshot_buckets(s, &r, &err), BK_ECLOSED);
        CHECK_CODE(bk_snapshot_write_path(s, copy, NULL, NULL, &err), BK_ECLOSED);
        CHECK(access(copy, F_OK) != 0);
        CHECK_CODE(bk_hash(be, NULL, 0, &h, &err), BK_ECLOSED);
        CHECK_CODE(bk_stats_get(be, &st, &err), BK_ECLOSED);
        CHECK_CODE(bk_defrag_start(be, &job, &err), BK_ECLOSED);
        /* The job runs in the parent only: done here, at once. */
        CHECK(bk_defrag_done(job));
        double t0 = bk_now();
        CHECK(bk_defrag_wait_for(job, 5));
        CHECK(bk_now() - t0 < 1);
        CHECK_CODE(bk_defrag_wait(job, NULL, &err), BK_ECLOSED);
        CHECK(strstr(err.msg, "defrag job belongs to process") != NULL);
        CHECK(!bk_log_pop(be, &e));
        /* Over its bound, bk_lock would wait for room; the commit for cmu. */
        CHECK_CODE(bk_lock(stalled, &err), BK_ECLOSED);
        CHECK(bk_commit_wait_for(stalled, &t, 5, &rc, &err) && rc == BK_ECLOSED);
        /* A read-only backend refreshes its file first, under txn_mu. */
        CHECK_CODE(bk_snapshot_open(ro, &s, &err), BK_ECLOSED);   /* s is kept */
        CHECK_CODE(bk_hash(ro, NULL, 0, &h, &err), BK_ECLOSED);
        CHECK(strstr(err.msg, owner) != NULL);
        bk_result_free(&r);
        /* Closes do nothing: none waits for a lock the parent holds, and
         * none frees what is still registered as open (ro's is the last
         * reference: the open below would read it). */
        bk_defrag_job_free(job);
        bk_snapshot_close(s);
        bk_view_close(v);
        CHECK_OK(bk_close(be, 0, &err));
        bk_free(be);
        CHECK_OK(bk_close(ro, 0, &err));
        bk_free(ro);
        CHECK_OK(bk_close(stalled, 1, &err));
        bk_free(stalled);
        bk_backend *own = open_path(tmp_path("forked-child.db"));
        if (own) {
            mk_buckets(own, (const char *const[]){ "c", NULL });
            put1(own, "c", "k", "child");
            CHECK(has(own, "c", "k", "child"));
            close_be(own);
        }
        t_child_quit();   /* the parent's threads were mid-work: see t_quiet */
    }
    pthread_mutex_unlock(&stalled->cmu);
    pthread_mutex_unlock(&stalled->txn_mu);
    pthread_mutex_unlock(&ro->txn_mu);
    hold_locks(be, 0);
    t_child_ok(pid);
    CHECK(!bk_is_closed(be));
    CHECK_OK(bk_defrag_wait(job, NULL, &err));
    bk_defrag_job_free(job);
    CHECK(has(be, "b", "k2", "v2"));
    char buf[16];
    CHECK(vget(be, v, "b", "k", buf, sizeof buf) == 1 && !strcmp(buf, "v"));
    CHECK_OK(bk_snapshot_read(s, 0, buf, sizeof buf, &err));
    bk_snapshot_close(s);
    bk_view_close(v);
    close_be(be);
    CHECK(has(ro, "r", "k", "v"));
    close_be(ro);
    int done;
    CHECK(bk_commit_wait_for(stalled, &t, -1, &done, &err) && done == BK_OK);
    close_be(stalled);
    if ((be = open_path(path))) {   /* the child kept no lock of it */
        CHECK(has(be, "b", "k2", "v2"));
        close_be(be);
    }
}

int main(int argc, char **argv)
{
    argv0 = argv[0];
    if (argc >= 5 && !strcmp(argv[1], "--child-open"))
        return child_open(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "--child-ro"))
        return child_ro(argv[2], atoi(argv[3]), atoi(argv[4]));

    test_config();
    test_open_close_reopen();
    test_busy_and_format();
    test_readonly();
    test_reader_slots();
    test_forked_child();
    return t_done();
}
