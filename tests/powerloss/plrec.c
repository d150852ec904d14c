/* plrec.c: an LD_PRELOAD recorder of every file-system call that changes
 * what a power cut could leave in one directory (PLREC_DIR, absolute and
 * canonical), for the crash-state replayer (replay.lua).
 *
 * It interposes the libc calls by which bytes, sizes and names reach that
 * directory: write, pwrite, writev (LMDB flushes pages with lseek+writev),
 * pwritev*, copy_file_range (snapshots), ftruncate, fsync/fdatasync (of
 * files and of directories), open/openat/creat and mkstemp (creation, and
 * O_TRUNC), rename*, link*, unlink*, remove, mkdir*, mkdtemp, rmdir. Writes
 * on an O_DSYNC/O_SYNC descriptor (LMDB's meta pages) are marked durable on
 * return. Paths by which it cannot follow bytes are recorded so that the
 * replayer refuses the log instead of modelling them wrongly: a shared
 * writable mapping of a file there (LMDB's lock file, whose content LMDB
 * rebuilds at open, is the expected one), msync, fallocate, and stdio
 * opened for writing there (glibc's stdio writes bypass the PLT).
 *
 * The log (PLREC_LOG) is text, an event a line, in the order the calls
 * returned (the recorded call and its line are under one mutex); written
 * bytes go to PLREC_LOG.data, which the W lines point into:
 *   C ino path          a new file            T ino size      ftruncate
 *   W ino off len pos   bytes written         WD ...          the same, O_DSYNC
 *   S ino               fsync/fdatasync       SD dir          fsync of a directory
 *   R from to  L from to  U path  MK path  RD path            names
 *   M text              a mark: fopen("plrec-mark:text") by the workload
 *   X what              something the model does not cover
 * Paths are relative to PLREC_DIR ("." is PLREC_DIR itself). Unset
 * PLREC_DIR: every call passes straight through. */
#undef _FORTIFY_SOURCE   /* its inline open() wrappers would clash with ours */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MARK_PREFIX "plrec-mark:"
#define MAX_INOS 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char dir[PATH_MAX];
static size_t dirlen;
static dev_t dirdev;
static int logfd = -1, datafd = -1;
static uint64_t datapos;
static ino_t inos[MAX_INOS];   /* the files created there: what writes to track */
static int ninos;

/* The real function, looked up once (the same address in every thread). */
static void *real(const char *name, void **slot)
{
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(RTLD_NEXT, name);
        if (!p) {
            fprintf(stderr, "plrec: dlsym(%s): %s\n", name, dlerror());
            abort();
        }
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}
#define REAL(fn) ((__typeof__(&fn))real(#fn, &real_##fn))
#define SLOT(fn) static void *real_##fn

SLOT(write); SLOT(pwrite); SLOT(pwrite64); SLOT(writev); SLOT(pwritev); SLOT(pwritev64);
SLOT(pwritev2); SLOT(copy_file_range); SLOT(fsync); SLOT(fdatasync); SLOT(ftruncate);
SLOT(ftruncate64); SLOT(open); SLOT(open64); SLOT(openat); SLOT(openat64);
SLOT(mkstemp); SLOT(mkostemp); SLOT(rename); SLOT(renameat); SLOT(renameat2);
SLOT(link); SLOT(linkat); SLOT(unlink); SLOT(unlinkat); SLOT(remove); SLOT(mkdir);
SLOT(mkdirat); SLOT(mkdtemp); SLOT(rmdir); SLOT(mmap); SLOT(mmap64); SLOT(msync);
SLOT(fallocate); SLOT(posix_fallocate); SLOT(fopen); SLOT(fopen64);

static void die(const char *what)
{
    fprintf(stderr, "plrec: %s: %s\n", what, strerror(errno));
    abort();   /* a log with a hole in it would prove nothing */
}

static void put_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = REAL(write)(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("writing the log");
        p += n;
        len -= (size_t)n;
    }
}

/* One event line; caller holds mu. */
static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    char line[3 * PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 1) {
        errno = ENAMETOOLONG;
        die("an event line");
    }
    line[n] = '\n';
    put_all(logfd, line, (size_t)n + 1);
}

__attribute__((constructor)) static void init(void)
{
    const char *d = getenv("PLREC_DIR"), *log = getenv("PLREC_LOG");
    char data[PATH_MAX];
    struct stat st;
    if (!d || !*d)
        return;
    if (!log || snprintf(data, sizeof data, "%s.data", log) >= (int)sizeof data ||
        strlen(d) >= sizeof dir || d[0] != '/' || stat(d, &st) < 0) {
        errno = EINVAL;
        die("PLREC_DIR (absolute, existing) and PLREC_LOG must be set");
    }
    logfd = REAL(open)(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    datafd = REAL(open)(data, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat ds;
    if (logfd < 0 || datafd < 0 || fstat(datafd, &ds) < 0)
        die(log);
    datapos = (uint64_t)ds.st_size;   /* one log may hold several processes */
    strcpy(dir, d);
    dirlen = strlen(dir);
    dirdev = st.st_dev;
}

static int active(void)
{
    return logfd >= 0;
}

/* ---- which files ---- */

static int tracked_ino(ino_t ino)
{
    for (int i = 0; i < ninos; i++)
        if (inos[i] == ino)
            return 1;
    return 0;
}

static void track(ino_t ino)
{
    if (tracked_ino(ino))
        return;
    if (ninos == MAX_INOS) {
        errno = ENOMEM;
        die("too many files");
    }
    inos[ninos++] = ino;
}

/* A regular file we follow, by its descriptor; caller holds mu. */
static int tracked_fd(int fd, struct stat *st)
{
    return fstat(fd, st) == 0 && S_ISREG(st->st_mode) && st->st_dev == dirdev &&
           tracked_ino(st->st_ino);
}

/* The absolute path of (at, path) into out; 0 if it cannot be told. */
static int abs_path(int at, const char *path, char *out)
{
    char base[PATH_MAX];
    if (path[0] == '/')
        return snprintf(out, PATH_MAX, "%s", path) < PATH_MAX;
    if (at == AT_FDCWD) {
        if (!getcwd(base, sizeof base))
            return 0;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", at);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0)
            return 0;
        base[n] = 0;
    }
    return snprintf(out, PATH_MAX, "%s/%s", base, path) < PATH_MAX;
}

/* The path relative to dir, or NULL if it lies outside. */
static const char *rel(const char *abs)
{
    if (strncmp(abs, dir, dirlen))
        return NULL;
    if (!abs[dirlen])
        return ".";
    return abs[dirlen] == '/' && abs[dirlen + 1] ? abs + dirlen + 1 : NULL;
}

/* (at, path) relative to dir into out, or NULL. */
static const char *rel_at(int at, const char *path, char *out)
{
    return path && abs_path(at, path, out) ? rel(out) : NULL;
}

static const char *fd_rel(int fd, char *out)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n < 0)
        return NULL;
    out[n] = 0;
    return rel(out);
}

/* ---- bytes ---- */

static void log_bytes(int fd, const struct stat *st, uint64_t off, const struct iovec *iov,
                      int iovcnt, size_t n)
{
    uint64_t pos = datapos;
    size_t left = n;
    for (int i = 0; i < iovcnt && left; i++) {
        size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
        put_all(datafd, iov[i].iov_base, k);
        left -= k;
    }
    datapos += n;
    int fl = fcntl(fd, F_GETFL);
    int dsync = fl >= 0 && (fl & (O_DSYNC | O_SYNC));
    logf_("%s %llu %llu %zu %llu", dsync ? "WD" : "W", (unsigned long long)st->st_ino,
          (unsigned long long)off, n, (unsigned long long)pos);
}

/* A write at the descriptor's position (off < 0) or at off. */
static ssize_t rec_write(int fd, const struct iovec *iov, int iovcnt, off_t off,
                         ssize_t (*call)(void *), void *arg)
{
    struct stat st;
    if (!active())
        return call(arg);
    pthread_mutex_lock(&mu);
    int t = tracked_fd(fd, &st);
    off_t at = t && off < 0 ? lseek(fd, 0, SEEK_CUR) : off;
    ssize_t n = call(arg);
    int e = errno;
    if (t && n > 0)
        log_bytes(fd, &st, (uint64_t)at, iov, iovcnt, (size_t)n);
    pthread_mutex_unlock(&mu);
    errno = e;
    return n;
}

struct wargs {
    int fd;
    const void *buf;
    size_t n;
    const struct iovec *iov;
    int cnt;
    off_t off;
    int flags;
    int kind;
};
enum { K_WRITE, K_PWRITE, K_PWRITE64, K_WRITEV, K_PWRITEV, K_PWRITEV64, K_PWRITEV2 };

static ssize_t do_write(void *p)
{
    struct wargs *a = p;
    switch (a->kind) {
    case K_WRITE: return REAL(write)(a->fd, a->buf, a->n);
    case K_PWRITE: return REAL(pwrite)(a->fd, a->buf, a->n, a->off);
    case K_PWRITE64: return REAL(pwrite64)(a->fd, a->buf, a->n, a->off);
    case K_WRITEV: return REAL(writev)(a->fd, a->iov, a->cnt);
    case K_PWRITEV: return REAL(pwritev)(a->fd, a->iov, a->cnt, a->off);
    case K_PWRITEV64: return REAL(pwritev64)(a->fd, a->iov, a->cnt, a->off);
    default: return REAL(pwritev2)(a->fd, a->iov, a->cnt, a->off, a->flags);
    }
}

static ssize_t buf_write(int kind, int fd, const void *buf, size_t n, off_t off)
{
    struct iovec one = { (void *)(uintptr_t)buf, n };
    struct wargs a = { fd, buf, n, NULL, 0, off, 0, kind };
    return rec_write(fd, &one, 1, off, do_write, &a);
}

static ssize_t vec_write(int kind, int fd, const struct iovec *iov, int cnt, off_t off,
                         int flags)
{
    struct wargs a = { fd, NULL, 0, iov, cnt, off, flags, kind };
    return rec_write(fd, iov, cnt, off, do_write, &a);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    return buf_write(K_WRITE, fd, buf, n, -1);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return buf_write(K_PWRITE, fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    return buf_write(K_PWRITE64, fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    return vec_write(K_WRITEV, fd, iov, n, -1, 0);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    return vec_write(K_PWRITEV, fd, iov, n, off, 0);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
    return vec_write(K_PWRITEV64, fd, iov, n, off, 0);
}

/* off -1: the descriptor's position, as in rec_write. */
ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    return vec_write(K_PWRITEV2, fd, iov, n, off, flags);
}

/* The copied bytes are read again from the input (the output may be
 * write-only) to be logged. */
ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                        unsigned int flags)
{
    struct stat st;
    if (!active())
        return REAL(copy_file_range)(in, in_off, out, out_off, n, flags);
    pthread_mutex_lock(&mu);
    int t = tracked_fd(out, &st);
    off_t at = !t ? 0 : out_off ? *out_off : lseek(out, 0, SEEK_CUR);
    off_t from = !t ? 0 : in_off ? *in_off : lseek(in, 0, SEEK_CUR);
    ssize_t r = REAL(copy_file_range)(in, in_off, out, out_off, n, flags);
    int e = errno;
    if (t && r > 0) {
        char *buf = malloc((size_t)r);
        if (!buf || pread(in, buf, (size_t)r, from) != r)
            die("reading back a copy_file_range");
        struct iovec one = { buf, (size_t)r };
        log_bytes(out, &st, (uint64_t)at, &one, 1, (size_t)r);
        free(buf);
    }
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

/* ---- syncs and sizes ---- */

static int rec_sync(int fd, int data)
{
    struct stat st;
    char buf[PATH_MAX];
    if (!active())
        return data ? REAL(fdatasync)(fd) : REAL(fsync)(fd);
    pthread_mutex_lock(&mu);
    int rc = data ? REAL(fdatasync)(fd) : REAL(fsync)(fd), e = errno;
    const char *r;
    if (rc == 0 && fstat(fd, &st) == 0) {
        if (S_ISDIR(st.st_mode) && (r = fd_rel(fd, buf)))
            logf_("SD %s", r);
        else if (S_ISREG(st.st_mode) && st.st_dev == dirdev && tracked_ino(st.st_ino))
            logf_("S %llu", (unsigned long long)st.st_ino);
    }
    pthread_mutex_unlock(&mu);
    errno = e;
    return rc;
}

int fsync(int fd)
{
    return rec_sync(fd, 0);
}

int fdatasync(int fd)
{
    return rec_sync(fd, 1);
}

static int rec_truncate(int fd, off_t len, int big)
{
    struct stat st;
    if (!active())
        return big ? REAL(ftruncate64)(fd, len) : REAL(ftruncate)(fd, len);
    pthread_mutex_lock(&mu);
    int t = tracked_fd(fd, &st);
    int rc = big ? REAL(ftruncate64)(fd, len) : REAL(ftruncate)(fd, len), e = errno;
    if (t && rc == 0)
        logf_("T %llu %lld", (unsigned long long)st.st_ino, (long long)len);
    pthread_mutex_unlock(&mu);
    errno = e;
    return rc;
}

int ftruncate(int fd, off_t len)
{
    return rec_truncate(fd, len, 0);
}

int ftruncate64(int fd, off64_t len)
{
    return rec_truncate(fd, len, 1);
}

/* ---- opens ---- */

/* After an open of r (relative, or NULL: outside) that returned fd: a new
 * file is logged and followed, a truncated one logged. Caller holds mu. */
static void opened(const char *r, int existed, int flags, int fd)
{
    struct stat st;
    if (!r || fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return;
    if (!existed)
        logf_("C %llu %s", (unsigned long long)st.st_ino, r);
    else if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && tracked_ino(st.st_ino))
        logf_("T %llu 0", (unsigned long long)st.st_ino);
    track(st.st_ino);
}

/* mode is read only when the flags say there is one. */
#define OPEN_MODE(flags, mode)                                 \
    do {                                                       \
        if ((flags) & (O_CREAT | O_TMPFILE)) {                 \
            va_list ap;                                        \
            va_start(ap, flags);                               \
            mode = (mode_t)va_arg(ap, int);                    \
            va_end(ap);                                        \
        }                                                      \
    } while (0)

static int rec_open(int at, const char *path, int flags, mode_t mode,
                    int (*call)(int, const char *, int, mode_t))
{
    char buf[PATH_MAX];
    struct stat st;
    if (!active())
        return call(at, path, flags, mode);
    pthread_mutex_lock(&mu);
    const char *r = rel_at(at, path, buf);
    int existed = !r || lstat(buf, &st) == 0;
    int fd = call(at, path, flags, mode), e = errno;
    opened(r, existed, flags, fd);
    pthread_mutex_unlock(&mu);
    errno = e;
    return fd;
}

static int c_open(int at, const char *p, int f, mode_t m) { (void)at; return REAL(open)(p, f, m); }
static int c_open64(int at, const char *p, int f, mode_t m) { (void)at; return REAL(open64)(p, f, m); }
static int c_openat(int at, const char *p, int f, mode_t m) { return REAL(openat)(at, p, f, m); }
static int c_openat64(int at, const char *p, int f, mode_t m) { return REAL(openat64)(at, p, f, m); }

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    return rec_open(AT_FDCWD, path, flags, mode, c_open);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    return rec_open(AT_FDCWD, path, flags, mode, c_open64);
}

int openat(int at, const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    return rec_open(at, path, flags, mode, c_openat);
}

int openat64(int at, const char *path, int flags, ...)
{
    mode_t mode = 0;
    OPEN_MODE(flags, mode);
    return rec_open(at, path, flags, mode, c_openat64);
}

int creat(const char *path, mode_t mode)
{
    return rec_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode, c_open);
}

int creat64(const char *path, mode_t mode)
{
    return rec_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode, c_open64);
}

/* mkstemp opens inside libc: the file it made is logged after. */
static int rec_mkstemp(char *tmpl, int flags, int with_flags)
{
    if (!active())
        return with_flags ? REAL(mkostemp)(tmpl, flags) : REAL(mkstemp)(tmpl);
    pthread_mutex_lock(&mu);
    int fd = with_flags ? REAL(mkostemp)(tmpl, flags) : REAL(mkstemp)(tmpl), e = errno;
    char buf[PATH_MAX];
    if (fd >= 0)
        opened(rel_at(AT_FDCWD, tmpl, buf), 0, 0, fd);
    pthread_mutex_unlock(&mu);
    errno = e;
    return fd;
}

int mkstemp(char *tmpl)
{
    return rec_mkstemp(tmpl, 0, 0);
}

int mkostemp(char *tmpl, int flags)
{
    return rec_mkstemp(tmpl, flags, 1);
}

/* ---- names ---- */

/* A call on one or two names, logged as "tag a [b]" when it succeeded and
 * its names lie in dir; a name moved in or out of dir cannot be modelled. */
static int rec_names(const char *tag, int at1, const char *p1, int at2, const char *p2,
                     int (*call)(void *), void *arg)
{
    char b1[PATH_MAX], b2[PATH_MAX];
    if (!active())
        return call(arg);
    pthread_mutex_lock(&mu);
    const char *r1 = rel_at(at1, p1, b1), *r2 = p2 ? rel_at(at2, p2, b2) : NULL;
    int rc = call(arg), e = errno;
    if (rc == 0 && p2 && (!r1) != (!r2))
        logf_("X %s across the directory's edge: %s %s", tag, p1, p2);
    else if (rc == 0 && p2 && r1)
        logf_("%s %s %s", tag, r1, r2);
    else if (rc == 0 && !p2 && r1)
        logf_("%s %s", tag, r1);
    pthread_mutex_unlock(&mu);
    errno = e;
    return rc;
}

struct nargs {
    int at1, at2;
    const char *p1, *p2;
    unsigned flags;
    mode_t mode;
};
#define NAMECALL(name, expr) \
    static int c_##name(void *p) { struct nargs *a = p; (void)a; return (expr); }
NAMECALL(rename, REAL(rename)(a->p1, a->p2))
NAMECALL(renameat, REAL(renameat)(a->at1, a->p1, a->at2, a->p2))
NAMECALL(renameat2, REAL(renameat2)(a->at1, a->p1, a->at2, a->p2, a->flags))
NAMECALL(link, REAL(link)(a->p1, a->p2))
NAMECALL(linkat, REAL(linkat)(a->at1, a->p1, a->at2, a->p2, (int)a->flags))
NAMECALL(unlink, REAL(unlink)(a->p1))
NAMECALL(unlinkat, REAL(unlinkat)(a->at1, a->p1, (int)a->flags))
NAMECALL(remove, REAL(remove)(a->p1))
NAMECALL(mkdir, REAL(mkdir)(a->p1, a->mode))
NAMECALL(mkdirat, REAL(mkdirat)(a->at1, a->p1, a->mode))
NAMECALL(rmdir, REAL(rmdir)(a->p1))

int rename(const char *from, const char *to)
{
    struct nargs a = { AT_FDCWD, AT_FDCWD, from, to, 0, 0 };
    return rec_names("R", AT_FDCWD, from, AT_FDCWD, to, c_rename, &a);
}

int renameat(int fd1, const char *from, int fd2, const char *to)
{
    struct nargs a = { fd1, fd2, from, to, 0, 0 };
    return rec_names("R", fd1, from, fd2, to, c_renameat, &a);
}

/* RENAME_EXCHANGE is no rename the model knows. */
int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned int flags)
{
    struct nargs a = { fd1, fd2, from, to, flags, 0 };
    return rec_names(flags & RENAME_EXCHANGE ? "X exchange" : "R", fd1, from, fd2, to,
                     c_renameat2, &a);
}

int link(const char *from, const char *to)
{
    struct nargs a = { AT_FDCWD, AT_FDCWD, from, to, 0, 0 };
    return rec_names("L", AT_FDCWD, from, AT_FDCWD, to, c_link, &a);
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags)
{
    struct nargs a = { fd1, fd2, from, to, (unsigned)flags, 0 };
    return rec_names("L", fd1, from, fd2, to, c_linkat, &a);
}

int unlink(const char *path)
{
    struct nargs a = { AT_FDCWD, AT_FDCWD, path, NULL, 0, 0 };
    return rec_names("U", AT_FDCWD, path, AT_FDCWD, NULL, c_unlink, &a);
}

int unlinkat(int at, const char *path, int flags)
{
    struct nargs a = { at, AT_FDCWD, path, NULL, (unsigned)flags, 0 };
    return rec_names(flags & AT_REMOVEDIR ? "RD" : "U", at, path, AT_FDCWD, NULL, c_unlinkat,
                     &a);
}

/* remove() may be either call: which one, the name says after the fact. */
int remove(const char *path)
{
    struct stat st;
    struct nargs a = { AT_FDCWD, AT_FDCWD, path, NULL, 0, 0 };
    int isdir = lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
    return rec_names(isdir ? "RD" : "U", AT_FDCWD, path, AT_FDCWD, NULL, c_remove, &a);
}

int mkdir(const char *path, mode_t mode)
{
    struct nargs a = { AT_FDCWD, AT_FDCWD, path, NULL, 0, mode };
    return rec_names("MK", AT_FDCWD, path, AT_FDCWD, NULL, c_mkdir, &a);
}

int mkdirat(int at, const char *path, mode_t mode)
{
    struct nargs a = { at, AT_FDCWD, path, NULL, 0, mode };
    return rec_names("MK", at, path, AT_FDCWD, NULL, c_mkdirat, &a);
}

int rmdir(const char *path)
{
    struct nargs a = { AT_FDCWD, AT_FDCWD, path, NULL, 0, 0 };
    return rec_names("RD", AT_FDCWD, path, AT_FDCWD, NULL, c_rmdir, &a);
}

/* mkdtemp makes its directory inside libc: logged after, by its name. */
char *mkdtemp(char *tmpl)
{
    char buf[PATH_MAX];
    if (!active())
        return REAL(mkdtemp)(tmpl);
    pthread_mutex_lock(&mu);
    char *r = REAL(mkdtemp)(tmpl);
    int e = errno;
    const char *rp = r ? rel_at(AT_FDCWD, r, buf) : NULL;
    if (rp)
        logf_("MK %s", rp);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

/* ---- what the model does not cover: recorded, for the replayer to judge ---- */

static void *rec_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off, int big)
{
    struct stat st;
    char buf[PATH_MAX];
    void *p = big ? REAL(mmap64)(addr, len, prot, flags, fd, off)
                  : REAL(mmap)(addr, len, prot, flags, fd, off);
    int e = errno;
    if (active() && p != MAP_FAILED && (prot & PROT_WRITE) && (flags & MAP_SHARED) && fd >= 0) {
        pthread_mutex_lock(&mu);
        const char *r = fd_rel(fd, buf);
        if (r && fstat(fd, &st) == 0)
            logf_("X mmap-shared-writable %llu %s", (unsigned long long)st.st_ino, r);
        pthread_mutex_unlock(&mu);
    }
    errno = e;
    return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return rec_mmap(addr, len, prot, flags, fd, off, 0);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
    return rec_mmap(addr, len, prot, flags, fd, off, 1);
}

/* Only a shared writable mapping has anything to flush. */
int msync(void *addr, size_t len, int flags)
{
    int rc = REAL(msync)(addr, len, flags), e = errno;
    if (active()) {
        pthread_mutex_lock(&mu);
        logf_("X msync %p", addr);
        pthread_mutex_unlock(&mu);
    }
    errno = e;
    return rc;
}

static int rec_fallocate(const char *what, int fd, int rc)
{
    struct stat st;
    int e = errno;
    if (active()) {
        pthread_mutex_lock(&mu);
        if (tracked_fd(fd, &st))
            logf_("X %s %llu", what, (unsigned long long)st.st_ino);
        pthread_mutex_unlock(&mu);
    }
    errno = e;
    return rc;
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    return rec_fallocate("fallocate", fd, REAL(fallocate)(fd, mode, off, len));
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    return rec_fallocate("posix_fallocate", fd, REAL(posix_fallocate)(fd, off, len));
}

/* fopen("plrec-mark:TEXT") is the workload's mark (Lua's io.open calls
 * fopen); stdio opened for writing in dir is recorded as unmodelled. */
static FILE *rec_fopen(const char *path, const char *mode, int big)
{
    char buf[PATH_MAX];
    if (active() && !strncmp(path, MARK_PREFIX, strlen(MARK_PREFIX))) {
        pthread_mutex_lock(&mu);
        logf_("M %s", path + strlen(MARK_PREFIX));
        pthread_mutex_unlock(&mu);
        errno = ENOENT;
        return NULL;
    }
    FILE *f = big ? REAL(fopen64)(path, mode) : REAL(fopen)(path, mode);
    int e = errno;
    if (active() && f && strpbrk(mode, "wa+") && rel_at(AT_FDCWD, path, buf)) {
        pthread_mutex_lock(&mu);
        logf_("X stdio %s", path);
        pthread_mutex_unlock(&mu);
    }
    errno = e;
    return f;
}

FILE *fopen(const char *path, const char *mode)
{
    return rec_fopen(path, mode, 0);
}

FILE *fopen64(const char *path, const char *mode)
{
    return rec_fopen(path, mode, 1);
}
