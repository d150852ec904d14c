/* faultfs.c: an LD_PRELOAD shim that makes chosen I/O calls fail with the
 * error of a full or failing disk (ENOSPC, EIO, ...), to prove that the
 * backend loses nothing when they do.
 *
 * It interposes the libc calls through which the core and liblmdb write,
 * sync, create, rename and map files (liblmdb 0.9.24 imports pwrite, writev,
 * write, fdatasync, fsync, ftruncate, msync, open and mmap; the core adds
 * copy_file_range, mkstemp and rename). Each call asks the armed rules
 * (faultfs.h) whether to fail; if none says so it calls the real function,
 * found with dlsym(RTLD_NEXT). With nothing armed that costs one atomic load.
 *
 * Rules are armed through the API, or at load time from the environment,
 * so that child processes (lua, busted) can be faulted too:
 *   FAULTFS="call:path:ERR[:skip[:count]][,...]"   e.g. "fdatasync:db:EIO:0:1"
 * ERR is a name (ENOSPC, EIO, EDQUOT, EFBIG, ENOMEM, SHORT) or a number;
 * path may be empty (any file) or end with '$' (a suffix). SHORT is what a
 * disk that fills up mid-write does: the write call writes half of what it
 * was given (rounded up) and returns that count, and from then on (until cleared)
 * fstatvfs reports no free blocks; a call that does not write fails with
 * EIO instead. FAULTFS_VERBOSE=1 prints each fault on stderr.
 *
 * Files are named by path: for an fd, /proc/self/fd/N is read at each call
 * and never cached, since fds are reused. Thread-safe: the backend writes
 * from its committer thread; the rules live under one mutex. */
#undef _FORTIFY_SOURCE   /* its inline open() wrappers would clash with ours */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "faultfs.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

/* Every interposed call; the order of names[] and reals[]. */
enum {
    C_WRITE, C_PWRITE, C_PWRITE64, C_WRITEV, C_PWRITEV, C_PWRITEV64, C_PWRITEV2,
    C_COPY_FILE_RANGE, C_FSYNC, C_FDATASYNC, C_MSYNC, C_FTRUNCATE, C_FTRUNCATE64,
    C_RENAME, C_RENAMEAT, C_RENAMEAT2, C_OPEN, C_OPEN64, C_OPENAT, C_OPENAT64,
    C_MKSTEMP, C_MKSTEMPS, C_MKOSTEMP, C_MKOSTEMPS, C_MKDTEMP, C_MMAP, C_FSTATVFS, NCALLS
};
static const char *const names[NCALLS] = {
    "write", "pwrite", "pwrite64", "writev", "pwritev", "pwritev64", "pwritev2",
    "copy_file_range", "fsync", "fdatasync", "msync", "ftruncate", "ftruncate64",
    "rename", "renameat", "renameat2", "open", "open64", "openat", "openat64",
    "mkstemp", "mkstemps", "mkostemp", "mkostemps", "mkdtemp", "mmap", "fstatvfs"
};
/* "*" leaves mmap out: a mapping failing with ENOSPC is no real failure.
 * fstatvfs never fails: it only reports the full disk SHORT leaves. */
#define ALL_CALLS ((UINT64_C(1) << NCALLS) - 1 - (UINT64_C(1) << C_MMAP) - \
                   (UINT64_C(1) << C_FSTATVFS))
#define WRITES(id) ((id) <= C_COPY_FILE_RANGE)   /* the calls SHORT shortens */
/* What a SHORT write writes: half, rounded up, so that a loop that writes
 * the rest still gets somewhere. */
#define HALF(n) ((n) - (n) / 2)

#define MAX_RULES 32
#define ANY (-1)

typedef struct rule {
    int call;            /* C_* or ANY */
    int dsync;           /* only on O_DSYNC/O_SYNC files */
    int err;
    long skip, count;    /* count < 0: no end; 0: spent */
    char path[256];
} rule;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rule rules[MAX_RULES];
static int nrules;
static uint64_t armed;              /* atomic: bit per call some live rule names */
static long hits[NCALLS], dsync_hits[NCALLS];
static int verbose;
static int full;                    /* atomic: a SHORT write filled the disk */
static void *reals[NCALLS];         /* atomic */

/* The real function: its address is the same in every thread, so a race
 * between two first calls stores one value twice. */
static void *real(int id)
{
    void *p = __atomic_load_n(&reals[id], __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(RTLD_NEXT, names[id]);
        if (!p) {   /* no such function below us: nothing sane to do */
            fprintf(stderr, "faultfs: dlsym(%s): %s\n", names[id], dlerror());
            abort();
        }
        __atomic_store_n(&reals[id], p, __ATOMIC_RELEASE);
    }
    return p;
}

#define REAL(id, fn) ((__typeof__(&fn))real(id))

/* "name", "name@dsync", "*" or NULL (ANY) to a call id, or -2. */
static int parse_call(const char *call, int *dsync)
{
    const char *at = call ? strchr(call, '@') : NULL;
    size_t len = at ? (size_t)(at - call) : call ? strlen(call) : 0;
    *dsync = at != NULL;
    if (!call || !strcmp(call, "*"))
        return ANY;
    if (at && strcmp(at, "@dsync"))
        return -2;
    for (int i = 0; i < NCALLS; i++)
        if (strlen(names[i]) == len && !strncmp(names[i], call, len))
            return i;
    return -2;
}

/* Recomputed under mu whenever a rule is added or spent. */
static void rearm(void)
{
    uint64_t m = 0;
    for (int i = 0; i < nrules; i++)
        if (rules[i].count != 0)
            m |= rules[i].call == ANY ? ALL_CALLS : UINT64_C(1) << rules[i].call;
    __atomic_store_n(&armed, m, __ATOMIC_RELEASE);
}

int faultfs_arm(const char *call, const char *path, int err, long skip, long count)
{
    int dsync, id = parse_call(call, &dsync);
    if (id == -2 || err <= 0 || skip < 0 || (path && strlen(path) >= sizeof rules[0].path)) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&mu);
    if (nrules == MAX_RULES) {
        pthread_mutex_unlock(&mu);
        errno = ENOMEM;
        return -1;
    }
    rule *r = &rules[nrules++];
    r->call = id;
    r->dsync = dsync;
    r->err = err;
    r->skip = skip;
    r->count = count;
    snprintf(r->path, sizeof r->path, "%s", path ? path : "");
    rearm();
    pthread_mutex_unlock(&mu);
    return 0;
}

long faultfs_hits(const char *call)
{
    int dsync, id = parse_call(call, &dsync);
    long n = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < NCALLS; i++)
        if (id == ANY || id == i)
            n += dsync ? dsync_hits[i] : hits[i];
    pthread_mutex_unlock(&mu);
    return n;
}

void faultfs_clear(void)
{
    pthread_mutex_lock(&mu);
    nrules = 0;
    __atomic_store_n(&full, 0, __ATOMIC_RELEASE);
    rearm();
    pthread_mutex_unlock(&mu);
}

/* The path an fd names now ("" if none can be read). */
static void fd_path(int fd, char *buf, size_t size)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = fd < 0 ? -1 : readlink(link, buf, size - 1);
    buf[n < 0 ? 0 : n] = 0;
}

/* The file mapped at addr, from /proc/self/maps (msync names no fd). */
static void map_path(const void *addr, char *buf, size_t size)
{
    char line[4352];
    FILE *f = fopen("/proc/self/maps", "re");
    buf[0] = 0;
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int off = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &off) < 2 || !off)
            continue;
        if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
            snprintf(buf, size, "%s", line + off);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    }
    fclose(f);
}

/* Does a file's path contain pat, or end with it if pat ends with '$'? */
static int path_match(const char *pat, const char *path)
{
    size_t n = strlen(pat), m = path ? strlen(path) : 0;
    if (!path)
        return 0;
    if (n && pat[n - 1] == '$')
        return m >= n - 1 && !memcmp(path + m - (n - 1), pat, n - 1);
    return strstr(path, pat) != NULL;
}

/* Should this call fail? Then the error is returned, and set in errno but
 * for FAULTFS_SHORT on a write call (which then writes half). The call's
 * files are p1 and p2 (either may be NULL); fd is for the O_DSYNC test (or
 * -1). */
static int fault(int id, const char *p1, const char *p2, int fd)
{
    int fl = fd < 0 ? -1 : fcntl(fd, F_GETFL);
    int err = 0, dsync = fl >= 0 && (fl & O_DSYNC);
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nrules && !err; i++) {
        rule *r = &rules[i];
        if (r->count == 0 || (r->call != ANY && r->call != id) ||
            (r->call == ANY && id == C_MMAP))
            continue;
        if (r->path[0] && !path_match(r->path, p1) && !path_match(r->path, p2))
            continue;
        if (r->dsync && !dsync)
            continue;
        if (r->skip > 0) {
            r->skip--;
            continue;
        }
        if (r->count > 0 && --r->count == 0)
            rearm();
        err = r->err;
    }
    if (err) {
        hits[id]++;
        dsync_hits[id] += dsync;
    }
    pthread_mutex_unlock(&mu);
    if (err == FAULTFS_SHORT && !WRITES(id))
        err = EIO;
    if (err && verbose)
        fprintf(stderr, "faultfs: %s(%s%s%s) -> %s\n", names[id], p1 ? p1 : "",
                p2 ? ", " : "", p2 ? p2 : "",
                err == FAULTFS_SHORT ? "a short write" : strerror(err));
    if (err == FAULTFS_SHORT)
        __atomic_store_n(&full, 1, __ATOMIC_RELEASE);
    else if (err)
        errno = err;
    return err;
}

static int armed_for(int id)
{
    return (__atomic_load_n(&armed, __ATOMIC_ACQUIRE) >> id) & 1;
}

/* For calls on one fd, two fds, one path, two paths. */
static int fault_fd(int id, int fd)
{
    char p[4096];
    if (!armed_for(id))
        return 0;
    fd_path(fd, p, sizeof p);
    return fault(id, p, NULL, fd);
}

static int fault_fd2(int id, int in, int out)
{
    char p1[4096], p2[4096];
    if (!armed_for(id))
        return 0;
    fd_path(in, p1, sizeof p1);
    fd_path(out, p2, sizeof p2);
    return fault(id, p1, p2, out);
}

static int fault_path(int id, const char *p1, const char *p2)
{
    return armed_for(id) && fault(id, p1, p2, -1);
}

/* ---- the interposed calls: fail, or pass on to the real one ---- */

ssize_t write(int fd, const void *buf, size_t n)
{
    int e = fault_fd(C_WRITE, fd);
    return e && e != FAULTFS_SHORT ? -1 : REAL(C_WRITE, write)(fd, buf, e ? HALF(n) : n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    int e = fault_fd(C_PWRITE, fd);
    return e && e != FAULTFS_SHORT ? -1 : REAL(C_PWRITE, pwrite)(fd, buf, e ? HALF(n) : n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    int e = fault_fd(C_PWRITE64, fd);
    return e && e != FAULTFS_SHORT ? -1
                                   : REAL(C_PWRITE64, pwrite64)(fd, buf, e ? HALF(n) : n, off);
}

/* A vector write cut short: half of its first buffer. */
#define SHORT_VECTOR(fd, iov, n, ...) \
    ((n) > 0 ? REAL(C_PWRITE, pwrite)(fd, (iov)[0].iov_base, HALF((iov)[0].iov_len), __VA_ARGS__) : 0)

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    int e = fault_fd(C_WRITEV, fd);
    if (e == FAULTFS_SHORT)   /* at the file position, which writev moves */
        return n > 0 ? REAL(C_WRITE, write)(fd, iov[0].iov_base, HALF(iov[0].iov_len)) : 0;
    return e ? -1 : REAL(C_WRITEV, writev)(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    int e = fault_fd(C_PWRITEV, fd);
    if (e == FAULTFS_SHORT)
        return SHORT_VECTOR(fd, iov, n, off);
    return e ? -1 : REAL(C_PWRITEV, pwritev)(fd, iov, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
    int e = fault_fd(C_PWRITEV64, fd);
    if (e == FAULTFS_SHORT)
        return SHORT_VECTOR(fd, iov, n, off);
    return e ? -1 : REAL(C_PWRITEV64, pwritev64)(fd, iov, n, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    int e = fault_fd(C_PWRITEV2, fd);
    if (e == FAULTFS_SHORT)
        return SHORT_VECTOR(fd, iov, n, off);
    return e ? -1 : REAL(C_PWRITEV2, pwritev2)(fd, iov, n, off, flags);
}

ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                        unsigned int flags)
{
    int e = fault_fd2(C_COPY_FILE_RANGE, in, out);
    return e && e != FAULTFS_SHORT
               ? -1
               : REAL(C_COPY_FILE_RANGE, copy_file_range)(in, in_off, out, out_off,
                                                          e ? HALF(n) : n, flags);
}

int fsync(int fd)
{
    return fault_fd(C_FSYNC, fd) ? -1 : REAL(C_FSYNC, fsync)(fd);
}

int fdatasync(int fd)
{
    return fault_fd(C_FDATASYNC, fd) ? -1 : REAL(C_FDATASYNC, fdatasync)(fd);
}

int msync(void *addr, size_t len, int flags)
{
    char p[4096];
    if (armed_for(C_MSYNC)) {
        map_path(addr, p, sizeof p);
        if (fault(C_MSYNC, p, NULL, -1))
            return -1;
    }
    return REAL(C_MSYNC, msync)(addr, len, flags);
}

int ftruncate(int fd, off_t len)
{
    return fault_fd(C_FTRUNCATE, fd) ? -1 : REAL(C_FTRUNCATE, ftruncate)(fd, len);
}

int ftruncate64(int fd, off64_t len)
{
    return fault_fd(C_FTRUNCATE64, fd) ? -1 : REAL(C_FTRUNCATE64, ftruncate64)(fd, len);
}

int rename(const char *from, const char *to)
{
    return fault_path(C_RENAME, from, to) ? -1 : REAL(C_RENAME, rename)(from, to);
}

int renameat(int fromdir, const char *from, int todir, const char *to)
{
    return fault_path(C_RENAMEAT, from, to) ? -1
                                             : REAL(C_RENAMEAT, renameat)(fromdir, from, todir, to);
}

int renameat2(int fromdir, const char *from, int todir, const char *to, unsigned int flags)
{
    return fault_path(C_RENAMEAT2, from, to)
               ? -1
               : REAL(C_RENAMEAT2, renameat2)(fromdir, from, todir, to, flags);
}

/* Each open is an openat: open(p) is openat(AT_FDCWD, p), and the *64
 * forms add O_LARGEFILE. The mode is there only when the flags create. */
#define OPEN_BODY(id, dir, extra)                                                \
    va_list ap;                                                                  \
    va_start(ap, flags);                                                         \
    mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE          \
                      ? (mode_t)va_arg(ap, int) : 0;                             \
    va_end(ap);                                                                  \
    return fault_path(id, path, NULL) ? -1                                       \
                                      : REAL(C_OPENAT, openat)(dir, path, flags | (extra), mode)

int open(const char *path, int flags, ...)
{
    OPEN_BODY(C_OPEN, AT_FDCWD, 0);
}

int open64(const char *path, int flags, ...)
{
    OPEN_BODY(C_OPEN64, AT_FDCWD, O_LARGEFILE);
}

int openat(int dir, const char *path, int flags, ...)
{
    OPEN_BODY(C_OPENAT, dir, 0);
}

int openat64(int dir, const char *path, int flags, ...)
{
    OPEN_BODY(C_OPENAT64, dir, O_LARGEFILE);
}

/* glibc's mkstemp family opens with its internal open, not ours. The path
 * matched is the template, so "XXXXXX" stands for the name to come. */
int mkstemp(char *tmpl)
{
    return fault_path(C_MKSTEMP, tmpl, NULL) ? -1 : REAL(C_MKSTEMP, mkstemp)(tmpl);
}

int mkstemps(char *tmpl, int suffixlen)
{
    return fault_path(C_MKSTEMPS, tmpl, NULL) ? -1 : REAL(C_MKSTEMPS, mkstemps)(tmpl, suffixlen);
}

int mkostemp(char *tmpl, int flags)
{
    return fault_path(C_MKOSTEMP, tmpl, NULL) ? -1 : REAL(C_MKOSTEMP, mkostemp)(tmpl, flags);
}

int mkostemps(char *tmpl, int suffixlen, int flags)
{
    return fault_path(C_MKOSTEMPS, tmpl, NULL)
               ? -1
               : REAL(C_MKOSTEMPS, mkostemps)(tmpl, suffixlen, flags);
}

char *mkdtemp(char *tmpl)
{
    return fault_path(C_MKDTEMP, tmpl, NULL) ? NULL : REAL(C_MKDTEMP, mkdtemp)(tmpl);
}

/* Only file mappings can fail: growing LMDB's map is an munmap and an mmap
 * of the data file, and no file write (mdb_env_set_mapsize, 0.9.24). */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (fd >= 0 && fault_fd(C_MMAP, fd))
        return MAP_FAILED;
    return REAL(C_MMAP, mmap)(addr, len, prot, flags, fd, off);
}

/* A SHORT write filled the disk: no free blocks from then on. */
int fstatvfs(int fd, struct statvfs *buf)
{
    int rc = REAL(C_FSTATVFS, fstatvfs)(fd, buf);
    if (rc == 0 && __atomic_load_n(&full, __ATOMIC_ACQUIRE))
        buf->f_bfree = buf->f_bavail = 0;
    return rc;
}

/* ---- arming from the environment ---- */

static int parse_err(const char *s)
{
    static const struct { const char *name; int err; } known[] = {
        { "ENOSPC", ENOSPC }, { "EIO", EIO }, { "EDQUOT", EDQUOT },
        { "EFBIG", EFBIG }, { "ENOMEM", ENOMEM }, { "SHORT", FAULTFS_SHORT },
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(s, known[i].name))
            return known[i].err;
    char *end;
    long n = strtol(s, &end, 10);
    return *s && !*end && n > 0 && n < 4096 ? (int)n : -1;
}

/* One "call:path:ERR[:skip[:count]]"; count defaults to 1. */
static int arm_spec(char *spec)
{
    char *f[5] = { 0 };
    int n = 0;
    for (char *p = spec; n < 5; n++) {
        f[n] = p;
        if (!(p = strchr(p, ':')))
            break;
        *p++ = 0;
    }
    if (n < 2 || n > 4)
        return -1;
    char *end1 = NULL, *end2 = NULL;
    long skip = n >= 3 ? strtol(f[3], &end1, 10) : 0;
    long count = n >= 4 ? strtol(f[4], &end2, 10) : 1;
    int err = parse_err(f[2]);
    if (err < 0 || (end1 && (*end1 || end1 == f[3])) || (end2 && (*end2 || end2 == f[4])))
        return -1;
    return faultfs_arm(f[0], f[1], err, skip, count);
}

__attribute__((constructor)) static void faultfs_init(void)
{
    const char *v = getenv("FAULTFS_VERBOSE");
    verbose = v && *v && strcmp(v, "0");
    const char *env = getenv("FAULTFS");
    if (!env || !*env)
        return;
    char *copy = strdup(env), *save = NULL;
    if (!copy)
        abort();
    for (char *spec = strtok_r(copy, ",", &save); spec; spec = strtok_r(NULL, ",", &save)) {
        char shown[512];
        snprintf(shown, sizeof shown, "%s", spec);   /* arm_spec cuts it up */
        if (arm_spec(spec)) {   /* a typo must not pass for a test without faults */
            fprintf(stderr, "faultfs: bad rule in FAULTFS: \"%s\" (want "
                    "call:path:ERR[:skip[:count]])\n", shown);
            exit(2);
        }
    }
    free(copy);
}
