/* reaper_test.c: the tests of reaper.c: jobs run on the bk-reaper thread,
 * bk_reap_wait waits for them, a process's exit waits for them, and a
 * child forked meanwhile runs its own copy of the queue, but never the
 * job that was in flight in its parent. */
#include "core_test.h"
#include "core/internal.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where the jobs report: a pipe, one line "<name> <pid> <thread name>" a job. */
static int report_fd = -1;
static int slow_started;   /* the slow job is running */
/* The jobs' names, their argument. */
static char SLOW[] = "slow", FAST[] = "fast", QUEUED[] = "queued";

static void report(const char *name)
{
    char thread[16] = "?", line[64];
    pthread_getname_np(pthread_self(), thread, sizeof thread);
    int n = snprintf(line, sizeof line, "%s %d %s\n", name, (int)getpid(), thread);
    CHECK(write(report_fd, line, (size_t)n) == n);   /* under PIPE_BUF: one piece */
}

static void job_fast(void *name)
{
    report(name);
}

/* A descriptor the slow job closes last, if not -1: open in a child
 * forked in the middle of that job. */
static int slow_fd = -1;

static void job_slow(void *name)
{
    __atomic_store_n(&slow_started, 1, __ATOMIC_RELEASE);
    usleep(300 * 1000);
    report(name);
    if (slow_fd >= 0)
        close(slow_fd);
}

/* Everything written to fd[0] until every writer has closed. */
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

static int count_lines(const char *all, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = all; (p = strstr(p, line)); p += len)
        n += p == all || p[-1] == '\n';
    return n;
}

/* A job runs on the reaper thread; bk_reap_wait returns after it. */
static void test_wait(void)
{
    int fd[2];
    CHECK(pipe(fd) == 0);
    report_fd = fd[1];
    bk_reap(job_slow, SLOW);
    bk_reap(job_fast, FAST);
    bk_reap_wait();
    close(fd[1]);
    char want[128];
    const char *all = read_all(fd[0]);
    snprintf(want, sizeof want, "slow %d bk-reaper\nfast %d bk-reaper\n", (int)getpid(), (int)getpid());
    if (!CHECK(!strcmp(all, want)))
        fprintf(stderr, "got:\n%s", all);
    close(fd[0]);
}

/* Forks while the slow job runs and another is queued: the child runs the
 * queued one, its copy (on its exit, or in bk_reap_wait), the parent both;
 * the slow one had ended in the parent before the fork. */
static void test_fork(int child_waits)
{
    int fd[2];
    CHECK(pipe(fd) == 0);
    report_fd = fd[1];
    __atomic_store_n(&slow_started, 0, __ATOMIC_RELEASE);
    CHECK((slow_fd = dup(fd[1])) >= 0);
    bk_reap(job_slow, SLOW);
    while (!__atomic_load_n(&slow_started, __ATOMIC_ACQUIRE))
        usleep(1000);
    bk_reap(job_fast, QUEUED);
    fflush(NULL);
    pid_t pid = fork();   /* waits for the slow job */
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);   /* a child stuck for good dies of SIGALRM */
        CHECK(fcntl(slow_fd, F_GETFD) < 0);   /* the slow job had ended */
        if (child_waits) {
            bk_reap_wait();
            _exit(t_failed ? 1 : 0);   /* no destructor: the wait ran it */
        }
        exit(t_failed ? 1 : 0);   /* the library's destructor runs it */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bk_reap_wait();
    close(fd[1]);
    slow_fd = -1;
    const char *all = read_all(fd[0]);
    char line[64];
    snprintf(line, sizeof line, "slow %d bk-reaper\n", (int)getpid());
    CHECK(count_lines(all, line) == 1);
    snprintf(line, sizeof line, "queued %d bk-reaper\n", (int)getpid());
    CHECK(count_lines(all, line) == 1);
    snprintf(line, sizeof line, "slow %d ", (int)pid);
    CHECK(count_lines(all, line) == 0);   /* the parent's, done before the fork */
    snprintf(line, sizeof line, "queued %d ", (int)pid);
    CHECK(count_lines(all, line) == 1);
    if (!CHECK(count_lines(all, "slow ") + count_lines(all, "queued ") == 3))
        fprintf(stderr, "got:\n%s", all);
    close(fd[0]);
}

/* A process that ends with a job queued waits for it: a child starts its
 * own reaper (named as its parent's), queues a slow job and exits. */
static void test_exit(void)
{
    int fd[2];
    CHECK(pipe(fd) == 0);
    report_fd = fd[1];
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        close(fd[0]);
        bk_reap(job_slow, SLOW);
        exit(0);
    }
    close(fd[1]);
    const char *all = read_all(fd[0]);   /* until the child's end */
    char want[64];
    snprintf(want, sizeof want, "slow %d bk-reaper\n", (int)pid);
    if (!CHECK(!strcmp(all, want)))
        fprintf(stderr, "got:\n%s", all);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fd[0]);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_exit();   /* first: the child starts the process's first reaper */
    test_wait();
    test_fork(1);
    test_fork(0);
    return t_done();
}
