/* reaper.c: the process's reaper, a thread that frees what would stall the
 * thread letting go of it. The one user: the environment of a file a
 * defrag replaced, whose last reference may go in a reader's close, and
 * whose last descriptor makes the file system free the file's blocks (140
 * ms for 400 MB here). The thread starts with the first job and is joined
 * when the library is unloaded or the process exits, after the jobs queued
 * by then; a job that cannot be queued runs on the caller's thread. A
 * forked child has no reaper (only the forking thread is copied): it starts
 * its own if it needs one, and its exit joins no thread of its parent's. */
#include "internal.h"

#include <stdlib.h>

typedef struct job {
    void (*run)(void *);
    void *arg;
    struct job *next;
} job;

/* One per process, as the file system's cost is; state under mu. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, **tail;
    int started, stopping, fork_handled;
    pthread_t thread;
} reaper = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .tail = &reaper.head };

static void *reaper_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&reaper.mu);
    for (;;) {
        job *j = reaper.head;
        if (!j) {
            if (reaper.stopping)
                break;
            pthread_cond_wait(&reaper.cv, &reaper.mu);
            continue;
        }
        reaper.head = j->next;
        if (!reaper.head)
            reaper.tail = &reaper.head;
        pthread_mutex_unlock(&reaper.mu);
        j->run(j->arg);
        free(j);
        pthread_mutex_lock(&reaper.mu);
    }
    pthread_mutex_unlock(&reaper.mu);
    return NULL;
}

/* Around fork: the lock held, so that the child's copy is consistent; the
 * child then forgets the parent's thread and jobs (the parent runs them). */
static void fork_prepare(void)
{
    pthread_mutex_lock(&reaper.mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&reaper.mu);
}

static void fork_child(void)
{
    pthread_cond_init(&reaper.cv, NULL);   /* its waiter is not in this process */
    reaper.head = NULL;
    reaper.tail = &reaper.head;
    reaper.started = 0;
    pthread_mutex_unlock(&reaper.mu);
}

void bk_reap(void (*run)(void *), void *arg)
{
    job *j = malloc(sizeof *j);
    pthread_mutex_lock(&reaper.mu);
    if (j && !reaper.started && !reaper.stopping) {
        if (!reaper.fork_handled)
            reaper.fork_handled = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
        reaper.started = reaper.fork_handled && bk_thread_start(&reaper.thread, "bk-reaper", reaper_main, NULL) == 0;
    }
    if (!j || !reaper.started || reaper.stopping) {
        pthread_mutex_unlock(&reaper.mu);
        free(j);
        run(arg);
        return;
    }
    j->run = run;
    j->arg = arg;
    j->next = NULL;
    *reaper.tail = j;
    reaper.tail = &j->next;
    pthread_cond_signal(&reaper.cv);
    pthread_mutex_unlock(&reaper.mu);
}

/* Before the library's code is unmapped (dlclose, exit): the thread runs
 * it, so it ends first, with every job done. */
__attribute__((destructor)) static void reaper_join(void)
{
    pthread_mutex_lock(&reaper.mu);
    int started = reaper.started;
    reaper.stopping = 1;
    pthread_cond_signal(&reaper.cv);
    pthread_mutex_unlock(&reaper.mu);
    if (started)
        pthread_join(reaper.thread, NULL);
}
