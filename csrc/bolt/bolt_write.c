/* bolt_write.c: bk_bolt_export, a backend's committed data written out as an
 * etcd data file (bbolt; the layout: bolt_format.h) the way `bbolt compact`
 * writes one: FillPercent 1.0 (a page takes elements while they fit in it,
 * and at least two, as bbolt's splitIndex), each of our buckets a top-level
 * bucket, inline when it is one leaf of at most a quarter page (bbolt's
 * inlineable), an empty freelist page and every other page reachable once.
 *
 * Each tree is built bottom-up as its keys arrive in key order: one page is
 * being filled per level; a full page is written out, takes the next page
 * ids, and becomes an element (its first key) of the level above. A
 * bucket's tree is finished when its keys end and becomes an element of the
 * top-level tree. Pages 0 and 1 are the meta pages, page 2 the freelist.
 *
 * The meta pages come first in the file and in its SHA-256 trailer, but
 * name the root page and the high-water mark, known only at the end. So an
 * export makes two passes over one snapshot: a plan that lays the pages out
 * without writing (nor reading a value), then the write, which streams the
 * file in order (a thread reads it back behind the writer for the SHA-256)
 * and must end where the plan did. The plan also gives progress its exact
 * total.
 *
 * Both passes go in steps: a step holds the snapshot's txn (and maplock) for
 * a bounded amount of work, then lets go, so that readers sharing the txn,
 * commits that grow the map and the progress callback run between steps. */
#include "bolt.h"
#include "bolt_format.h"
#include "core/util.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FREELIST_PAGE 2
#define FIRST_DATA_PAGE 3
#define MAX_LEVELS 64                  /* two elements a page: 2^64 keys */
#define STEP_ENTRIES 16384
#define STEP_BYTES ((uint64_t)8 << 20)  /* of keys and values */
#define OUT_BUFFER ((size_t)1 << 20)
#define READ_BUFFER ((size_t)1 << 18)
#define STEP_STOP (-1)                 /* bk_snapshot_scan: the step's budget is spent */

typedef unsigned long long ull;   /* for printf */

/* The page being filled at one level of a tree. */
typedef struct level {
    unsigned char *elems;       /* ELEMENT_SIZE each; pos is set when written */
    size_t count, elems_cap;
    unsigned char *data;        /* their keys and values (write pass only) */
    size_t data_len, data_cap;
    uint64_t size;              /* of the page so far: header, elements, data */
} level;

typedef struct tree {
    level lv[MAX_LEVELS];
    int nlevels;                /* lv[0] is the leaf level */
} tree;

/* The trailer's SHA-256, computed by a thread of its own that reads back
 * what the writer has written (from the page cache) while the writer goes
 * on: hashing in line would take as long as the rest of the export. */
typedef struct hasher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t flushed;           /* bytes in the file: may be hashed */
    int done;                   /* the writer has written all it will */
    int stop;                   /* the writer failed: hashing is pointless */
    int fd;
    uint64_t hashed;
    int read_errno;             /* a failed read stops the hashing */
    bk_sha256 sha;
    unsigned char buf[READ_BUFFER];
} hasher;

typedef struct exporter {
    bk_backend *be;
    bk_snapshot *snap;
    const char *dst;
    bk_bolt_export_opts opts;
    uint32_t ps;
    int writing;                /* 0: the plan pass */

    bk_result names;            /* the buckets in name order, listed by the first step */
    int listed;
    size_t cur;                 /* the bucket being exported */
    int in_bucket;              /* its name is counted, keys are going in */
    unsigned char last[512];    /* where the last step stopped in it */
    size_t last_len;
    int has_last;
    uint64_t step_entries, step_bytes;   /* spent in the step so far */

    tree top, bucket;
    uint64_t next_page;
    uint64_t plan_high_water, plan_root, root;
    unsigned char *inline_value;   /* BUCKET_HEADER + a quarter page */

    int fd;
    unsigned char *out;         /* OUT_BUFFER bytes not yet written */
    size_t out_used;
    uint64_t written, total;    /* bytes of the file (written: out included) */
    uint64_t synced;            /* bytes whose writeback has started */
    hasher *sha;                /* NULL: no trailer */
    bk_bolt_export_stats st;
} exporter;

static void put_le(unsigned char *p, uint64_t x, int n)
{
    for (int i = 0; i < n; i++, x >>= 8)
        p[i] = (unsigned char)x;
}

static uint64_t pages_for(const exporter *x, uint64_t bytes)
{
    return (bytes + x->ps - 1) / x->ps;
}

/* ---- the trailer's hash ---- */

/* Hashes the file as the writer lets it, until the writer is done (or
 * stops, or a read fails): the thread's body, or run after the writer
 * without one. */
static void *hash_file(void *arg)
{
    hasher *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (h->hashed == h->flushed && !h->done && !h->stop)
            pthread_cond_wait(&h->cv, &h->mu);
        uint64_t upto = h->flushed;
        int stop = h->stop;
        pthread_mutex_unlock(&h->mu);
        if (stop || h->hashed == upto)
            return NULL;   /* stopped, or done and all of it hashed */
        while (h->hashed < upto) {
            size_t n = upto - h->hashed < READ_BUFFER ? (size_t)(upto - h->hashed) : READ_BUFFER;
            if (bk_read_full(h->fd, (char *)h->buf, n, h->hashed) < 0) {
                h->read_errno = errno;
                return NULL;
            }
            bk_sha256_update(&h->sha, h->buf, n);
            h->hashed += n;
        }
    }
}

/* What the writer has written so far may be hashed; done: and that is
 * all; stop: the writer failed. */
static void hash_allow(hasher *h, uint64_t flushed, int done, int stop)
{
    pthread_mutex_lock(&h->mu);
    h->flushed = flushed;
    h->done = done;
    h->stop = stop;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* ---- output: the file in order ---- */

static int write_fail(exporter *x, bk_error *err)
{
    return bk_fail(err, BK_EIO, "%s: %s", x->dst, strerror(errno));
}

/* What is in the file so far. */
static uint64_t flushed(const exporter *x)
{
    return x->written - x->out_used;
}

static int out_flush(exporter *x, bk_error *err)
{
    if (x->out_used && bk_write_full(x->fd, (const char *)x->out, x->out_used) < 0)
        return write_fail(x, err);
    x->out_used = 0;
    return BK_OK;
}

/* After each step: the hasher may go on, and the writeback of what the step
 * wrote starts, so that the disk works while the export goes on and the
 * final fsync finds little left to do. */
static void out_step(exporter *x)
{
    uint64_t in_file = flushed(x);
    if (x->sha)
        hash_allow(x->sha, in_file, 0, 0);
    (void)sync_file_range(x->fd, (off_t)x->synced, (off_t)(in_file - x->synced),
                          SYNC_FILE_RANGE_WRITE);   /* a head start only: fsync checks */
    x->synced = in_file;
}

static int out_write(exporter *x, const void *p, size_t len, bk_error *err)
{
    if (!len)
        return BK_OK;   /* p may be NULL: an empty page's elements */
    x->written += len;
    if (x->out_used + len > OUT_BUFFER && out_flush(x, err))
        return BK_EIO;
    if (len >= OUT_BUFFER)
        return bk_write_full(x->fd, p, len) < 0 ? write_fail(x, err) : BK_OK;
    memcpy(x->out + x->out_used, p, len);
    x->out_used += len;
    return BK_OK;
}

/* ---- pages ---- */

static void page_header(unsigned char *p, uint64_t id, uint16_t flags, size_t count,
                        uint64_t overflow)
{
    put_le(p, id, 8);
    put_le(p + 8, flags, 2);
    put_le(p + 10, count, 2);
    put_le(p + 12, overflow, 4);
}

/* Sets each element's pos: from the element to its key, which follows the
 * element array, in element order (bbolt's node.write). */
static void elems_place(level *lv, int branch)
{
    uint64_t data_off = 0;
    for (size_t i = 0; i < lv->count; i++) {
        unsigned char *e = lv->elems + i * ELEMENT_SIZE;
        unsigned char *sizes = branch ? e : e + 4;
        put_le(sizes, (lv->count - i) * ELEMENT_SIZE + data_off, 4);
        data_off += le32(sizes + 4) + (branch ? 0 : le32(sizes + 8));
    }
}

static void level_reset(level *lv)
{
    lv->count = 0;
    lv->data_len = 0;
    lv->size = PAGE_HEADER;
}

static void tree_reset(tree *t)
{
    for (int l = 0; l < MAX_LEVELS; l++)
        level_reset(&t->lv[l]);
    t->nlevels = 1;
}

static void tree_free(tree *t)
{
    for (int l = 0; l < MAX_LEVELS; l++) {
        free(t->lv[l].elems);
        free(t->lv[l].data);
    }
}

static int grow(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    unsigned char *p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

/* Gives level l's page its page ids and writes it out (write pass); *id
 * gets its first. */
static int page_out(exporter *x, tree *t, int l, uint64_t *id, bk_error *err)
{
    level *lv = &t->lv[l];
    uint64_t pages = pages_for(x, lv->size);
    *id = x->next_page;
    x->next_page += pages;
    if (!x->writing)
        return BK_OK;
    unsigned char head[PAGE_HEADER];
    elems_place(lv, l > 0);
    page_header(head, *id, l ? PAGE_BRANCH : PAGE_LEAF, lv->count, pages - 1);
    int rc = out_write(x, head, sizeof head, err);
    if (!rc)
        rc = out_write(x, lv->elems, lv->count * ELEMENT_SIZE, err);
    if (!rc)
        rc = out_write(x, lv->data, lv->data_len, err);
    static const unsigned char zeros[DEFAULT_PAGE_SIZE];   /* less than a page of it */
    if (!rc)
        rc = out_write(x, zeros, (size_t)(pages * x->ps - lv->size), err);
    return rc;
}

static int level_add(exporter *x, tree *t, int l, uint32_t flags, const void *key, size_t klen,
                     const void *value, size_t vlen, uint64_t child, bk_error *err);

/* Level l's page is full: out it goes, its first key into level l + 1. */
static int level_flush(exporter *x, tree *t, int l, bk_error *err)
{
    level *lv = &t->lv[l];
    uint64_t id;
    int rc = page_out(x, t, l, &id, err);
    if (rc)
        return rc;
    if (l + 1 == t->nlevels) {
        if (t->nlevels == MAX_LEVELS)
            return bk_fail(err, BK_EIO, "%s: a tree more than %d levels deep", x->dst, MAX_LEVELS);
        t->nlevels++;
    }
    size_t klen = le32(lv->elems + (l ? 4 : 8));
    rc = level_add(x, t, l + 1, 0, x->writing ? lv->data : NULL, klen, NULL, 0, id, err);
    level_reset(lv);
    return rc;
}

/* An element into level l (a leaf's key and value, or a branch's first key
 * and child page), after writing out the page being filled if the element
 * does not fit in it and it has two elements already. */
static int level_add(exporter *x, tree *t, int l, uint32_t flags, const void *key, size_t klen,
                     const void *value, size_t vlen, uint64_t child, bk_error *err)
{
    level *lv = &t->lv[l];
    uint64_t size = ELEMENT_SIZE + (uint64_t)klen + vlen;
    int rc;
    if (lv->count >= 2 && lv->size + size > x->ps && (rc = level_flush(x, t, l, err)))
        return rc;
    if (grow(&lv->elems, &lv->elems_cap, (lv->count + 1) * ELEMENT_SIZE) ||
        (x->writing && grow(&lv->data, &lv->data_cap, lv->data_len + klen + vlen)))
        return bk_fail(err, BK_EIO, "out of memory");
    unsigned char *e = lv->elems + lv->count * ELEMENT_SIZE;
    if (l) {
        put_le(e + 4, klen, 4);
        put_le(e + 8, child, 8);
    } else {
        put_le(e, flags, 4);
        put_le(e + 8, klen, 4);
        put_le(e + 12, vlen, 4);
    }
    if (x->writing) {
        memcpy(lv->data + lv->data_len, key, klen);
        if (vlen)
            memcpy(lv->data + lv->data_len + klen, value, vlen);
        lv->data_len += klen + vlen;
    }
    lv->count++;
    lv->size += size;
    return BK_OK;
}

/* Writes out what is left of t, bottom up, into *root; or, if inline_ok
 * and t is one leaf of at most a quarter page, nothing (*root = 0). */
static int tree_finish(exporter *x, tree *t, int inline_ok, uint64_t *root, bk_error *err)
{
    *root = 0;
    if (inline_ok && t->nlevels == 1 && t->lv[0].size <= x->ps / 4)
        return BK_OK;
    int rc = BK_OK;
    /* A flush can add a level on top: nlevels is read again each time. */
    for (int l = 0; l < t->nlevels - 1 && !rc; l++)
        rc = level_flush(x, t, l, err);
    return rc ? rc : page_out(x, t, t->nlevels - 1, root, err);
}

/* The value of a finished bucket in the top-level tree: its header, and
 * for an inline bucket its leaf page (with page id 0), in x->inline_value
 * (write pass; the plan needs only the length). */
static size_t bucket_value(exporter *x, uint64_t root)
{
    level *lv = &x->bucket.lv[0];
    unsigned char *v = x->inline_value;
    if (x->writing) {
        put_le(v, root, 8);
        put_le(v + 8, 0, 8);   /* the sequence: etcd never sets one */
    }
    if (root)
        return BUCKET_HEADER;
    if (x->writing) {
        page_header(v + BUCKET_HEADER, 0, PAGE_LEAF, lv->count, 0);
        if (lv->count) {   /* else elems may be NULL, even for memcpy of 0 bytes */
            elems_place(lv, 0);
            memcpy(v + BUCKET_HEADER + PAGE_HEADER, lv->elems, lv->count * ELEMENT_SIZE);
            memcpy(v + BUCKET_HEADER + PAGE_HEADER + lv->count * ELEMENT_SIZE, lv->data,
                   lv->data_len);
        }
    }
    return BUCKET_HEADER + (size_t)lv->size;
}

/* ---- reading the snapshot ---- */

static void bucket_begin(exporter *x, bk_slice name)
{
    x->in_bucket = 1;
    x->has_last = 0;
    if (x->writing) {
        x->st.buckets++;
        x->st.hash = bk_crc32c(x->st.hash, name.data, name.len);
    }
}

static int bucket_end(exporter *x, bk_slice name, bk_error *err)
{
    uint64_t root;
    int rc = tree_finish(x, &x->bucket, 1, &root, err);
    if (!rc) {
        size_t vlen = bucket_value(x, root);
        rc = level_add(x, &x->top, 0, ELEMENT_BUCKET, name.data, name.len, x->inline_value,
                       vlen, 0, err);
    }
    tree_reset(&x->bucket);
    x->in_bucket = 0;
    x->cur++;
    return rc;
}

typedef struct kv_job {
    exporter *x;
    bk_error *err;
} kv_job;

/* One entry of the current bucket; STEP_STOP once the step's budget is
 * spent (the walk resumes after this key). */
static int kv_add(void *ctx, bk_slice k, bk_slice v)
{
    kv_job *job = ctx;
    exporter *x = job->x;
    if (x->writing) {
        x->st.keys++;
        x->st.bytes += k.len + v.len;
        x->st.hash = bk_crc32c(x->st.hash, k.data, k.len);
        x->st.hash = bk_crc32c(x->st.hash, v.data, v.len);
    }
    int rc = level_add(x, &x->bucket, 0, 0, k.data, k.len, v.data, v.len, 0, job->err);
    if (rc)
        return rc;
    x->step_bytes += k.len + v.len;
    if (++x->step_entries >= STEP_ENTRIES || x->step_bytes >= STEP_BYTES) {
        memcpy(x->last, k.data, k.len);   /* keys fit: LMDB's limit is 511 */
        x->last_len = k.len;
        x->has_last = 1;
        return STEP_STOP;
    }
    return BK_OK;
}

/* Keys of the current bucket from where the last step stopped, until the
 * bucket ends or the step's budget is spent. */
static int bucket_keys(exporter *x, bk_error *err)
{
    bk_slice name = bk_result_key(&x->names, x->cur), from = { x->last, x->last_len };
    kv_job job = { x, err };
    if (!x->has_last)
        from.len = 0;
    int rc = bk_snapshot_scan(x->snap, name, from, x->has_last, kv_add, &job, err);
    if (rc == STEP_STOP)
        return BK_OK;
    return rc ? rc : bucket_end(x, name, err);
}

/* The snapshot's failure, as the export's. */
static int stopped(exporter *x, int rc, bk_error *err)
{
    if (rc == BK_EINVALID || rc == BK_ECLOSED) {
        char msg[sizeof err->msg];
        memcpy(msg, err->msg, sizeof msg);
        bk_fail(err, rc, "export to %s stopped: %s", x->dst, msg);
    }
    return rc;
}

/* One step of a pass: a bounded amount of the snapshot's data. */
static int step(exporter *x, bk_error *err)
{
    int rc = BK_OK;
    x->step_entries = x->step_bytes = 0;
    if (!x->listed && !(rc = bk_snapshot_buckets(x->snap, &x->names, err)))
        x->listed = 1;
    while (!rc && x->cur < x->names.count && x->step_entries < STEP_ENTRIES &&
           x->step_bytes < STEP_BYTES) {
        if (!x->in_bucket)
            bucket_begin(x, bk_result_key(&x->names, x->cur));
        rc = bucket_keys(x, err);
    }
    return stopped(x, rc, err);
}

/* ---- the passes ---- */

/* Meta pages 0 and 1 (both for the same state: meta 1's txid one lower, as
 * bbolt's Tx.WriteTo writes them) and the empty freelist page. */
static int write_head(exporter *x, bk_error *err)
{
    unsigned char *p = calloc(1, x->ps);
    if (!p)
        return bk_fail(err, BK_EIO, "out of memory");
    int rc = BK_OK;
    for (uint64_t id = 0; id < 2 && !rc; id++) {
        unsigned char *m = p + PAGE_HEADER;
        page_header(p, id, PAGE_META, 0, 0);
        put_le(m, BOLT_MAGIC, 4);
        put_le(m + 4, BOLT_VERSION, 4);
        put_le(m + 8, x->ps, 4);
        put_le(m + 16, x->plan_root, 8);
        put_le(m + 32, FREELIST_PAGE, 8);
        put_le(m + 40, x->plan_high_water, 8);
        put_le(m + 48, 1 - id, 8);
        put_le(m + META_SUMMED, fnv1a64(m, META_SUMMED), 8);
        rc = out_write(x, p, x->ps, err);
    }
    memset(p, 0, x->ps);
    page_header(p, FREELIST_PAGE, PAGE_FREELIST, 0, 0);
    if (!rc)
        rc = out_write(x, p, x->ps, err);
    free(p);
    return rc;
}

static int progress(exporter *x, uint64_t done)
{
    return x->opts.progress ? x->opts.progress(x->opts.ctx, done, x->total) : 0;
}

/* A pass over every bucket; the write pass reports progress after each step
 * and must lay the pages out as the plan did. */
static int run_pass(exporter *x, int writing, bk_error *err)
{
    x->writing = writing;
    x->cur = 0;
    x->in_bucket = 0;
    x->next_page = FIRST_DATA_PAGE;
    tree_reset(&x->top);
    tree_reset(&x->bucket);
    int rc;
    while (!(rc = step(x, err)) && x->cur < x->names.count)
        if (writing) {
            out_step(x);
            if ((rc = progress(x, x->written)))
                return rc;
        }
    if (!rc)
        rc = tree_finish(x, &x->top, 0, &x->root, err);
    if (!rc && writing && (x->next_page != x->plan_high_water || x->root != x->plan_root))
        rc = bk_fail(err, BK_EIO, "%s: the pages written (%llu, root %llu) differ from the "
                     "plan (%llu, root %llu)", x->dst, (ull)x->next_page, (ull)x->root,
                     (ull)x->plan_high_water, (ull)x->plan_root);
    return rc;
}

/* The trailer: the hasher's digest, once it has read all of the file. */
static int write_trailer(exporter *x, bk_error *err)
{
    hasher *h = x->sha;
    unsigned char sum[BK_SHA256_SIZE];
    if (h->read_errno || h->hashed != x->written)
        return bk_fail(err, BK_EIO, "%s: reading it back for its SHA-256: %s", x->dst,
                       strerror(h->read_errno ? h->read_errno : EIO));
    bk_sha256_final(&h->sha, sum);
    return out_write(x, sum, sizeof sum, err);
}

/* The write pass into x->fd, the hasher beside it, then the trailer and
 * the last progress, with all of it on disk. */
static int write_file(exporter *x, bk_error *err)
{
    hasher *h = x->sha;
    pthread_t thread;
    int threaded = 0;
    if (h) {
        pthread_mutex_init(&h->mu, NULL);
        pthread_cond_init(&h->cv, NULL);
        h->fd = x->fd;
        bk_sha256_init(&h->sha);
        /* Without a thread the same work is done once the pages are written. */
        threaded = bk_thread_start(&thread, "bk-export-hash", hash_file, h) == 0;
    }
    int rc = write_head(x, err);
    if (!rc)
        rc = run_pass(x, 1, err);
    if (!rc)
        rc = out_flush(x, err);
    if (h) {
        hash_allow(h, flushed(x), 1, rc != BK_OK);
        if (threaded)
            pthread_join(thread, NULL);
        else if (!rc)
            hash_file(h);
        if (!rc)
            rc = write_trailer(x, err);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
    }
    if (!rc)
        rc = out_flush(x, err);
    if (!rc && fsync(x->fd) < 0)
        rc = write_fail(x, err);
    if (!rc)
        rc = progress(x, x->written);
    return rc;
}

/* Plans, then writes the file beside dst and renames it into place. */
static int export_snapshot(exporter *x, bk_error *err)
{
    int rc = run_pass(x, 0, err);
    if (rc)
        return rc;
    x->plan_high_water = x->next_page;
    x->plan_root = x->root;
    x->total = x->plan_high_water * x->ps + (x->sha ? BK_SHA256_SIZE : 0);
    bk_tmp tmp;
    if ((rc = bk_tmp_create(&tmp, x->dst, err)))
        return rc;
    /* Read and write: the hasher reads it back. */
    x->fd = open(tmp.file, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (x->fd < 0) {
        rc = bk_fail(err, BK_EIO, "%s: %s", tmp.file, strerror(errno));
    } else {
        rc = write_file(x, err);
        if (close(x->fd) < 0 && !rc)
            rc = write_fail(x, err);
        if (!rc)
            rc = bk_tmp_publish(&tmp, x->dst, err);
    }
    bk_tmp_discard(&tmp);
    return rc;
}

/* dst must be a path where nothing is, not even a dangling link. */
static int check_new(const char *dst, bk_error *err)
{
    struct stat exists;
    if (!dst || !*dst)
        return bk_fail(err, BK_EARG, "the export's destination must be a non-empty path");
    if (lstat(dst, &exists) == 0)
        return bk_fail(err, BK_EARG, "%s exists: an export makes a new file", dst);
    if (errno != ENOENT)
        return bk_fail(err, BK_EIO, "%s: %s", dst, strerror(errno));
    return BK_OK;
}

static void exporter_free(exporter *x)
{
    if (!x)
        return;
    bk_result_free(&x->names);
    tree_free(&x->top);
    tree_free(&x->bucket);
    free(x->inline_value);
    free(x->out);
    free(x->sha);
    free(x);
}

int bk_bolt_export(bk_backend *src, const char *dst, const bk_bolt_export_opts *opts,
                   bk_bolt_export_stats *st, bk_error *err)
{
    static const bk_bolt_export_opts defaults = { 1, NULL, NULL };
    int rc = check_new(dst, err);
    if (rc)
        return rc;
    if (!opts)
        opts = &defaults;
    exporter *x = calloc(1, sizeof *x);
    if (!x || !(x->out = malloc(OUT_BUFFER)) ||
        !(x->inline_value = malloc(BUCKET_HEADER + DEFAULT_PAGE_SIZE / 4)) ||
        (opts->trailer && !(x->sha = calloc(1, sizeof *x->sha)))) {
        exporter_free(x);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    x->be = src;
    x->dst = dst;
    x->opts = *opts;
    x->ps = DEFAULT_PAGE_SIZE;
    x->fd = -1;
    rc = bk_snapshot_open(src, &x->snap, err);
    if (!rc) {
        rc = export_snapshot(x, err);
        bk_snapshot_close(x->snap);
    }
    if (!rc && st) {
        *st = x->st;
        st->page_size = x->ps;
        st->high_water = x->plan_high_water;
        st->file_size = x->total;
    }
    exporter_free(x);
    return rc;
}

int bk_bolt_export_path(const char *src, const char *dst, const bk_bolt_export_opts *opts,
                        bk_bolt_export_stats *st, bk_error *err)
{
    bk_config cfg;
    bk_backend *be;
    bk_error close_err;
    bk_config_default(&cfg);
    cfg.path = src;
    cfg.readonly = 1;
    int rc = check_new(dst, err);
    if (!rc)
        rc = bk_open(&cfg, &be, err);
    if (rc)
        return rc;
    rc = bk_bolt_export(be, dst, opts, st, err);
    bk_close(be, 1, &close_err);   /* read-only: nothing to commit, nothing lost */
    bk_free(be);
    return rc;
}
