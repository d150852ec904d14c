/* files.c: a database's files and who may use them. A database is a
 * regular file (`path`) and its LMDB lock file (`path-lock`). Here:
 * - one writer per file however it is named (a hard link, a symbolic link,
 *   a relative path): an exclusive flock on the data file itself, through a
 *   descriptor of ours (flock, unlike LMDB's fcntl locks, survives LMDB
 *   closing its descriptors), as bbolt does, and on the lock file, all that
 *   older builds take; one open per file per process (LMDB's locks are per
 *   process), known by the file's identity, not its name;
 * - the checks made before LMDB maps a file: a regular file or a new path
 *   (a FIFO or a device is never opened), an LMDB file that holds every
 *   page in use (meta.c);
 * - read-only media: on a read-only file system a read-only open goes
 *   without the lock file, as bbolt opens read-only media;
 * - the temporary directories of defrag, snapshots and imports. */
#include "internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define BOLT_MAGIC 0xED0CDAEDu
#define MAX_LINKS 40     /* symbolic links followed, the kernel's limit */
#define OPEN_TRIES 10    /* the file was replaced or taken meanwhile: again */
#define RETRY (-1)

/* ---- paths ---- */

/* The path of a file that may not exist: its directory's real path, then
 * its name. NULL and errno on failure. */
static char *in_real_dir(const char *path)
{
    char buf[PATH_MAX], *dir = strdup(path), *base = strdup(path), *out = NULL;
    if (dir && base && realpath(dirname(dir), buf)) {
        const char *b = basename(base);
        size_t n = strlen(buf) + strlen(b) + 2;
        if ((out = malloc(n)))
            snprintf(out, n, "%s/%s", strcmp(buf, "/") ? buf : "", b);
    }
    free(dir);
    free(base);
    return out;
}

/* The target of the symbolic link at `link`, which reads `to`. */
static char *link_target(const char *link, const char *to)
{
    if (to[0] == '/')
        return strdup(to);
    char *dir = strdup(link), *out = NULL;
    if (dir) {
        const char *d = dirname(dir);
        size_t n = strlen(d) + strlen(to) + 2;
        if ((out = malloc(n)))
            snprintf(out, n, "%s/%s", d, to);
    }
    free(dir);
    return out;
}

/* The canonical path: symbolic links resolved, a dangling one too (its
 * target is the file a writer creates), whether or not the file exists.
 * NULL and errno on failure. */
static char *canonical_path(const char *path)
{
    char buf[PATH_MAX], *cur = strdup(path), *out = NULL;
    for (int hops = 0; cur && !out; hops++) {
        ssize_t n;
        if (realpath(cur, buf)) {
            out = strdup(buf);
        } else if (errno != ENOENT) {
            break;
        } else if (hops == MAX_LINKS) {
            errno = ELOOP;
            break;
        } else if ((n = readlink(cur, buf, sizeof buf - 1)) < 0) {
            out = in_real_dir(cur);   /* no such file yet */
            break;
        } else {
            buf[n] = 0;
            char *next = link_target(cur, buf);
            free(cur);
            cur = next;
        }
    }
    int saved = errno;
    free(cur);
    errno = saved;
    return out;
}

/* ---- open files: one open per file per process ---- */

/* LMDB's locks are per process: a second open of one file in a process
 * would corrupt the first. The file is known by its identity, so a second
 * name (a hard link) is the same file. Process state by nature. */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static bk_backend *open_list;

/* Held around fork(): a child forked while another thread held it would
 * have it held for good, and could open nothing. */
static int fork_handled;

static void fork_prepare(void)
{
    pthread_mutex_lock(&open_mu);
}

static void fork_after(void)
{
    pthread_mutex_unlock(&open_mu);
}

/* A forked child's copies of its parent's backends are not open in it
 * (bk_foreign): the file is then another process's, as its lock says. */
static int registry_add(bk_backend *be, const struct stat *st, bk_error *err)
{
    int rc = bk_atfork_once(&fork_handled, fork_prepare, fork_after, fork_after, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&open_mu);
    for (const bk_backend *o = open_list; o && !rc; o = o->open_next)
        if (bk_foreign(o))
            continue;
        else if (!strcmp(o->path, be->path))
            rc = bk_fail(err, BK_EBUSY, "%s is already open in this process", be->path);
        else if (o->dev == st->st_dev && o->ino == st->st_ino)
            rc = bk_fail(err, BK_EBUSY, "%s is already open in this process (as %s)",
                         be->path, o->path);
    if (!rc) {
        be->dev = st->st_dev;
        be->ino = st->st_ino;
        be->open_next = open_list;
        open_list = be;
    }
    pthread_mutex_unlock(&open_mu);
    return rc;
}

static void registry_remove(bk_backend *be)
{
    pthread_mutex_lock(&open_mu);
    for (bk_backend **pp = &open_list; *pp; pp = &(*pp)->open_next)
        if (*pp == be) {
            *pp = be->open_next;
            break;
        }
    pthread_mutex_unlock(&open_mu);
}

/* The path names a new file now (a defrag's). */
static void registry_moved(bk_backend *be, const struct stat *st)
{
    pthread_mutex_lock(&open_mu);
    be->dev = st->st_dev;
    be->ino = st->st_ino;
    pthread_mutex_unlock(&open_mu);
}

/* ---- the data file and its lock file ---- */

static const char *kind(mode_t m)
{
    return S_ISDIR(m) ? "Is a directory" : S_ISFIFO(m) ? "Is a FIFO"
         : S_ISCHR(m) ? "Is a character device" : S_ISBLK(m) ? "Is a block device"
         : S_ISSOCK(m) ? "Is a socket" : S_ISLNK(m) ? "Is a symbolic link"
         : "Is not a regular file";
}

static int not_regular(const char *path, mode_t m, const char *what, bk_error *err)
{
    return bk_fail(err, BK_EARG, "%s: %s; %s", path, kind(m), what);
}

/* Before anything is opened or created (lstat: a FIFO or a device is never
 * opened): the path is a regular file, or new for a writer; the lock file's
 * name is a regular file or new, and never a link (LMDB would write its
 * reader table through it, into the target). */
static int precheck(const bk_backend *be, int ro, bk_error *err)
{
    struct stat st;
    if (lstat(be->path, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return not_regular(be->path, st.st_mode, "a database is a regular file", err);
    } else if (errno != ENOENT || ro) {
        return bk_fail(err, BK_EIO, "%s: %s", be->path, strerror(errno));
    }
    if (lstat(be->lockpath, &st) == 0 && !S_ISREG(st.st_mode))
        return not_regular(be->lockpath, st.st_mode, "refusing to use it as the lock file", err);
    return BK_OK;
}

/* The data file, opened without blocking and checked again through the
 * descriptor (the path may name another file since precheck). */
static int data_open(bk_backend *be, int ro, int *created, struct stat *st, bk_error *err)
{
    int flags = (ro ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(be->path, flags);
    *created = 0;
    if (fd < 0 && errno == ENOENT && !ro) {
        fd = open(be->path, flags | O_CREAT | O_EXCL, 0600);
        *created = fd >= 0;
        if (fd < 0 && errno == EEXIST)   /* another opener created it meanwhile */
            fd = open(be->path, flags);
    }
    if (fd < 0)
        return bk_fail(err, BK_EIO, "%s: %s", be->path, strerror(errno));
    be->datafd = fd;
    if (fstat(fd, st) < 0)
        return bk_fail(err, BK_EIO, "%s: %s", be->path, strerror(errno));
    if (!S_ISREG(st->st_mode))
        return not_regular(be->path, st->st_mode, "a database is a regular file", err);
    return BK_OK;
}

/* A file LMDB began to create and never committed to (see reset_unborn):
 * its two meta pages (LMDB's page size is the system's for a new file) each
 * either not written (zeros) or a fresh meta (txn 0, last page 1), and zeros
 * past the meta (LMDB writes the pair from a calloc'd buffer). A power cut
 * can leave any sectors of that write, in any order. Past the metas may lie
 * pages of a first commit that never wrote its meta, but only behind a fresh
 * meta: bk_env_open syncs a new file's metas before any commit, and a file
 * whose metas are both gone with pages behind them is damage, not a birth. */
static int is_unborn(int fd, uint64_t size)
{
    const uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
    static const unsigned char zero[BK_META_HEAD];
    unsigned char buf[1 << 16];
    uint64_t n = size < 2 * ps ? size : 2 * ps;
    int fresh = 0;
    if (size == 0 || 2 * ps > sizeof buf || pread(fd, buf, (size_t)n, 0) != (ssize_t)n)
        return 0;
    memset(buf + n, 0, (size_t)(2 * ps - n));
    for (int i = 0; i < 2; i++) {
        const unsigned char *page = buf + (size_t)i * ps;
        bk_meta m;
        bk_meta_parse(page, &m);
        int is_fresh = m.magic == BK_LMDB_MAGIC && m.last_pg == 1 && m.txnid == 0;
        if (!is_fresh && memcmp(page, zero, sizeof zero))
            return 0;
        fresh |= is_fresh;
        for (size_t k = BK_META_HEAD; k < ps; k++)
            if (page[k])
                return 0;
    }
    return size <= 2 * ps || fresh;
}

/* What the data file holds: nothing yet (a writer's new file), an LMDB file
 * holding every page it uses, or something else, said what. */
static int check_file(int fd, const char *path, int ro, bk_error *err)
{
    unsigned char head[BK_META_HEAD] = { 0 };
    struct stat st;
    bk_meta m;
    ssize_t n = fstat(fd, &st) < 0 ? -1 : pread(fd, head, sizeof head, 0);
    if (n < 0)
        return bk_fail(err, BK_EIO, "%s: %s", path, strerror(errno));
    if (n == 0 && !ro)
        return BK_OK;   /* empty: LMDB initialises it */
    /* an unborn file is no damage: reset_unborn empties it */
    if (!ro && is_unborn(fd, (uint64_t)st.st_size))
        return BK_OK;
    bk_meta_parse(head, &m);
    if (m.magic == BK_LMDB_MAGIC) {
        char why[200];
        if (!bk_pages_check(fd, (uint64_t)st.st_size, why, sizeof why))
            return BK_OK;
        return bk_fail(err, BK_EFORMAT, "%s is truncated or damaged: %s", path, why);
    }
    if (m.magic == BOLT_MAGIC)
        return bk_fail(err, BK_EFORMAT, "%s is a bbolt file (etcd's data format), "
                       "not a backend database; import it", path);
    return bk_fail(err, BK_EFORMAT, "%s is not a backend database (no LMDB header: %s)",
                   path, n < 20 ? "file too short" : "unknown format");
}

/* A process killed while LMDB creates the file can leave only its first meta
 * page: LMDB writes both in one pwrite, and Linux may stop a write between
 * pages on SIGKILL; a power cut can leave any part of that write (is_unborn).
 * LMDB then refuses the file for good ("not an LMDB file"), though nothing
 * was ever committed to it. So empty such a file, and LMDB initialises it
 * again. Caller holds the flocks. Returns -1 if truncating failed (LMDB then
 * says what the file is). */
static int reset_unborn(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    return is_unborn(fd, (uint64_t)st.st_size) ? ftruncate(fd, 0) : 0;
}

static int busy(const bk_backend *be, const char *locked, const struct stat *st, bk_error *err)
{
    if (errno != EWOULDBLOCK)
        return bk_fail(err, BK_EIO, "%s: flock: %s", locked, strerror(errno));
    if (st->st_nlink > 1 && locked == be->path)
        return bk_fail(err, BK_EBUSY, "%s is in use by another process (a writer, or a "
                       "reader through another of its %lu names)", be->path,
                       (unsigned long)st->st_nlink);
    return bk_fail(err, BK_EBUSY, "%s is open for writing by another process", be->path);
}

/* A writer flocks the lock file first (all that older builds take), then
 * the data file: a writer holding the data file holds its lock file too
 * (reader_locks relies on it). RETRY if the path names another file by
 * then: a writer's defrag renamed a new one over it. */
static int writer_locks(bk_backend *be, const struct stat *st, bk_error *err)
{
    struct stat now;
    be->lockfd = open(be->lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                      0600);
    if (be->lockfd < 0)
        return bk_fail(err, BK_EIO, "%s: %s", be->lockpath, strerror(errno));
    if (flock(be->lockfd, LOCK_EX | LOCK_NB) < 0)
        return busy(be, be->lockpath, st, err);
    if (flock(be->datafd, LOCK_EX | LOCK_NB) < 0)
        return busy(be, be->path, st, err);
    if (stat(be->path, &now) < 0 || now.st_ino != st->st_ino || now.st_dev != st->st_dev)
        return RETRY;
    return BK_OK;
}

/* LMDB registers a reader in the lock file, which it opens for writing and
 * creates: try that first, to name the lock file when it fails (LMDB's
 * error names the data file). On a read-only file system no writer can
 * write, so the open goes without it (MDB_NOLOCK), as bbolt opens read-only
 * media. A hard-linked file may be written through another name, with
 * another lock file, where the writer would not see this reader: then hold
 * a shared flock on the data file (no writer starts while it is held), or,
 * with a writer there already, make sure it holds this lock file. */
static int reader_locks(bk_backend *be, const struct stat *st, bk_error *err)
{
    int fd = open(be->lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    int rc = BK_OK, held = 0;
    if (fd < 0 && errno == EROFS) {
        be->env_flags |= MDB_NOLOCK;
    } else if (fd < 0) {
        rc = bk_fail(err, BK_EIO, "%s: %s (a read-only open registers as a reader in this lock "
                     "file: it needs write access to it, or to its directory to create it, "
                     "unless the file system is read-only)", be->lockpath, strerror(errno));
    } else if (st->st_nlink > 1) {
        held = flock(be->datafd, LOCK_SH | LOCK_NB) == 0;
        if (!held && errno != EWOULDBLOCK)
            rc = bk_fail(err, BK_EIO, "%s: flock: %s", be->path, strerror(errno));
        else if (!held && flock(fd, LOCK_SH | LOCK_NB) == 0)
            rc = bk_fail(err, BK_EBUSY, "%s is open for writing by another process under "
                         "another of its %lu names (hard links), with another lock file: "
                         "open it by the writer's name", be->path, (unsigned long)st->st_nlink);
    }
    if (fd >= 0)
        close(fd);
    if (!held) {   /* not needed: unpinned, the file is freed when replaced */
        close(be->datafd);
        be->datafd = -1;
    }
    return rc;
}

static void close_fds(bk_backend *be)
{
    if (be->datafd >= 0)
        close(be->datafd);
    if (be->lockfd >= 0)
        close(be->lockfd);
    be->datafd = be->lockfd = -1;
}

/* Undoes bk_files_open so far. A file it created goes, unless another
 * process holds it by now. */
static void release(bk_backend *be, int created)
{
    struct stat ours, now;
    if (created && be->datafd >= 0 && flock(be->datafd, LOCK_EX | LOCK_NB) == 0 &&
        fstat(be->datafd, &ours) == 0 && stat(be->path, &now) == 0 &&
        ours.st_ino == now.st_ino && ours.st_dev == now.st_dev)
        unlink(be->path);
    registry_remove(be);
    close_fds(be);
}

int bk_files_open(bk_backend *be, bk_error *err)
{
    const int ro = be->cfg.readonly;
    int rc, created = 0;
    struct stat st;
    be->datafd = be->lockfd = -1;
    be->path = canonical_path(be->cfg.path);
    if (!be->path)
        return bk_fail(err, BK_EIO, "%s: %s", be->cfg.path, strerror(errno));
    be->lockpath = malloc(strlen(be->path) + sizeof "-lock");
    if (!be->lockpath)
        return bk_fail(err, BK_EIO, "out of memory");
    sprintf(be->lockpath, "%s-lock", be->path);
    for (int tries = 1;; tries++) {
        if ((rc = precheck(be, ro, err)) || (rc = data_open(be, ro, &created, &st, err)) ||
            (rc = registry_add(be, &st, err)) ||
            (rc = check_file(be->datafd, be->path, ro, err)))
            break;
        rc = ro ? reader_locks(be, &st, err) : writer_locks(be, &st, err);
        if (rc == RETRY && tries == OPEN_TRIES)
            rc = bk_fail(err, BK_EBUSY, "%s keeps being replaced by another process", be->path);
        if (rc != RETRY)
            break;
        release(be, created);
    }
    /* A new file's name is durable before any commit to it is acknowledged:
     * without this a power cut could take the whole file, commits and all
     * (LMDB never fsyncs the directory). */
    if (!rc && created && bk_fsync_dir(be->path) < 0)
        rc = bk_fail(err, BK_EIO, "%s: fsync of its directory: %s", be->path, strerror(errno));
    if (rc) {
        release(be, created);
        return rc;
    }
    if (!ro) {
        int n = bk_tmp_sweep(be->path);
        if (n)
            bk_log(be, "info", "removed %d temporary director%s a dead process left beside %s",
                   n, n == 1 ? "y" : "ies", be->path);
        reset_unborn(be->datafd);
    }
    return BK_OK;
}

void bk_files_close(bk_backend *be)
{
    registry_remove(be);
    close_fds(be);
}

int bk_files_check_replaced(bk_backend *be, bk_error *err)
{
    struct stat st;
    int fd = open(be->path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return bk_fail(err, BK_EIO, "%s: %s", be->path, strerror(errno));
    int rc = fstat(fd, &st) < 0 ? bk_fail(err, BK_EIO, "%s: %s", be->path, strerror(errno))
           : !S_ISREG(st.st_mode) ? not_regular(be->path, st.st_mode,
                                                "a database is a regular file", err)
           : check_file(fd, be->path, 1, err);
    if (!rc)
        registry_moved(be, &st);
    close(fd);
    return rc;
}

int bk_files_checked(bk_backend *be, dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&open_mu);
    int same = be->dev == dev && be->ino == ino;
    pthread_mutex_unlock(&open_mu);
    return same;
}

int bk_files_lock_new(const char *from, int *fd, bk_error *err)
{
    *fd = open(from, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (*fd >= 0 && flock(*fd, LOCK_EX | LOCK_NB) == 0)
        return BK_OK;
    int rc = bk_fail(err, BK_EIO, "defrag: locking the new %s: %s", from, strerror(errno));
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    return rc;
}

void bk_files_swapped(bk_backend *be, int datafd, int lockfd, int *old_datafd,
                      int *old_lockfd)
{
    struct stat st;
    *old_datafd = be->datafd;
    *old_lockfd = be->lockfd;
    be->datafd = datafd;
    be->lockfd = lockfd;
    if (fstat(datafd, &st) == 0)
        registry_moved(be, &st);
}

/* ---- temporary directories ---- */

#define TMP_INFIX ".backend-tmp."
#define TMP_RANDOM 6                      /* mkdtemp's XXXXXX */
#define TMP_MARKER "backend-tmp.lock"     /* ours: flocked while its owner lives */
#define TMP_FILE "db"
#define TMP_MAGIC "backend temporary directory\n"
static const char tmp_note[] = TMP_MAGIC
    "The backend module made this directory for a defrag, a snapshot or an import\n"
    "of the file beside it, and removes it when done. If its process died, the next\n"
    "such operation on that file, or opening it for writing, removes it.\n";

/* What we put in a temporary directory: the file, its lock file if it was
 * opened as a database (an import, a defrag's copy), a defrag's second name
 * for the lock file it replaces, the marker last (made first). */
static const char *const tmp_names[] = { "/" TMP_FILE, "/" TMP_FILE "-lock",
                                         "/" TMP_FILE "-lock.old", "/" TMP_MARKER };
#define TMP_NAMES (sizeof tmp_names / sizeof tmp_names[0])

/* "<base>.backend-tmp.XXXXXX", as mkdtemp makes it. */
static int tmp_name(const char *name, const char *base, size_t blen)
{
    size_t ilen = strlen(TMP_INFIX);
    if (strncmp(name, base, blen) || strncmp(name + blen, TMP_INFIX, ilen) ||
        strlen(name + blen + ilen) != TMP_RANDOM)
        return 0;
    for (const char *c = name + blen + ilen; *c; c++)
        if (!isalnum((unsigned char)*c))
            return 0;
    return 1;
}

/* A leftover of ours whose owner died, as its marker says: our text (or the
 * start of it: the owner died writing it), no longer flocked, and no
 * process holding the file in it (an open database flocks it). Returns the
 * marker's descriptor, flocked, or -1; *whole: all of the text is there
 * (else the owner died before it made anything else in the directory). */
static int claim_dead(int dfd, int *whole)
{
    char text[sizeof tmp_note];
    struct stat st;
    ssize_t n = -1;
    int fd = openat(dfd, TMP_MARKER, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
             (n = pread(fd, text, sizeof text, 0)) >= 0 && (size_t)n < sizeof text &&
             !memcmp(text, tmp_note, (size_t)n) && flock(fd, LOCK_EX | LOCK_NB) == 0;
    *whole = ok && (size_t)n == sizeof tmp_note - 1;
    if (*whole) {
        int data = openat(dfd, TMP_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        ok = data < 0 || flock(data, LOCK_EX | LOCK_NB) == 0;
        if (data >= 0)
            close(data);
    }
    if (!ok && fd >= 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* One directory named as ours (name, in parent): emptied of what we put
 * there if its owner died, and removed if nothing else is in it (so also
 * when its owner died before it made its marker). 1 if it is gone. */
static int sweep_one(int parent, const char *name)
{
    int whole, gone = 0, mark = -1;
    int dfd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    if ((mark = claim_dead(dfd, &whole)) >= 0) {
        for (size_t i = whole ? 0 : TMP_NAMES - 1; i < TMP_NAMES; i++)
            unlinkat(dfd, tmp_names[i] + 1, 0);
    }
    gone = unlinkat(parent, name, AT_REMOVEDIR) == 0;
    if (mark >= 0)
        close(mark);
    close(dfd);
    return gone;
}

int bk_tmp_sweep(const char *target)
{
    char *dcopy = strdup(target), *bcopy = strdup(target);
    int removed = 0;
    DIR *d = dcopy && bcopy ? opendir(dirname(dcopy)) : NULL;
    if (d) {
        const char *base = basename(bcopy);
        size_t blen = strlen(base);
        struct dirent *e;
        while ((e = readdir(d)))
            if (tmp_name(e->d_name, base, blen))
                removed += sweep_one(dirfd(d), e->d_name);
        closedir(d);
    }
    free(dcopy);
    free(bcopy);
    return removed;
}

/* dir then name into out, a PATH_MAX buffer they fit (bk_tmp_create checks). */
static void in_dir(char *out, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    memcpy(out, dir, n);
    memcpy(out + n, name, strlen(name) + 1);
}

/* One try: RETRY if another process's sweep took the directory before its
 * marker was ours (it was empty, or the marker not yet flocked). */
static int tmp_make(bk_tmp *t, const char *target, bk_error *err)
{
    char marker[PATH_MAX];
    struct stat st;
    t->markfd = -1;
    /* The longest name in it must fit: "/" TMP_MARKER. */
    if ((size_t)snprintf(t->dir, sizeof t->dir, "%s" TMP_INFIX "XXXXXX", target) >=
        sizeof t->dir - sizeof TMP_MARKER) {
        t->dir[0] = 0;
        return bk_fail(err, BK_EARG, "%s: %s", target, strerror(ENAMETOOLONG));
    }
    if (!mkdtemp(t->dir)) {
        int e = errno;
        t->dir[0] = 0;
        return bk_fail(err, BK_EIO, "%s: %s (making a temporary directory beside it)",
                       target, strerror(e));
    }
    in_dir(marker, t->dir, "/" TMP_MARKER);
    in_dir(t->file, t->dir, "/" TMP_FILE);
    t->markfd = open(marker, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    /* The marker, whole, is durable in the directory before anything else
     * is made there: a power cut leaves the directory without it only when
     * it leaves the directory empty. */
    int e = t->markfd < 0 || flock(t->markfd, LOCK_EX | LOCK_NB) < 0 ||
            bk_write_full(t->markfd, tmp_note, sizeof tmp_note - 1) < 0 ||
            fdatasync(t->markfd) < 0 || bk_fsync_dir(marker) < 0 ||
            fstat(t->markfd, &st) < 0 ? errno : st.st_nlink ? 0 : ENOENT;
    if (!e)
        return BK_OK;
    bk_tmp_discard(t);
    if (e == ENOENT || e == EWOULDBLOCK)
        return RETRY;
    return bk_fail(err, BK_EIO, "%s: %s", marker, strerror(e));
}

int bk_tmp_create(bk_tmp *t, const char *target, bk_error *err)
{
    bk_tmp_sweep(target);
    for (int tries = 1;; tries++) {
        int rc = tmp_make(t, target, err);
        if (rc != RETRY)
            return rc;
        if (tries == OPEN_TRIES)
            return bk_fail(err, BK_EIO, "%s: another process keeps removing its temporary "
                           "directory", target);
    }
}

int bk_tmp_publish(bk_tmp *t, const char *target, bk_error *err)
{
    int rc = renameat2(AT_FDCWD, t->file, AT_FDCWD, target, RENAME_NOREPLACE);
    if (rc < 0 && (errno == EINVAL || errno == ENOSYS) && (rc = link(t->file, target)) == 0)
        unlink(t->file);   /* no RENAME_NOREPLACE here: a link fails the same way */
    if (rc < 0 && errno == EEXIST)
        return bk_fail(err, BK_EARG, "%s already exists", target);
    if (rc < 0)
        return bk_fail(err, BK_EIO, "%s: %s", target, strerror(errno));
    if (bk_fsync_dir(target) < 0)   /* the new name is durable too */
        return bk_fail(err, BK_EIO, "%s: fsync of its directory: %s", target, strerror(errno));
    return BK_OK;
}

void bk_tmp_discard(bk_tmp *t)
{
    char path[PATH_MAX];
    if (!t->dir[0])
        return;
    for (size_t i = 0; i < TMP_NAMES - 1; i++) {
        in_dir(path, t->dir, tmp_names[i]);
        unlink(path);
    }
    /* The marker goes last, once the rest is gone for good (a file renamed
     * out of the directory included): else a power cut could leave our
     * files without it, for no sweep to remove. */
    in_dir(path, t->dir, tmp_names[TMP_NAMES - 1]);
    bk_fsync_dir(path);
    unlink(path);
    rmdir(t->dir);
    if (t->markfd >= 0)
        close(t->markfd);
    t->markfd = -1;
    t->dir[0] = 0;
}
