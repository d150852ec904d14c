/* util.c: what every file of the core (and bolt) leans on, none of it
 * about one concept of the backend: errors and their messages, byte quoting,
 * full reads and writes, fsync of a directory, the clock, key order,
 * starting threads, the process a backend belongs to, the histograms of
 * the stats and the log queue the binding drains. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define LOG_MAX 1000

/* ---- errors ---- */

int bk_fail(bk_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* Bytes for a message: printable ASCII as it is, the rest as \xHH. */
void bk_quote(char *out, size_t size, bk_slice s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s.data;
    size_t i = 0, o = 0;
    /* Each byte takes up to 4; keep room for "..." and the NUL. */
    for (; i < s.len && o + 8 <= size; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
            out[o++] = (char)p[i];
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
        }
    }
    if (i < s.len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
}

int bk_mdb_fail(bk_error *err, int rc, const char *what)
{
    int damaged = rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND;
    return bk_fail(err, BK_EIO, "%s: %s%s", what, mdb_strerror(rc),
                   damaged ? " (the database file is damaged)" : "");
}

/* LMDB turns a short write into EIO (mdb_page_flush): the kernel writes what
 * fits on a disk that fills up mid-write, and fails only the next write
 * with ENOSPC. So an EIO on a file system with (all but) no room left is
 * reported as what it most likely is. */
#define FULL_BYTES ((uint64_t)1 << 20)

int bk_write_fail(const bk_backend *be, bk_error *err, int rc, const char *what)
{
    struct statvfs sv;
    if (rc == EIO && be->datafd >= 0 && fstatvfs(be->datafd, &sv) == 0) {
        /* root may write into the blocks reserved for it */
        uint64_t room = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
        if (room < FULL_BYTES)
            return bk_fail(err, BK_EIO, "%s: %s (LMDB: %s, a short write; %llu bytes free)",
                           what, strerror(ENOSPC), mdb_strerror(rc), (unsigned long long)room);
    }
    if (rc == ENOSPC)   /* the same words whichever way it came */
        return bk_fail(err, BK_EIO, "%s: %s", what, strerror(ENOSPC));
    return bk_mdb_fail(err, rc, what);
}

/* ---- files and time ---- */

int bk_read_full(int fd, char *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pread(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {   /* pages past the end of the file read as zeros */
            memset(buf, 0, len);
            return 0;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int bk_write_full(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int bk_fsync_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

double bk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct timespec bk_abs_time(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    return ts;
}

int bk_slice_cmp(bk_slice a, bk_slice b)
{
    return mt_keycmp(a.data, a.len, b.data, b.len);
}

int bk_thread_start(pthread_t *thread, const char *name, void *(*run)(void *), void *arg)
{
    /* The application's signals go to its own threads; a fault (SIGSEGV and
     * the like) is the faulting thread's own and must reach its handler,
     * or the kernel kills the process with no report. */
    static const int faults[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS };
    sigset_t all, old;
    sigfillset(&all);
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++)
        sigdelset(&all, faults[i]);
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);   /* the new thread inherits it */
    if (rc)
        return rc;
    rc = pthread_create(thread, NULL, run, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);   /* cannot fail: the set was valid */
#ifdef __linux__   /* glibc, musl and bionic have it, in this form */
    if (!rc)
        pthread_setname_np(*thread, name);   /* a name only helps: its failure does not matter */
#else
    (void)name;
#endif
    return rc;
}

/* ---- histograms ---- */

void bk_hist_init(bk_hist *h, double first, int n)
{
    memset(h, 0, sizeof *h);
    h->first = first;
    h->n = n;
}

void bk_hist_observe(bk_backend *be, bk_hist *h, double seconds)
{
    pthread_mutex_lock(&be->hist_mu);
    double bound = h->first;
    for (int i = 0; i < h->n; i++, bound *= 2)
        if (seconds <= bound) {
            h->counts[i]++;
            break;
        }
    h->count++;
    h->sum += seconds;
    pthread_mutex_unlock(&be->hist_mu);
}

/* ---- the log queue ---- */

void bk_log(bk_backend *be, const char *level, const char *fmt, ...)
{
    log_node *n = calloc(1, sizeof *n);
    if (!n)
        return;
    va_list ap;
    n->e.level = level;
    va_start(ap, fmt);
    vsnprintf(n->e.message, sizeof n->e.message, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&be->log_mu);
    if (be->log_len >= LOG_MAX) {   /* bounded: drop the oldest */
        log_node *old = be->log_head;
        be->log_head = old->next;
        __atomic_store_n(&be->log_len, be->log_len - 1, __ATOMIC_RELAXED);
        free(old);
        if (!be->log_head)
            be->log_tail = NULL;
    }
    if (be->log_tail)
        be->log_tail->next = n;
    else
        be->log_head = n;
    be->log_tail = n;
    __atomic_store_n(&be->log_len, be->log_len + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&be->log_mu);
}

/* ---- the process a backend belongs to ----
 * fork() copies a backend into the child without its threads, with its
 * mutexes as they were (held, perhaps, by a thread the child lacks) and
 * its descriptors by number; LMDB says an environment is not to be used
 * after fork. So a backend belongs to the process that opened it: in a
 * forked child it reads as closed, every call that reads, writes or waits
 * refuses it before any lock, and a close or free leaves it be (its copy
 * goes when the child execs or exits). So is a defrag job, which may
 * outlive its backend. A process counts the forks
 * since the first backend was opened. */

static unsigned forks;   /* changed only in a child, while it has one thread */
static int fork_counted;
static pthread_mutex_t atfork_mu = PTHREAD_MUTEX_INITIALIZER;

int bk_atfork_once(int *done, void (*prepare)(void), void (*parent)(void),
                   void (*child)(void), bk_error *err)
{
    if (__atomic_load_n(done, __ATOMIC_ACQUIRE))
        return BK_OK;
    pthread_mutex_lock(&atfork_mu);
    int rc = *done ? 0 : pthread_atfork(prepare, parent, child);
    if (!rc)
        __atomic_store_n(done, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&atfork_mu);
    return rc ? bk_fail(err, BK_EIO, "cannot register a fork handler: %s", strerror(rc)) : BK_OK;
}

static void count_fork(void)
{
    __atomic_store_n(&forks, __atomic_load_n(&forks, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

int bk_process_claim(bk_process *o, bk_error *err)
{
    int rc = bk_atfork_once(&fork_counted, NULL, NULL, count_fork, err);
    if (rc)
        return rc;
    o->forks = __atomic_load_n(&forks, __ATOMIC_RELAXED);
    o->pid = getpid();
    return BK_OK;
}

int bk_process_foreign(const bk_process *o)
{
    return o->forks != __atomic_load_n(&forks, __ATOMIC_RELAXED);
}

int bk_process_fail(const bk_process *o, const char *what, bk_error *err)
{
    return bk_fail(err, BK_ECLOSED, "%s belongs to process %ld (made before fork()); a "
                   "forked child cannot use it", what, (long)o->pid);
}

int bk_foreign(const bk_backend *be)
{
    return bk_process_foreign(&be->process);
}

int bk_log_pop(bk_backend *be, bk_log_entry *out)
{
    /* Every call of the binding asks: nothing queued takes no lock. A
     * forked child leaves its parent's queue be (and its mutex). */
    if (!__atomic_load_n(&be->log_len, __ATOMIC_RELAXED) || bk_foreign(be))
        return 0;
    pthread_mutex_lock(&be->log_mu);
    log_node *n = be->log_head;
    if (n) {
        be->log_head = n->next;
        if (!be->log_head)
            be->log_tail = NULL;
        __atomic_store_n(&be->log_len, be->log_len - 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&be->log_mu);
    if (!n)
        return 0;
    *out = n->e;
    free(n);
    return 1;
}
