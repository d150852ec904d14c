/* util.h: the helpers of the core that the layers beside it (csrc/bolt) may
 * use too, beyond the API of backend.h: errors, quoting, whole reads and
 * writes, fsync of a directory, the clock, key order and starting threads.
 * Defined in util.c. */
#ifndef BK_UTIL_H
#define BK_UTIL_H

#include "backend.h"

#include <pthread.h>
#include <time.h>

#pragma GCC visibility push(hidden)   /* as in backend.h */

/* Fills err (code and a printf message) and returns code. */
int bk_fail(bk_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Bytes for a message: printable ASCII as it is, the rest as \xHH, cut
 * with "..." to fit out[size]. */
void bk_quote(char *out, size_t size, bk_slice s);
/* pread until len bytes are in (zeros past the end of the file) / write all
 * of buf at the file offset: 0, or -1 and errno. */
int bk_read_full(int fd, char *buf, size_t len, uint64_t off);
int bk_write_full(int fd, const char *buf, size_t len);
/* fsync the directory holding path: -1 and errno on failure. */
int bk_fsync_dir(const char *path);
double bk_now(void);
/* bk_now's time t as pthread_cond_timedwait's deadline (CLOCK_REALTIME). */
struct timespec bk_abs_time(double t);
/* Byte order, a prefix first: the order of keys and bucket names. */
int bk_slice_cmp(bk_slice a, bk_slice b);
/* pthread_create with every signal but the faults (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGTRAP, SIGSYS) blocked in the new thread: a process's signals
 * (the Lua interrupt's SIGINT) go to the application's threads, never to
 * the library's, and a fault still reaches its handler. The thread is named
 * `name` (up to 15 bytes, as ps and /proc show it; on Linux). 0 or an
 * errno value. */
int bk_thread_start(pthread_t *thread, const char *name, void *(*run)(void *), void *arg);

#pragma GCC visibility pop

#endif
