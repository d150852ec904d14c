/* test.h: the C tests' tiny harness. CHECK records a failure with its
 * file:line and carries on; t_done() removes the temporary directory,
 * prints "N passed, M failed" and gives the exit status. Thread-safe. */
#ifndef TEST_H
#define TEST_H

#include "core/backend.h"

#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_passed, t_failed;
static pthread_mutex_t t_mu = PTHREAD_MUTEX_INITIALIZER;
static char t_dir[PATH_MAX];
static char **t_paths;
static size_t t_npaths;

static inline int t_check(int ok, const char *what, const char *file, int line)
{
    if (ok) {
        __atomic_add_fetch(&t_passed, 1, __ATOMIC_RELAXED);
        return 1;
    }
    /* Print the first failures only: a loop in a thread can fail often. */
    if (__atomic_add_fetch(&t_failed, 1, __ATOMIC_RELAXED) <= 50)
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
    return 0;
}

/* A bk_* call's code against the expected one, with the error message. */
static inline int t_check_code(int got, int want, const bk_error *err,
                               const char *what, const char *file, int line)
{
    if (got == want)
        return t_check(1, what, file, line);
    char buf[600];
    snprintf(buf, sizeof buf, "%s: got %d, want %d (%s)", what, got, want,
             got ? err->msg : "no error");
    return t_check(0, buf, file, line);
}

#define CHECK(cond) t_check(!!(cond), #cond, __FILE__, __LINE__)
/* These expect a `bk_error err` in scope. */
#define CHECK_CODE(expr, want) t_check_code((expr), (want), &err, #expr, __FILE__, __LINE__)
#define CHECK_OK(expr) CHECK_CODE(expr, BK_OK)

static inline int t_quick(void)
{
    const char *q = getenv("BACKEND_TEST_QUICK");
    return q && *q && strcmp(q, "0");
}

/* A fresh path in the test's temporary directory (freed by t_done). */
static inline const char *tmp_path(const char *name)
{
    pthread_mutex_lock(&t_mu);
    if (!t_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(t_dir, sizeof t_dir, "%s/bktest.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(t_dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    size_t n = strlen(t_dir) + strlen(name) + 2;
    char *p = malloc(n);
    char **paths = realloc(t_paths, (t_npaths + 1) * sizeof *paths);
    if (!p || !paths) {
        perror("tmp_path");
        exit(2);
    }
    snprintf(p, n, "%s/%s", t_dir, name);
    t_paths = paths;
    t_paths[t_npaths++] = p;
    pthread_mutex_unlock(&t_mu);
    return p;
}

static inline int t_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline int t_done(void)
{
    if (t_dir[0])
        nftw(t_dir, t_rm, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < t_npaths; i++)
        free(t_paths[i]);
    free(t_paths);
    printf("%d passed, %d failed\n", t_passed, t_failed);
    fflush(stdout);
    return t_failed ? 1 : 0;
}

#endif
