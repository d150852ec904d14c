/* core_test.c: single-threaded tests of the core's C API, plus the memtable
 * and CRC-32C units. Some tests run this program again as a child process
 * (argv[1] == "--child-...") to act as a second process on one database. */
#include "test.h"
#include "core/memtable.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

uint32_t bk_crc32c_soft(uint32_t crc, const void *data, size_t len);

static const char *argv0;

/* ---- helpers ---- */

static bk_slice S(const char *s)
{
    bk_slice x = { s, strlen(s) };
    return x;
}

static bk_slice B(const void *p, size_t n)
{
    bk_slice x = { p, n };
    return x;
}

static void cfg_init(bk_config *cfg, const char *path)
{
    bk_config_default(cfg);
    cfg->path = path;
    cfg->no_fsync = 1;
    cfg->mmap_size = (uint64_t)1 << 24;
    cfg->batch_interval = 0.05;
}

static bk_backend *open_cfg(const bk_config *cfg)
{
    bk_backend *be = NULL;
    bk_error err;
    if (!CHECK_OK(bk_open(cfg, &be, &err)))
        return NULL;
    return be;
}

static bk_backend *open_path(const char *path)
{
    bk_config cfg;
    cfg_init(&cfg, path);
    return open_cfg(&cfg);
}

static void close_be(bk_backend *be)
{
    bk_error err;
    if (!be)
        return;
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

/* Lock, create the buckets named in a NULL-terminated list, unlock. */
static void mk_buckets(bk_backend *be, const char *const *names)
{
    bk_error err;
    CHECK_OK(bk_lock(be, &err));
    for (; *names; names++)
        CHECK_OK(bk_create_bucket(be, S(*names), &err));
    CHECK_OK(bk_unlock(be, &err));
}

static void put1(bk_backend *be, const char *bucket, const char *key, const char *val)
{
    bk_error err;
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S(bucket), S(key), S(val), &err));
    CHECK_OK(bk_unlock(be, &err));
}

/* The value of bucket/key in v (or in a fresh view when v is NULL) as a C
 * string in buf: returns 1, or 0 when absent, or -1 on error. */
static int vget(bk_backend *be, bk_view *v, const char *bucket, const char *key,
                char *buf, size_t n)
{
    bk_error err;
    bk_view *own = NULL;
    bk_result r;
    int found = -1;
    bk_result_init(&r);
    if (!v) {
        if (!CHECK_OK(bk_view_open(be, &own, &err)))
            return -1;
        v = own;
    }
    if (CHECK_OK(bk_view_range(v, S(bucket), S(key), NULL, 0, &r, &err))) {
        CHECK(r.count <= 1);
        found = r.count == 1;
        buf[0] = 0;
        if (found) {
            bk_slice val = bk_result_value(&r, 0);
            size_t len = val.len < n - 1 ? val.len : n - 1;
            memcpy(buf, val.data, len);
            buf[len] = 0;
        }
    }
    bk_result_free(&r);
    bk_view_close(own);
    return found;
}

/* Is bucket/key == want in a fresh view? (want NULL: absent) */
static int has(bk_backend *be, const char *bucket, const char *key, const char *want)
{
    char buf[256];
    int found = vget(be, NULL, bucket, key, buf, sizeof buf);
    if (!want)
        return found == 0;
    return found == 1 && !strcmp(buf, want);
}

/* "k=v,k=v" of a result (printable keys). */
static const char *joined(const bk_result *r)
{
    static char buf[8192];
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < r->count && used < sizeof buf - 1; i++) {
        bk_slice k = bk_result_key(r, i), v = bk_result_value(r, i);
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%.*s=%.*s",
                                 i ? "," : "", (int)k.len, (const char *)k.data,
                                 (int)v.len, (const char *)v.data);
    }
    return buf;
}

/* A range through view v, or through the batch tx of be when v is NULL,
 * as "k=v,k=v". */
static const char *range_str(bk_backend *be, bk_view *v, const char *bucket,
                             const char *from, const char *to, int64_t limit)
{
    bk_error err;
    bk_result r;
    bk_result_init(&r);
    bk_slice t = to ? S(to) : B(NULL, 0);
    const bk_slice *tp = to ? &t : NULL;
    const char *s = "<error>";
    if (CHECK_OK(v ? bk_view_range(v, S(bucket), S(from), tp, limit, &r, &err)
                   : bk_tx_range(be, S(bucket), S(from), tp, limit, &r, &err)))
        s = joined(&r);
    bk_result_free(&r);
    return s;
}

static uint64_t count_range(bk_backend *be, const char *bucket)
{
    bk_error err;
    bk_view *v;
    bk_result r;
    uint64_t n = (uint64_t)-1;
    bk_slice to = S("\xff\xff\xff\xff");
    if (!CHECK_OK(bk_view_open(be, &v, &err)))
        return n;
    bk_result_init(&r);
    if (CHECK_OK(bk_view_range(v, S(bucket), S(""), &to, 0, &r, &err)))
        n = r.count;
    bk_result_free(&r);
    bk_view_close(v);
    return n;
}

static uint32_t hash_of(bk_backend *be)
{
    bk_error err;
    uint32_t h = 0;
    CHECK_OK(bk_hash(be, NULL, 0, &h, &err));
    return h;
}

static int log_has(bk_backend *be, const char *needle)
{
    bk_log_entry e;
    int found = 0;
    while (bk_log_pop(be, &e))
        if (strstr(e.message, needle))
            found = 1;
    return found;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : st.st_size;
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, data, len) == (ssize_t)len);
        close(fd);
    }
}

/* xorshift64*: deterministic randomness. */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Run this program as a child with args; returns its exit status (or -1). */
static int run_child(const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)(uintptr_t)argv0;
        for (; *args && n < 15; args++)
            argv[n++] = (char *)(uintptr_t)*args;
        argv[n] = NULL;
        execv(argv0, argv);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- tests ---- */

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
    CHECK_CODE(bk_defrag(be, &err), BK_ELOCKED);
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

/* ---- random operations against a model ---- */

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

static size_t rand_key(unsigned char *k)
{
    static const unsigned char alpha[] = { 'a', 'b', 0, 0xff };
    size_t len = 1 + rnd() % 4;
    for (size_t i = 0; i < len; i++)
        k[i] = alpha[rnd() % 4];
    return len;
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

static void populate(bk_backend *be, const char *bucket, int n, size_t vlen)
{
    bk_error err;
    char *val = malloc(vlen + 1);
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_create_bucket(be, S(bucket), &err));
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%06d", i);
        memset(val, 'a' + i % 26, vlen);
        CHECK_OK(bk_put(be, S(bucket), S(k), B(val, vlen), &err));
    }
    CHECK_OK(bk_unlock(be, &err));
    free(val);
}

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

static uint32_t crc_chain(const char *const *parts)
{
    uint32_t crc = 0;
    for (; *parts; parts++)
        crc = bk_crc32c(crc, *parts, strlen(*parts));
    return crc;
}

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
    CHECK_OK(bk_defrag(be, &err));
    CHECK(hash_of(be) == want2);
    CHECK(has(be, "a", "k", "0"));
    close_be(be);
}

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
    CHECK_CODE(bk_defrag(be, &err), BK_EREADONLY);
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

static void test_crc32c(void)
{
    CHECK(bk_crc32c(0, "123456789", 9) == 0xE3069283u);
    CHECK(bk_crc32c_soft(0, "123456789", 9) == 0xE3069283u);
    CHECK(bk_crc32c(0, "", 0) == 0);
    CHECK(bk_crc32c(0x12345678u, NULL, 0) == 0x12345678u);
    /* chaining */
    CHECK(bk_crc32c(bk_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
    unsigned char buf[256];
    int bad = 0;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (unsigned char)rnd();
        uint32_t seed = round % 2 ? (uint32_t)rnd() : 0;
        for (size_t off = 0; off < 8; off++)
            for (size_t len = 0; len <= 100; len++) {
                uint32_t a = bk_crc32c(seed, buf + off * 3 + 1, len);
                bad += a != bk_crc32c_soft(seed, buf + off * 3 + 1, len);
                if (len > 10) {
                    uint32_t c = bk_crc32c(bk_crc32c(seed, buf + off * 3 + 1, 7),
                                           buf + off * 3 + 8, len - 7);
                    bad += c != a;
                }
            }
    }
    CHECK(bad == 0);
}

/* ---- memtable ---- */

static int node_is(const mt_node *n, uint32_t bucket, const char *key, uint64_t seq)
{
    return n && n->bucket == bucket && n->seq == seq && n->klen == strlen(key) &&
           !memcmp(mt_key(n), key, n->klen);
}

static void test_memtable(void)
{
    CHECK(mt_keycmp("a", 1, "a", 1) == 0);
    CHECK(mt_keycmp("a", 1, "ab", 2) < 0);
    CHECK(mt_keycmp("ab", 2, "a", 1) > 0);
    CHECK(mt_keycmp("", 0, "a", 1) < 0);
    CHECK(mt_keycmp("", 0, "", 0) == 0);
    CHECK(mt_keycmp("b", 1, "ab", 2) > 0);
    CHECK(mt_keycmp("\xff", 1, "\x01", 1) > 0);
    CHECK(mt_keycmp("a\0", 2, "a", 1) > 0);

    memtable *m = mt_new(7, NULL);
    if (!CHECK(m != NULL))
        return;
    CHECK(m->id == 7 && mt_first(m) == NULL);
    CHECK(mt_seek(m, 1, "a", 1, UINT64_MAX) == NULL);
    CHECK(mt_insert(m, 5, 2, MT_PUT, "a", 1, "x", 1));
    CHECK(mt_insert(m, 1, 1, MT_PUT, "b", 1, "b1", 2));
    CHECK(mt_insert(m, 2, 1, MT_PUT, "a", 1, "a2", 2));
    CHECK(mt_insert(m, 3, 1, MT_PUT, "ab", 2, "ab3", 3));
    CHECK(mt_insert(m, 9, 1, MT_DEL, "a", 1, "", 0));
    CHECK(mt_insert(m, 4, 1, MT_CREATE, "", 0, "", 0));
    CHECK(mt_insert(m, 6, 1, MT_PUT, "a\0", 2, "z", 1));
    CHECK(mt_insert(m, 8, 1, MT_PUT, "a", 1, "a8", 2));
    CHECK(mt_insert(m, 10, 1, MT_DROP, "", 0, "", 0));
    CHECK(m->writes == 9);
    CHECK(m->bytes == 1 + 1 + 1 + 2 + 1 + 2 + 2 + 3 + 1 + 2 + 1 + 1 + 2);

    /* bucket, then key (shorter prefix first), then seq descending */
    mt_node *n = mt_first(m);
    CHECK(node_is(n, 1, "", 10) && n->type == MT_DROP);
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "", 4) && n->type == MT_CREATE);
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "a", 9) && n->type == MT_DEL && n->vlen == 0);
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "a", 8) && n->vlen == 2 && !memcmp(mt_value(n), "a8", 2));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "a", 2) && !memcmp(mt_value(n), "a2", 2));
    n = n ? mt_next(n) : NULL;
    CHECK(n && n->bucket == 1 && n->seq == 6 && n->klen == 2 && !memcmp(mt_key(n), "a\0", 2));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "ab", 3) && !memcmp(mt_value(n), "ab3", 3));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "b", 1));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 2, "a", 5) && n->type == MT_PUT);
    n = n ? mt_next(n) : NULL;
    CHECK(n == NULL);

    /* mt_seek: first node >= (bucket, key, seq) */
    CHECK(node_is(mt_seek(m, 1, "a", 1, UINT64_MAX), 1, "a", 9));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 9), 1, "a", 9));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 8), 1, "a", 8));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 7), 1, "a", 2));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 2), 1, "a", 2));
    n = mt_seek(m, 1, "a", 1, 1);
    CHECK(n && n->seq == 6 && n->klen == 2);
    CHECK(node_is(mt_seek(m, 1, "aa", 2, UINT64_MAX), 1, "ab", 3));
    CHECK(node_is(mt_seek(m, 1, "", 0, UINT64_MAX), 1, "", 10));
    CHECK(node_is(mt_seek(m, 1, "", 0, 5), 1, "", 4));
    CHECK(node_is(mt_seek(m, 1, "", 0, 0), 1, "a", 9));
    CHECK(node_is(mt_seek(m, 1, "c", 1, UINT64_MAX), 2, "a", 5));
    CHECK(node_is(mt_seek(m, 0, "zzz", 3, 0), 1, "", 10));
    CHECK(node_is(mt_seek(m, 2, "", 0, UINT64_MAX), 2, "a", 5));
    CHECK(mt_seek(m, 2, "a", 1, 4) == NULL);
    CHECK(mt_seek(m, 3, "", 0, UINT64_MAX) == NULL);
    mt_ref(m);
    CHECK(m->refs == 2);
    mt_unref(m);
    mt_unref(m);

    /* many random inserts, large values among them */
    m = mt_new(1, NULL);
    if (!CHECK(m != NULL))
        return;
    int count = t_quick() ? 3000 : 20000;
    size_t bigsz = 200 * 1024;
    char *big = malloc(bigsz);
    for (size_t i = 0; i < bigsz; i++)
        big[i] = (char)(i % 253);
    for (int i = 1; i <= count; i++) {
        unsigned char k[8];
        size_t klen = rand_key(k);
        uint32_t bucket = 1 + (uint32_t)(rnd() % 3);
        uint64_t seq = (uint64_t)i;
        if (i % 5000 == 0)
            CHECK(mt_insert(m, seq, bucket, MT_PUT, k, klen, big, bigsz));
        else
            CHECK(mt_insert(m, seq, bucket, (uint8_t)(rnd() % 2), k, klen, &seq, sizeof seq));
    }
    CHECK(m->writes == (uint64_t)count);
    CHECK(m->arena_bytes > bigsz * (size_t)(count / 5000));
    int seen = 0, bad = 0;
    mt_node *prev = NULL;
    for (n = mt_first(m); n; prev = n, n = mt_next(n)) {
        seen++;
        if (n->vlen == bigsz)
            bad += memcmp(mt_value(n), big, bigsz) != 0;
        else {
            uint64_t s;
            memcpy(&s, mt_value(n), sizeof s);
            bad += n->vlen != sizeof s || s != n->seq;
        }
        if (prev) {
            int c = prev->bucket != n->bucket ? (prev->bucket < n->bucket ? -1 : 1)
                                              : mt_keycmp(mt_key(prev), prev->klen, mt_key(n), n->klen);
            bad += c > 0 || (c == 0 && prev->seq <= n->seq);
        }
        /* seeking each node's own position finds it */
        if (seen % 7 == 0)
            bad += mt_seek(m, n->bucket, mt_key(n), n->klen, n->seq) != n;
    }
    CHECK(seen == count);
    CHECK(bad == 0);
    free(big);
    mt_unref(m);
}

/* Rollback's unlinking: a random half of the nodes go, in random order; the
 * rest stay linked in order at every level, the tails stay right (ordered
 * inserts take the fast path after them), and a node unlinked still leads
 * on to the nodes after it. */
static void test_memtable_unlink(void)
{
    memtable *m = mt_new(1, NULL);
    if (!CHECK(m != NULL))
        return;
    enum { N = 4000 };
    mt_node **nodes = calloc(N, sizeof *nodes);
    for (int i = 0; i < N; i++) {
        unsigned char k[8];
        size_t klen = rand_key(k);
        uint64_t seq = (uint64_t)i + 1;
        nodes[i] = mt_insert(m, seq, 1 + (uint32_t)(rnd() % 2), MT_PUT, k, klen, &seq, sizeof seq);
    }
    int dropped = 0;
    uint64_t dropped_bytes = 0;
    for (int i = N - 1; i > 0; i--) {   /* shuffle */
        int j = (int)(rnd() % (uint32_t)(i + 1));
        mt_node *t = nodes[i];
        nodes[i] = nodes[j];
        nodes[j] = t;
    }
    for (int i = 0; i < N / 2; i++) {
        mt_node *next = mt_next(nodes[i]);
        mt_unlink(m, nodes[i]);
        CHECK(mt_next(nodes[i]) == next);   /* a reader standing on it goes on */
        nodes[i]->type = 0xEE;              /* marks it unlinked */
        dropped++;
        dropped_bytes += nodes[i]->klen + nodes[i]->vlen;
    }
    CHECK(m->writes == (uint64_t)(N - dropped) && m->dropped == (uint64_t)dropped);
    CHECK(m->dropped_bytes == dropped_bytes);
    /* in order after the last node: the tails serve the fast path */
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t seq = N + 1 + i;
        unsigned char k[9] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, (unsigned char)i };
        CHECK(mt_insert(m, seq, 9, MT_PUT, k, sizeof k, &seq, sizeof seq));
    }
    int bad = 0;
    for (int level = 0; level < MT_MAX_HEIGHT; level++) {
        size_t count = 0;
        mt_node *prev = NULL;
        for (mt_node *n = m->head->next[level]; n; prev = n, n = n->next[level]) {
            bad += n->type == 0xEE;
            if (prev)
                bad += prev->bucket > n->bucket ||
                       (prev->bucket == n->bucket &&
                        mt_keycmp(mt_key(prev), prev->klen, mt_key(n), n->klen) > 0);
            count++;
        }
        if (level == 0)
            CHECK(count == (size_t)(N - dropped + 100));
    }
    CHECK(bad == 0);
    for (int i = N / 2; i < N; i++)   /* every node kept is found */
        bad += mt_seek(m, nodes[i]->bucket, mt_key(nodes[i]), nodes[i]->klen, nodes[i]->seq) != nodes[i];
    CHECK(bad == 0);
    free(nodes);
    mt_unref(m);
}

/* Whether every page inside [p, p + len) is in memory. */
static int resident(const void *p, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(page - 1);
    unsigned char vec[256];
    if (!CHECK(hi > lo && (hi - lo) / page <= sizeof vec) ||
        !CHECK(mincore((void *)lo, hi - lo, vec) == 0))
        return 0;
    for (uintptr_t i = 0; i < (hi - lo) / page; i++)
        if (!(vec[i] & 1))
            return 0;
    return 1;
}

/* Whether the kernel faults pages in on request (Linux >= 5.14). */
static int can_populate(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!CHECK(p != MAP_FAILED))
        return 0;
    int ok = madvise(p, 4096, MADV_POPULATE_WRITE) == 0;
    munmap(p, 4096);
    return ok;
}

/* Arena blocks are recycled: a memtable's standard blocks go to its pool,
 * up to MT_POOL_MAX of them, and a new memtable's come from there; a large
 * entry's own block goes back to malloc. An empty pool is refilled with
 * MT_REFILL fresh blocks at once, their pages already in memory. */
static void test_memtable_pool(void)
{
    enum { BLOCK = 256 * 1024, HEADER = 2 * sizeof(void *) };
    mt_pool pool;
    mt_pool_init(&pool);
    memtable *m = mt_new(1, &pool);
    CHECK(pool.n == MT_REFILL - 1);
    if (pool.free && can_populate())
        CHECK(resident((const char *)pool.free + HEADER, BLOCK));
    static char val[1000], big[BLOCK / 2];
    uint64_t seq = 0;
    while (m && m->arena_bytes < (uint64_t)(MT_POOL_MAX + 8) * BLOCK) {
        seq++;
        if (!CHECK(mt_insert(m, seq, 1, MT_PUT, &seq, sizeof seq, val, sizeof val)))
            break;
    }
    mt_unref(m);
    CHECK(pool.n == MT_POOL_MAX);
    mt_block *recycled = pool.free;
    m = mt_new(2, &pool);
    if (CHECK(m != NULL)) {
        CHECK(pool.n == MT_POOL_MAX - 1 && m->blocks == recycled);
        CHECK(mt_insert(m, 1, 1, MT_PUT, "k", 1, big, sizeof big));
        CHECK(pool.n == MT_POOL_MAX - 1);   /* a block of its own, from malloc */
        mt_unref(m);
    }
    CHECK(pool.n == MT_POOL_MAX);
    mt_pool_destroy(&pool);
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
    argv0 = argv[0];
    if (argc >= 3 && !strcmp(argv[1], "--child-crash"))
        return child_crash(argv[2]);
    if (argc >= 5 && !strcmp(argv[1], "--child-open"))
        return child_open(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "--child-ro"))
        return child_ro(argv[2], atoi(argv[3]), atoi(argv[4]));

    test_crc32c();
    test_memtable();
    test_memtable_unlink();
    test_memtable_pool();
    test_config();
    test_open_close_reopen();
    test_basic_semantics();
    test_errors();
    test_rollback();
    test_max_key_roundtrip();
    test_range_long_from();
    test_view_consistency();
    test_model_random(0);
    test_model_random(1);
    test_pending_commits();
    test_commit_and_stop();
    test_durability();
    test_map_growth();
    test_snapshot();
    test_hash();
    test_defrag();
    test_busy_and_format();
    test_readonly();
    test_reader_slots();
    return t_done();
}
