/* reaper.c: the process's reaper, a thread that frees what would stall the
 * thread letting go of it. The one user: the environment of a file a
 * defrag replaced, whose last reference may go in a reader's close, and
 * whose last descriptor makes the file system free the file's blocks (140
 * ms for 400 MB here). The thread starts with the first job and is joined
 * when the library is unloaded or the process exits, after the jobs queued
 * by then; a job that cannot be queued runs on the caller's thread.
 * A forked child has no reaper (only the forking thread is copied) and
 * none of the parent's jobs: they close descriptors by number, which the
 * child may have closed and reused for files of its own (and LMDB says an
 * environment is not to be used after fork). Its copies of those maps and
 * descriptors go when it execs (the descriptors are close-on-exec) or
 * exits. A fork never waits for a job. */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct job {
    void (*run)(void *);
    void *arg;
    struct job *next;
} job;

/* One per process, as the file system's cost is; state under mu. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t work;   /* to the thread: a job, or stopping */
    pthread_cond_t done;   /* from the thread: a job done */
    job *head, **tail;
    job *running;   /* the job the thread runs, or NULL */
    job *parents;   /* in a forked child: the parent's jobs, kept, never run */
    uint64_t queued, finished;   /* jobs queued and done so far, in order */
    int started, stopping, fork_handled;
    pthread_t thread;
} reaper = { .mu = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER,
             .done = PTHREAD_COND_INITIALIZER, .tail = &reaper.head };

static void *reaper_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&reaper.mu);
    for (;;) {
        job *j = reaper.head;
        if (!j) {
            if (reaper.stopping)
                break;
            pthread_cond_wait(&reaper.work, &reaper.mu);
            continue;
        }
        reaper.head = j->next;
        if (!reaper.head)
            reaper.tail = &reaper.head;
        reaper.running = j;
        pthread_mutex_unlock(&reaper.mu);
        j->run(j->arg);
        pthread_mutex_lock(&reaper.mu);
        reaper.running = NULL;
        free(j);
        reaper.finished++;
        pthread_cond_broadcast(&reaper.done);
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
    /* The jobs stay as copies, as do the maps they would have closed
     * (reachable: no leak checker reports them). The conditions' waiters
     * are not in this process: new ones (an assignment, which cannot fail
     * as pthread_cond_init could). */
    reaper.work = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    reaper.done = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    if (reaper.running) {   /* half run, perhaps: never to be run again */
        reaper.running->next = reaper.parents;
        reaper.parents = reaper.running;
        reaper.running = NULL;
    }
    if (reaper.head) {
        *reaper.tail = reaper.parents;
        reaper.parents = reaper.head;
    }
    reaper.head = NULL;
    reaper.tail = &reaper.head;
    reaper.queued = reaper.finished = 0;
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
    reaper.queued++;
    pthread_cond_signal(&reaper.work);
    pthread_mutex_unlock(&reaper.mu);
}

void bk_reap_wait(void)
{
    pthread_mutex_lock(&reaper.mu);
    /* Jobs run in order: those queued before this call are done once as
     * many have finished, whatever is queued meanwhile. */
    uint64_t until = reaper.queued;
    while (reaper.started && reaper.finished < until)
        pthread_cond_wait(&reaper.done, &reaper.mu);
    pthread_mutex_unlock(&reaper.mu);
}

/* Before the library's code is unmapped (dlclose, exit): the thread runs
 * it, so it ends first, with every job done. */
__attribute__((destructor)) static void reaper_join(void)
{
    pthread_mutex_lock(&reaper.mu);
    int started = reaper.started;
    reaper.stopping = 1;
    pthread_cond_signal(&reaper.work);
    pthread_mutex_unlock(&reaper.mu);
    /* Fails only if exit() was called in a job (EDEADLK): nothing is left
     * then to wait for but that very job. */
    if (started && pthread_join(reaper.thread, NULL) == 0) {
        pthread_mutex_lock(&reaper.mu);
        reaper.started = 0;
        pthread_cond_broadcast(&reaper.done);
        pthread_mutex_unlock(&reaper.mu);
    }
}
