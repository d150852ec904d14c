/* bolt_import.c: bk_bolt_import, an etcd (bbolt) data file copied into a
 * new backend database through the public API, as any client would write
 * it, then checked: the import's bk_hash must equal the source's etcd hash,
 * computed while reading it exactly as `etcdctl snapshot status` does. */
#include "bolt.h"
#include "core/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int bk_bolt_import(const char *src, const bk_config *dst, bk_bolt_import_stats *st,
                   bk_error *err)
{
    if (!dst->path || !*dst->path)
        return bk_fail(err, BK_EARG, "config.path must be a non-empty string");
    if (dst->readonly || dst->owns_dir)
        return bk_fail(err, BK_EARG, "an import needs config.readonly and "
                       "config.owns_dir off");
    importer im = { src, NULL, err, { 0, 0, 0, 0 }, 0, 0 };
    bk_bolt *b;
    struct stat exists;
    int rc = bk_bolt_open(src, &b, err);
    if (rc)
        return rc;
    if (lstat(dst->path, &exists) == 0)
        rc = bk_fail(err, BK_EARG, "%s exists: an import makes a new database", dst->path);
    else if (errno != ENOENT)
        rc = bk_fail(err, BK_EIO, "%s: %s", dst->path, strerror(errno));
    if (rc) {
        bk_bolt_close(b);
        return rc;
    }
    /* Built in a temporary directory beside dst and renamed into place once
     * whole: a failure or a crash never leaves a partial database at dst. */
    bk_tmp tmp;
    if (!(rc = bk_tmp_create(&tmp, dst->path, err))) {
        bk_config cfg = *dst;
        cfg.path = tmp.file;
        if (!(rc = bk_open(&cfg, &im.be, err))) {
            rc = copy_all(&im, b);
            if (!rc)
                rc = bk_close(im.be, 0, err);
            bk_free(im.be);   /* closes it, after a failure too */
        }
        if (!rc)
            rc = bk_tmp_publish(&tmp, dst->path, err);
        bk_tmp_discard(&tmp);
    }
    if (!rc && st)
        *st = im.st;
    bk_bolt_close(b);
    return rc;
}
