/* core_test.h: what the core's C tests (tests/core/NAME_test.c, one program
 * per file of csrc/core) share: opening and closing backends, writing and
 * reading a few keys, hashing, files, a seeded RNG and running this program
 * again as a second process (argv[1] == "--child-..."). */
#ifndef CORE_TEST_H
#define CORE_TEST_H

#include "../test.h"
#include "core/memtable.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#if defined(__has_include) && __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif

static const char *argv0;   /* set by main: run_child runs it again */


/* ---- helpers ---- */

static inline bk_slice S(const char *s)
{
    bk_slice x = { s, strlen(s) };
    return x;
}

static inline bk_slice B(const void *p, size_t n)
{
    bk_slice x = { p, n };
    return x;
}

static inline void cfg_init(bk_config *cfg, const char *path)
{
    bk_config_default(cfg);
    cfg->path = path;
    cfg->no_fsync = 1;
    cfg->mmap_size = (uint64_t)1 << 24;
    cfg->batch_interval = 0.05;
}

static inline bk_backend *open_cfg(const bk_config *cfg)
{
    bk_backend *be = NULL;
    bk_error err;
    if (!CHECK_OK(bk_open(cfg, &be, &err)))
        return NULL;
    return be;
}

static inline bk_backend *open_path(const char *path)
{
    bk_config cfg;
    cfg_init(&cfg, path);
    return open_cfg(&cfg);
}

static inline void close_be(bk_backend *be)
{
    bk_error err;
    if (!be)
        return;
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

/* Lock, create the buckets named in a NULL-terminated list, unlock. */
static inline void mk_buckets(bk_backend *be, const char *const *names)
{
    bk_error err;
    CHECK_OK(bk_lock(be, &err));
    for (; *names; names++)
        CHECK_OK(bk_create_bucket(be, S(*names), &err));
    CHECK_OK(bk_unlock(be, &err));
}

static inline void put1(bk_backend *be, const char *bucket, const char *key, const char *val)
{
    bk_error err;
    CHECK_OK(bk_lock(be, &err));
    CHECK_OK(bk_put(be, S(bucket), S(key), S(val), &err));
    CHECK_OK(bk_unlock(be, &err));
}

/* The value of bucket/key in v (or in a fresh view when v is NULL) as a C
 * string in buf: returns 1, or 0 when absent, or -1 on error. */
static inline int vget(bk_backend *be, bk_view *v, const char *bucket, const char *key,
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
static inline int has(bk_backend *be, const char *bucket, const char *key, const char *want)
{
    char buf[256];
    int found = vget(be, NULL, bucket, key, buf, sizeof buf);
    if (!want)
        return found == 0;
    return found == 1 && !strcmp(buf, want);
}

/* "k=v,k=v" of a result (printable keys). */
static inline const char *joined(const bk_result *r)
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
static inline const char *range_str(bk_backend *be, bk_view *v, const char *bucket,
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

/* The keys of bucket that view v sees. */
static inline uint64_t count_range_view(bk_view *v, const char *bucket)
{
    bk_error err;
    bk_result r;
    uint64_t n = (uint64_t)-1;
    bk_slice to = S("\xff\xff\xff\xff");
    bk_result_init(&r);
    if (CHECK_OK(bk_view_range(v, S(bucket), S(""), &to, 0, &r, &err)))
        n = r.count;
    bk_result_free(&r);
    return n;
}

static inline uint64_t count_range(bk_backend *be, const char *bucket)
{
    bk_error err;
    bk_view *v;
    if (!CHECK_OK(bk_view_open(be, &v, &err)))
        return (uint64_t)-1;
    uint64_t n = count_range_view(v, bucket);
    bk_view_close(v);
    return n;
}

static inline uint32_t hash_of(bk_backend *be)
{
    bk_error err;
    uint32_t h = 0;
    CHECK_OK(bk_hash(be, NULL, 0, &h, &err));
    return h;
}

static inline int log_has(bk_backend *be, const char *needle)
{
    bk_log_entry e;
    int found = 0;
    while (bk_log_pop(be, &e))
        if (strstr(e.message, needle))
            found = 1;
    return found;
}

static inline off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : st.st_size;
}

static inline void write_file(const char *path, const void *data, size_t len)
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
static inline uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Run this program as a child with args; returns its exit status (or -1). */
static inline int run_child(const char *const *args)
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

/* A forked child of this program that goes on from the fork (unlike
 * run_child's): t_fork returns 0 in it (which dies of SIGALRM if stuck for
 * 20 s) and its pid in the parent, after a flush of stdio; the child ends
 * with t_child_exit (exit(): the library's destructors run), failing if
 * checks failed in it; t_child_ok waits for it and checks it did not. */
static int t_failed_at_fork;

/* Is thread tid of this process asleep ("S" in its stat)? (Linux) */
static inline int t_asleep(int tid)
{
    char path[64], stat[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    const char *paren = strrchr(stat, ')');   /* the name may hold anything */
    return paren && paren[1] == ' ' && paren[2] == 'S';
}

/* Waits (up to 10 s) until every other thread of this process has been
 * asleep at two looks 100 ms apart: before a fork meant to find them
 * waiting on locks, so that none is inside malloc (AddressSanitizer's
 * allocator, unlike glibc's, is not held across fork: a child would wait
 * on it for good). */
static inline void t_quiet(void)
{
    int self = (int)gettid(), calm = 0;
    for (int look = 0; look < 100 && calm < 2; look++) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        int all = d != NULL;
        while (all && (e = readdir(d)))
            if (e->d_name[0] != '.' && atoi(e->d_name) != self)
                all = t_asleep(atoi(e->d_name));
        if (d)
            closedir(d);
        calm = all ? calm + 1 : 0;
        usleep(100 * 1000);
    }
    CHECK(calm == 2);
}

static inline pid_t t_fork(void)
{
    fflush(NULL);
    t_failed_at_fork = t_failed;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        alarm(20);
    return pid;
}

static inline void t_child_exit(void)
{
    exit(t_failed > t_failed_at_fork ? 1 : 0);
}

/* Ends the child without a leak check: the scan at exit (LeakSanitizer's
 * runs from exit(), valgrind's at any end) would report the blocks the
 * parent's other threads held only on their stacks when it forked, as
 * those threads are not in the child. Other errors still count. */
static inline void t_child_quit(void)
{
#ifdef VALGRIND_CLO_CHANGE
    VALGRIND_CLO_CHANGE("--leak-check=no");
#endif
    fflush(NULL);
    _exit(t_failed > t_failed_at_fork ? 1 : 0);
}

static inline void t_child_ok(pid_t pid)
{
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- tests ---- */
static inline size_t rand_key(unsigned char *k)
{
    static const unsigned char alpha[] = { 'a', 'b', 0, 0xff };
    size_t len = 1 + rnd() % 4;
    for (size_t i = 0; i < len; i++)
        k[i] = alpha[rnd() % 4];
    return len;
}

static inline void populate(bk_backend *be, const char *bucket, int n, size_t vlen)
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

static inline uint32_t crc_chain(const char *const *parts)
{
    uint32_t crc = 0;
    for (; *parts; parts++)
        crc = bk_crc32c(crc, *parts, strlen(*parts));
    return crc;
}

#endif
