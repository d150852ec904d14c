/* reaper_test.c: the tests of reaper.c: jobs run on the bk-reaper thread,
 * in order; bk_reap_wait waits for the jobs queued before it and no
 * others; a process's exit waits for them; a forked child runs none of
 * its parent's jobs, and its own on a reaper of its own. Linux only, as
 * the thread's name and /proc are. */
#include "core_test.h"
#include "core/internal.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where the jobs report: a pipe, one line "<name> <pid> <thread name>" a job. */
static int report_fd = -1;

static void report(const char *name)
{
    char thread[16] = "?", line[64];
    pthread_getname_np(pthread_self(), thread, sizeof thread);
    int n = snprintf(line, sizeof line, "%s %d %s\n", name, (int)getpid(), thread);
    CHECK(write(report_fd, line, (size_t)n) == n);   /* under PIPE_BUF: one piece */
}

/* The jobs, by name (their argument). */
static char FAST[] = "fast", SLOW[] = "slow", QUEUED[] = "queued", CHILD[] = "child",
            LATER[] = "later";

static void job_fast(void *name)
{
    report(name);
}

static void job_slow(void *name)
{
    usleep(300 * 1000);
    report(name);
}

/* A job that runs until the test opens its gate: gate_started is set once
 * it runs, and it reads a byte from the gate pipe (or its end). */
static int gate[2] = { -1, -1 };
static int gate_started;

static void job_gated(void *name)
{
    char c;
    __atomic_store_n(&gate_started, 1, __ATOMIC_RELEASE);
    CHECK(read(gate[0], &c, 1) >= 0);
    report(name);
}

/* Queues the gated job and returns once it runs. */
static void start_gated(char *name)
{
    CHECK(pipe(gate) == 0);
    __atomic_store_n(&gate_started, 0, __ATOMIC_RELEASE);
    bk_reap(job_gated, name);
    while (!__atomic_load_n(&gate_started, __ATOMIC_ACQUIRE))
        usleep(1000);
}

static void open_gate(void)
{
    close(gate[1]);
    close(gate[0]);
}

/* A pipe for the jobs' reports, its write end report_fd. */
static void open_reports(int fd[2])
{
    CHECK(pipe(fd) == 0);
    report_fd = fd[1];
}

/* Everything written to fd until every writer has closed. */
static const char *read_all(int fd)
{
    static char buf[1024];
    size_t used = 0;
    ssize_t n;
    while (used < sizeof buf - 1 && (n = read(fd, buf + used, sizeof buf - 1 - used)) > 0)
        used += (size_t)n;
    buf[used] = 0;
    return buf;
}

/* The reports made once the write end (which this process holds) closes. */
static const char *close_reports(int fd[2])
{
    close(fd[1]);
    const char *all = read_all(fd[0]);
    close(fd[0]);
    return all;
}

static void expect(const char *all, const char *want)
{
    if (!CHECK(!strcmp(all, want)))
        fprintf(stderr, "got:\n%s\nwant:\n%s", all, want);
}

/* The lines of all are want's (each ending in a newline), in any order. */
static void expect_lines(const char *all, const char **want, int n)
{
    int found = 0;
    for (int i = 0; i < n; i++) {
        const char *at = strstr(all, want[i]);
        found += at && (at == all || at[-1] == '\n');
    }
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += strlen(want[i]);
    if (!CHECK(found == n && strlen(all) == len))
        fprintf(stderr, "got:\n%s", all);
}

/* Jobs run on the reaper thread, in order; bk_reap_wait returns after the
 * last, a slow one. */
static void test_wait(void)
{
    int fd[2];
    char want[128];
    open_reports(fd);
    bk_reap(job_fast, FAST);
    bk_reap(job_slow, SLOW);
    bk_reap_wait();
    snprintf(want, sizeof want, "fast %d bk-reaper\nslow %d bk-reaper\n", (int)getpid(), (int)getpid());
    expect(close_reports(fd), want);
}

/* bk_reap_wait waits for the jobs queued before it, not for those queued
 * after: with the gated job running, a thread waits; once it sleeps there
 * (its state in /proc: it can sleep nowhere else), a later job is queued
 * and the gate opened. The later job waits (up to 10 s) for the waiter to
 * return, which it does only if it does not wait for the later job. */
static int waiter_tid, waiter_out;

static void *waiter(void *unused)
{
    (void)unused;
    __atomic_store_n(&waiter_tid, (int)gettid(), __ATOMIC_RELEASE);
    bk_reap_wait();
    __atomic_store_n(&waiter_out, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void job_later(void *name)
{
    for (int i = 0; i < 1000 && !__atomic_load_n(&waiter_out, __ATOMIC_ACQUIRE); i++)
        usleep(10 * 1000);
    report(__atomic_load_n(&waiter_out, __ATOMIC_ACQUIRE) ? name : "later-waited-for");
}

static void test_wait_before(void)
{
    int fd[2];
    char want[128];
    pthread_t t;
    open_reports(fd);
    start_gated(SLOW);
    CHECK(pthread_create(&t, NULL, waiter, NULL) == 0);
    int tid;
    while (!(tid = __atomic_load_n(&waiter_tid, __ATOMIC_ACQUIRE)) || !t_asleep(tid))
        usleep(1000);
    bk_reap(job_later, LATER);
    open_gate();
    CHECK(pthread_join(t, NULL) == 0);
    bk_reap_wait();
    snprintf(want, sizeof want, "slow %d bk-reaper\nlater %d bk-reaper\n", (int)getpid(), (int)getpid());
    expect(close_reports(fd), want);
}

/* A fork while a job runs (and, if `queued`, another waits): the child
 * runs neither, whether it waits for jobs (none of its own) or exits, and
 * runs its own on a reaper of its own; the parent runs each of its own
 * once. Leak checkers (make asan, valgrind) see that the child keeps the
 * parent's jobs reachable, the one running included. */
static void test_fork(int queued, int child_waits)
{
    int fd[2];
    open_reports(fd);
    start_gated(SLOW);
    if (queued)
        bk_reap(job_fast, QUEUED);
    pid_t pid = t_fork();
    if (pid == 0) {
        bk_reap_wait();
        if (child_waits) {
            bk_reap(job_fast, CHILD);
            bk_reap_wait();
        }
        t_child_exit();
    }
    t_child_ok(pid);
    open_gate();
    bk_reap_wait();
    char want[3][64];
    const char *lines[3];
    int n = 0;
    snprintf(want[0], sizeof want[0], "slow %d bk-reaper\n", (int)getpid());
    lines[n++] = want[0];
    snprintf(want[1], sizeof want[1], "queued %d bk-reaper\n", (int)getpid());
    if (queued)
        lines[n++] = want[1];
    snprintf(want[2], sizeof want[2], "child %d bk-reaper\n", (int)pid);
    if (child_waits)
        lines[n++] = want[2];
    expect_lines(close_reports(fd), lines, n);
}

/* A process that ends with a job queued waits for it: a child starts its
 * own reaper (named as its parent's), queues a slow job and exits. */
static void test_exit(void)
{
    int fd[2];
    char want[64];
    open_reports(fd);
    pid_t pid = t_fork();
    if (pid == 0) {
        close(fd[0]);
        bk_reap(job_slow, SLOW);
        t_child_exit();
    }
    snprintf(want, sizeof want, "slow %d bk-reaper\n", (int)pid);
    expect(close_reports(fd), want);   /* until the child's end */
    t_child_ok(pid);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_exit();   /* first: the child starts the process's first reaper */
    test_wait();
    test_wait_before();
    for (int queued = 0; queued <= 1; queued++)
        for (int child_waits = 0; child_waits <= 1; child_waits++)
            test_fork(queued, child_waits);
    return t_done();
}
