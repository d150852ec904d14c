/* bolt_import.c: bk_bolt_import, an etcd (bbolt) data file copied into a
 * new backend database through the public API, as any client would write
 * it, then checked: the import's bk_hash must equal the source's etcd hash,
 * computed while reading it exactly as `etcdctl snapshot status` does. */
#include "bolt.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes per locked section: short sections let the committer write while
 * the walk goes on. */
#define SECTION_WRITES 4096
/* Bytes written between forced commits: without it a disk slower than the
 * walk would let queued batches hold a large file in memory. */
#define COMMIT_BYTES ((uint64_t)64 << 20)
#define QUOTE 48

typedef struct importer {
    const char *src;
    bk_backend *be;
    bk_error *err;
    bk_bolt_import_stats st;
    uint64_t section_writes, uncommitted_bytes;
} importer;

/* Puts the source, bucket and key in front of err's message. */
static int annotate(importer *im, int rc, bk_slice bucket, const bk_slice *key)
{
    char msg[sizeof im->err->msg], qb[QUOTE], qk[QUOTE];
    memcpy(msg, im->err->msg, sizeof msg);
    bk_quote(qb, sizeof qb, bucket);
    if (!key)
        return bk_fail(im->err, rc, "%s: bucket \"%s\": %s", im->src, qb, msg);
    bk_quote(qk, sizeof qk, *key);
    return bk_fail(im->err, rc, "%s: bucket \"%s\", key \"%s\": %s", im->src, qb, qk, msg);
}

/* Counts a write; ends the section (and commits) when it is full. */
static int wrote(importer *im, size_t bytes)
{
    im->uncommitted_bytes += bytes;
    if (++im->section_writes < SECTION_WRITES)
        return BK_OK;
    im->section_writes = 0;
    int rc = bk_unlock(im->be, im->err);
    if (!rc && im->uncommitted_bytes >= COMMIT_BYTES) {
        im->uncommitted_bytes = 0;
        rc = bk_force_commit(im->be, im->err);
    }
    return rc ? rc : bk_lock(im->be, im->err);
}

static int import_bucket(void *ctx, const bk_slice *path, size_t depth)
{
    importer *im = ctx;
    if (depth > 1) {
        char parent[QUOTE], name[QUOTE];
        bk_quote(parent, sizeof parent, path[depth - 2]);
        bk_quote(name, sizeof name, path[depth - 1]);
        return bk_fail(im->err, BK_EFORMAT, "%s: bucket \"%s\" holds a nested bucket \"%s\": "
                       "etcd writes none and a backend cannot hold one; not imported",
                       im->src, parent, name);
    }
    int rc = bk_create_bucket(im->be, path[0], im->err);
    if (rc)
        return annotate(im, rc, path[0], NULL);
    im->st.hash = bk_crc32c(im->st.hash, path[0].data, path[0].len);
    im->st.buckets++;
    return wrote(im, 0);
}

/* depth is 0 or 1: import_bucket stops the walk at a nested bucket. */
static int import_kv(void *ctx, const bk_slice *path, size_t depth, bk_slice key,
                     bk_slice value)
{
    importer *im = ctx;
    if (depth == 0) {
        char q[QUOTE];
        bk_quote(q, sizeof q, key);
        return bk_fail(im->err, BK_EFORMAT, "%s: the top-level key \"%s\" is not a bucket "
                       "(bbolt writes none; etcdctl rejects such a file); not imported",
                       im->src, q);
    }
    int rc = bk_put(im->be, path[0], key, value, im->err);
    if (rc)
        return annotate(im, rc, path[0], &key);
    im->st.hash = bk_crc32c(im->st.hash, key.data, key.len);
    im->st.hash = bk_crc32c(im->st.hash, value.data, value.len);
    im->st.keys++;
    im->st.bytes += key.len + value.len;
    return wrote(im, key.len + value.len);
}

/* The walk, in sections, then a durable commit and the hash check. */
static int copy_all(importer *im, const bk_bolt *b)
{
    uint32_t hash;
    int rc = bk_lock(im->be, im->err);
    if (rc)
        return rc;
    rc = bk_bolt_walk(b, import_bucket, import_kv, im, im->err);
    int unlock_rc = bk_unlock(im->be, im->err);
    if (!rc)
        rc = unlock_rc;
    if (!rc)
        rc = bk_force_commit(im->be, im->err);
    if (!rc)
        rc = bk_hash(im->be, NULL, 0, &hash, im->err);
    if (!rc && hash != im->st.hash)
        rc = bk_fail(im->err, BK_EIO, "%s: the import's hash %08x differs from the "
                     "source's %08x", im->src, hash, im->st.hash);
    return rc;
}

/* After a failure: the partial database goes, and a failure to remove it
 * joins the message. */
static void remove_partial(const char *path, const char *lockpath, bk_error *err)
{
    const char *paths[2] = { path, lockpath };
    for (int i = 0; i < 2; i++)
        if (unlink(paths[i]) < 0 && errno != ENOENT) {
            size_t used = strlen(err->msg);
            snprintf(err->msg + used, sizeof err->msg - used, " (and %s could not be "
                     "removed: %s)", paths[i], strerror(errno));
        }
}

int bk_bolt_import(const char *src, const bk_config *dst, bk_bolt_import_stats *st,
                   bk_error *err)
{
    if (!dst->path || !*dst->path)
        return bk_fail(err, BK_EARG, "config.path must be a non-empty string");
    if (dst->readonly || dst->remove_on_close)
        return bk_fail(err, BK_EARG, "an import needs config.readonly and "
                       "config.remove_on_close off");
    importer im = { src, NULL, err, { 0, 0, 0, 0 }, 0, 0 };
    bk_bolt *b;
    int rc = bk_bolt_open(src, &b, err);
    if (rc)
        return rc;
    char *lockpath = malloc(strlen(dst->path) + sizeof "-lock");
    if (!lockpath) {
        bk_bolt_close(b);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    sprintf(lockpath, "%s-lock", dst->path);
    /* Created here, exclusively: what a failure removes is ours alone. */
    int fd = open(dst->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno == EEXIST
            ? bk_fail(err, BK_EARG, "%s exists: an import makes a new database", dst->path)
            : bk_fail(err, BK_EIO, "%s: %s", dst->path, strerror(errno));
        goto out;
    }
    if (close(fd) < 0) {
        rc = bk_fail(err, BK_EIO, "%s: close: %s", dst->path, strerror(errno));
    } else if (!(rc = bk_open(dst, &im.be, err))) {
        rc = copy_all(&im, b);
        if (!rc)
            rc = bk_close(im.be, 0, err);
        bk_free(im.be);   /* closes it, after a failure too */
    }
    if (!rc && bk_fsync_dir(dst->path) < 0)
        rc = bk_fail(err, BK_EIO, "%s: fsync of its directory: %s", dst->path,
                     strerror(errno));
    if (rc)
        remove_partial(dst->path, lockpath, err);
    else if (st)
        *st = im.st;
out:
    free(lockpath);
    bk_bolt_close(b);
    return rc;
}
