/* reaper.c: the process's reaper, a thread that frees what would stall the
 * thread letting go of it. The one user: the environment of a file a
 * defrag replaced, whose last reference may go in a reader's close, and
 * whose last descriptor makes the file system free the file's blocks (140
 * ms for 400 MB here). The thread starts with the first job and is joined
 * when the library is unloaded or the process exits, after the jobs queued
 * by then; a job that cannot be queued runs on the caller's thread.
 * A fork waits for the job in flight, so a child has a whole copy of the
 * queue (its own copies of what the jobs free) and no reaper (only the
 * forking thread is copied): it runs the jobs when it starts its own
 * reaper, waits for them, or exits. */
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
    pthread_cond_t work;   /* to the thread: a job, a fork's end, or stopping */
    pthread_cond_t idle;   /* from the thread: a job done */
    job *head, **tail;
    int started, stopping, fork_handled;
    int running;   /* the thread is in a job */
    int forking;   /* forks waiting for the job in flight, or forking: no job starts */
    pthread_t thread;
} reaper = { .mu = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER,
             .idle = PTHREAD_COND_INITIALIZER, .tail = &reaper.head };

/* The first job, taken off the queue, or NULL. Under mu. */
static job *take(void)
{
    job *j = reaper.head;
    if (j) {
        reaper.head = j->next;
        if (!reaper.head)
            reaper.tail = &reaper.head;
    }
    return j;
}

/* Runs j with mu released. Under mu. */
static void run_unlocked(job *j)
{
    pthread_mutex_unlock(&reaper.mu);
    j->run(j->arg);
    free(j);
    pthread_mutex_lock(&reaper.mu);
}

static void *reaper_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&reaper.mu);
    for (;;) {
        job *j = reaper.forking ? NULL : take();
        if (!j) {
            if (reaper.stopping && !reaper.head)
                break;
            pthread_cond_wait(&reaper.work, &reaper.mu);
            continue;
        }
        reaper.running = 1;
        run_unlocked(j);
        reaper.running = 0;
        pthread_cond_broadcast(&reaper.idle);
    }
    pthread_mutex_unlock(&reaper.mu);
    return NULL;
}

/* Around fork: no job in flight and the lock held, so that the child's
 * copy of the queue is whole and consistent. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&reaper.mu);
    reaper.forking++;
    while (reaper.running)
        pthread_cond_wait(&reaper.idle, &reaper.mu);
}

static void fork_parent(void)
{
    reaper.forking--;
    pthread_cond_signal(&reaper.work);
    pthread_mutex_unlock(&reaper.mu);
}

static void fork_child(void)
{
    /* Their waiters are not in this process: new ones (an assignment,
     * which cannot fail as pthread_cond_init could). */
    reaper.work = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    reaper.idle = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    reaper.started = reaper.running = reaper.forking = 0;
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
    pthread_cond_signal(&reaper.work);
    pthread_mutex_unlock(&reaper.mu);
}

/* Runs on this thread the jobs no reaper will (a forked child's). Under mu. */
static void run_orphans(void)
{
    for (job *j; !reaper.started && (j = take());)
        run_unlocked(j);
}

void bk_reap_wait(void)
{
    pthread_mutex_lock(&reaper.mu);
    run_orphans();
    while (reaper.started && (reaper.head || reaper.running))
        pthread_cond_wait(&reaper.idle, &reaper.mu);
    pthread_mutex_unlock(&reaper.mu);
}

/* Before the library's code is unmapped (dlclose, exit): the thread runs
 * it, so it ends first, with every job done. */
__attribute__((destructor)) static void reaper_join(void)
{
    pthread_mutex_lock(&reaper.mu);
    reaper.stopping = 1;
    pthread_cond_signal(&reaper.work);
    if (reaper.started) {
        pthread_mutex_unlock(&reaper.mu);
        /* Fails only if exit() was called in a job (EDEADLK): there is
         * nothing then to wait for but this very job. */
        if (pthread_join(reaper.thread, NULL) != 0)
            return;
        pthread_mutex_lock(&reaper.mu);
        reaper.started = 0;
    }
    run_orphans();
    pthread_mutex_unlock(&reaper.mu);
}
