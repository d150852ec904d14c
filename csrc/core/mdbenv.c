/* mdbenv.c: an LMDB environment as the core holds it (bk_env): created with
 * the backend's limits, with the bucket handles opened in it, and
 * refcounted: the backend holds its current one and every gen the one its
 * txn is in, so a file that a defrag replaced stays open until the last
 * view or snapshot reading it closes, and then closes on the reaper
 * thread. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* LMDB opens every descriptor of an environment close-on-exec but the data
 * file's: a program the application starts would hold the file (and a
 * replaced file's disk space) for its whole life. 0 or an errno value. */
static int cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0 ? errno : 0;
}

int bk_env_create(const bk_backend *be, const char *path, unsigned flags, size_t map_size,
                  bk_env **out, bk_error *err)
{
    bk_env *e = calloc(1, sizeof *e);
    if (!e)
        return bk_fail(err, BK_EIO, "out of memory");
    e->refs = 1;
    e->datafd = e->lockfd = -1;
    int rc = mdb_env_create(&e->mdb);
    if (rc) {
        free(e);
        return bk_mdb_fail(err, rc, "creating the environment");
    }
    int fd;
    struct stat st;
    if ((rc = mdb_env_set_maxdbs(e->mdb, BK_MAX_BUCKETS)) ||
        (rc = mdb_env_set_maxreaders(e->mdb, be->cfg.max_readers)) ||
        (rc = mdb_env_set_mapsize(e->mdb, map_size)) ||
        (rc = mdb_env_open(e->mdb, path, flags, 0600)) ||
        (rc = mdb_env_get_fd(e->mdb, &fd)) ||
        (rc = fstat(fd, &st) ? errno : 0) ||
        (rc = cloexec(fd))) {
        bk_env_unref(e);
        return bk_mdb_fail(err, rc, path);
    }
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    *out = e;
    return BK_OK;
}

static void env_close(void *arg)
{
    bk_env *e = arg;
    if (e->mdb)
        mdb_env_close(e->mdb);
    if (e->datafd >= 0)
        close(e->datafd);
    if (e->lockfd >= 0)
        close(e->lockfd);
    free(e);
}

void bk_env_unref(bk_env *e)
{
    if (!e || __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    /* A replaced file's last descriptor makes the file system free its
     * blocks (140 ms for 400 MB here): not in a reader's close. */
    if (e->datafd >= 0)
        bk_reap(env_close, e);
    else
        env_close(e);
}
