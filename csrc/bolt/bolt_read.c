/* bolt.c: a read-only bbolt reader (the layout: bolt_format.h).
 *
 * A file is pages of page_size bytes. Pages 0 and 1 are meta pages; the
 * valid one with the higher txid names the top-level bucket's root page and
 * the high-water mark (pages in use). A bucket is a B+tree: branch pages hold
 * (key, child page) elements, leaf pages (key, value, flags) elements, and a
 * page with `overflow` > 0 spans that many more pages. A leaf element
 * flagged as a bucket has as value a 16-byte header (root page, sequence);
 * root 0 means an inline bucket, whose leaf page follows the header inside
 * the value. Element positions are relative to the element itself.
 *
 * Nothing read from the file is trusted: every page id is checked against
 * the high-water mark, every element against its page and its neighbours
 * (no overlaps), every page's type, key order and depth, and each page may
 * be reached once (a bitmap), so a cycle is an error and not a loop, and a
 * walk's work is bounded by the file's size. */
#include "bolt.h"
#include "bolt_format.h"
#include "core/util.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Pages on the way down from the top-level root, through nested buckets
 * too. A real tree is a handful deep; a deeper chain is a hostile file. */
#define MAX_DEPTH 100
#define QUOTE 48                /* room for a key in a message */

struct bk_bolt {
    char *path;
    int fd;                     /* holds the shared lock */
    const unsigned char *map;
    size_t size;                /* of the file */
    uint64_t data_size;         /* without the trailer */
    uint32_t page_size;
    int meta, sha256_trailer;
    uint64_t txid, high_water, root, freelist;
};

typedef struct meta {
    uint32_t magic, version, page_size;
    uint64_t root, freelist, high_water, txid, checksum;
} meta;

/* A page as the walk sees it: a file page (overflow included) or the page
 * inside an inline bucket's value. */
typedef struct page {
    const unsigned char *p;
    uint64_t len;
    uint64_t id;                /* 0 for an inline page */
    uint16_t flags, count;
} page;

typedef struct walker {
    const bk_bolt *b;
    bk_bolt_bucket_fn on_bucket;
    bk_bolt_kv_fn on_kv;
    void *ctx;
    bk_error *err;
    unsigned char *seen;        /* a bit per page id */
    /* A bucket's path is never longer than the pages above it. */
    bk_slice path[MAX_DEPTH + 1];
} walker;

/* One bucket's keys as the walk meets them: each must be above the last. */
typedef struct bucket_keys {
    size_t depth;               /* its path's length */
    bk_slice last;
    int has_last;
} bucket_keys;

typedef unsigned long long ull;   /* for printf */

/* BK_EFORMAT with the file's path in front. */
static int bad(const bk_bolt *b, bk_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(const bk_bolt *b, bk_error *err, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bk_fail(err, BK_EFORMAT, "%s: %s", b->path, msg);
}

static uint64_t file_offset(const bk_bolt *b, const unsigned char *p)
{
    return (uint64_t)(p - b->map);
}

/* Where the fields of the meta page in use start; root is at +16. */
static uint64_t meta_offset(const bk_bolt *b)
{
    return (uint64_t)b->meta * b->page_size + PAGE_HEADER;
}

/* ---- meta pages ---- */

/* Reads the meta page at off; 1 if bbolt would accept it (meta.validate:
 * magic, version and a checksum that is 0 or right), else 0 and why. */
static int meta_read(const bk_bolt *b, uint64_t off, meta *m, char *why, size_t why_size)
{
    if (off + PAGE_HEADER + META_SIZE > b->size) {
        snprintf(why, why_size, "past the end of the file");
        return 0;
    }
    const unsigned char *p = b->map + off + PAGE_HEADER;
    m->magic = le32(p);
    m->version = le32(p + 4);
    m->page_size = le32(p + 8);
    m->root = le64(p + 16);
    m->freelist = le64(p + 32);
    m->high_water = le64(p + 40);
    m->txid = le64(p + 48);
    m->checksum = le64(p + 56);
    uint64_t sum = fnv1a64(p, META_SUMMED);
    if (m->magic != BOLT_MAGIC)
        snprintf(why, why_size, "bad magic 0x%08x (want 0x%08x)", m->magic, BOLT_MAGIC);
    else if (m->version != BOLT_VERSION)
        snprintf(why, why_size, "version %u (want %u)", m->version, BOLT_VERSION);
    else if (m->checksum && m->checksum != sum)
        snprintf(why, why_size, "checksum 0x%016llx does not match its fields (0x%016llx)",
                 (ull)m->checksum, (ull)sum);
    else if (m->page_size < MIN_PAGE_SIZE || m->page_size > MAX_PAGE_SIZE ||
             (m->page_size & (m->page_size - 1)))
        snprintf(why, why_size, "page size %u is not a power of two from %d to %d",
                 m->page_size, MIN_PAGE_SIZE, MAX_PAGE_SIZE);
    else
        return 1;
    return 0;
}

/* Meta 1 is at offset page_size, so its own page size must say so. */
static int meta1_read(const bk_bolt *b, uint32_t page_size, meta *m, char *why, size_t why_size)
{
    if (!meta_read(b, page_size, m, why, why_size))
        return 0;
    if (m->page_size == page_size)
        return 1;
    snprintf(why, why_size, "page size %u, but it is at offset %u", m->page_size, page_size);
    return 0;
}

/* Meta 0 gives the page size and so where meta 1 is. Without a valid meta 0
 * bbolt guesses the OS page size; we try that, then every other size. */
static int choose_meta(bk_bolt *b, bk_error *err)
{
    meta m[2];
    char why[2][128], other[128];
    int ok[2];
    ok[0] = meta_read(b, 0, &m[0], why[0], sizeof why[0]);
    uint32_t guess = ok[0] ? m[0].page_size : DEFAULT_PAGE_SIZE;
    ok[1] = meta1_read(b, guess, &m[1], why[1], sizeof why[1]);
    for (uint32_t ps = MIN_PAGE_SIZE; !ok[0] && !ok[1] && ps <= MAX_PAGE_SIZE; ps *= 2)
        ok[1] = ps != guess && meta1_read(b, ps, &m[1], other, sizeof other);
    if (!ok[0] && !ok[1])
        return bad(b, err, "not a bbolt file, or both meta pages are damaged (meta 0 at "
                   "offset 0: %s; meta 1 at offset %u: %s; nor at any other page size)",
                   why[0], guess, why[1]);
    /* bbolt's db.meta(): the higher txid, meta 0 on a tie. */
    b->meta = ok[1] && (!ok[0] || m[1].txid > m[0].txid);
    b->page_size = m[b->meta].page_size;
    b->txid = m[b->meta].txid;
    b->high_water = m[b->meta].high_water;
    b->root = m[b->meta].root;
    b->freelist = m[b->meta].freelist;
    return BK_OK;
}

/* A page by id, as referenced from file offset ref (for the message). */
static int page_load(const bk_bolt *b, uint64_t id, uint64_t ref, page *out, bk_error *err)
{
    if (id < 2 || id >= b->high_water)
        return bad(b, err, "the page id %llu at file offset %llu is outside the data "
                   "pages 2..%llu (meta %d's high-water mark is %llu)",
                   (ull)id, (ull)ref, (ull)b->high_water - 1, b->meta, (ull)b->high_water);
    const unsigned char *p = b->map + id * b->page_size;
    uint64_t header_id = le64(p), overflow = le32(p + 12);
    if (header_id != id)
        return bad(b, err, "page %llu (file offset %llu) says it is page %llu",
                   (ull)id, (ull)file_offset(b, p), (ull)header_id);
    if (overflow >= b->high_water - id)
        return bad(b, err, "page %llu (file offset %llu): its %llu overflow pages run "
                   "past the high-water mark %llu", (ull)id, (ull)file_offset(b, p),
                   (ull)overflow, (ull)b->high_water);
    out->p = p;
    out->len = (overflow + 1) * b->page_size;
    out->id = id;
    out->flags = le16(p + 8);
    out->count = le16(p + 10);
    return BK_OK;
}

static int check_trailer(bk_bolt *b, bk_error *err)
{
    uint64_t rem = b->size % b->page_size;
    b->data_size = b->size - rem;
    if (rem == 0)
        return BK_OK;
    if (rem != BK_SHA256_SIZE)
        return bad(b, err, "the file size %llu is not a multiple of the page size %u, nor "
                   "%d bytes more (a snapshot's SHA-256 trailer): truncated or not bbolt",
                   (ull)b->size, b->page_size, BK_SHA256_SIZE);
    unsigned char sum[BK_SHA256_SIZE];
    bk_sha256 s;
    bk_sha256_init(&s);
    bk_sha256_update(&s, b->map, b->data_size);
    bk_sha256_final(&s, sum);
    const unsigned char *stored = b->map + b->data_size;
    if (memcmp(sum, stored, sizeof sum)) {
        char want[2 * BK_SHA256_SIZE + 1], got[2 * BK_SHA256_SIZE + 1];
        for (int i = 0; i < BK_SHA256_SIZE; i++) {
            snprintf(want + 2 * i, 3, "%02x", stored[i]);
            snprintf(got + 2 * i, 3, "%02x", sum[i]);
        }
        return bad(b, err, "SHA-256 trailer mismatch: the snapshot is damaged (the last "
                   "%d bytes say %s, the %llu bytes before them hash to %s)",
                   BK_SHA256_SIZE, want, (ull)b->data_size, got);
    }
    b->sha256_trailer = 1;
    return BK_OK;
}

/* The chosen meta's pages must lie in the file. */
static int check_meta(const bk_bolt *b, bk_error *err)
{
    uint64_t pages = b->data_size / b->page_size;
    if (b->high_water < 3)
        return bad(b, err, "meta %d's high-water mark %llu pages leaves no room for a root "
                   "page after the two meta pages", b->meta, (ull)b->high_water);
    if (b->high_water > pages)
        return bad(b, err, "meta %d's high-water mark %llu pages is past the end of the file "
                   "(%llu pages of %u bytes): truncated", b->meta, (ull)b->high_water,
                   (ull)pages, b->page_size);
    page pg;
    int rc = page_load(b, b->root, meta_offset(b) + 16, &pg, err);
    if (!rc && b->freelist != NO_FREELIST) {
        rc = page_load(b, b->freelist, meta_offset(b) + 32, &pg, err);
        if (!rc && pg.flags != PAGE_FREELIST)
            rc = bad(b, err, "meta %d's freelist page %llu (file offset %llu) has flags "
                     "0x%02x, not a freelist page's 0x%02x", b->meta, (ull)b->freelist,
                     (ull)file_offset(b, pg.p), pg.flags, PAGE_FREELIST);
    }
    return rc;
}

/* Opens, locks and maps the file. bbolt takes flock(LOCK_EX) to write and
 * LOCK_SH to read: sharing it keeps a running etcd out of the file while we
 * read (it would reuse pages under us), as its own read-only opens do. */
static int map_file(bk_bolt *b, bk_error *err)
{
    b->fd = open(b->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);   /* a FIFO must not hang us */
    if (b->fd < 0)
        return bk_fail(err, BK_EIO, "%s: %s", b->path, strerror(errno));
    struct stat st;
    int rc = BK_OK;
    if (flock(b->fd, LOCK_SH | LOCK_NB) < 0)
        rc = errno != EWOULDBLOCK
            ? bk_fail(err, BK_EIO, "%s: flock: %s", b->path, strerror(errno))
            : bk_is_lmdb_file(b->fd)   /* a backend writer flocks its file as etcd does */
            ? bad(b, err, "a backend database open for writing, not a bbolt file")
            : bk_fail(err, BK_EBUSY, "%s is open for writing (by a running etcd?)", b->path);
    else if (fstat(b->fd, &st) < 0)
        rc = bk_fail(err, BK_EIO, "%s: %s", b->path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = bad(b, err, "not a regular file");
    else if (st.st_size < PAGE_HEADER + META_SIZE)
        rc = bad(b, err, st.st_size ? "too short for a bbolt file (%lld bytes)" : "empty file",
                 (long long)st.st_size);
    else if ((uint64_t)st.st_size > SIZE_MAX)
        rc = bk_fail(err, BK_EIO, "%s: too large to map on this platform", b->path);
    if (!rc) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, b->fd, 0);
        if (map == MAP_FAILED) {
            rc = bk_fail(err, BK_EIO, "%s: mmap: %s", b->path, strerror(errno));
        } else {
            b->map = map;
            b->size = (size_t)st.st_size;
        }
    }
    return rc;
}

int bk_bolt_open(const char *path, bk_bolt **out, bk_error *err)
{
    bk_bolt *b = calloc(1, sizeof *b);
    if (!b || !(b->path = strdup(path))) {
        free(b);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    b->fd = -1;
    int rc = map_file(b, err);
    if (!rc)
        rc = choose_meta(b, err);
    if (!rc)
        rc = check_trailer(b, err);
    if (!rc)
        rc = check_meta(b, err);
    if (rc) {
        bk_bolt_close(b);
        return rc;
    }
    *out = b;
    return BK_OK;
}

void bk_bolt_close(bk_bolt *b)
{
    if (!b)
        return;
    /* munmap of a mapping we made, and close of a read-only file, cannot
     * fail in a way that matters. */
    if (b->map)
        munmap((void *)(uintptr_t)b->map, b->size);
    if (b->fd >= 0)
        close(b->fd);
    free(b->path);
    free(b);
}

void bk_bolt_info_get(const bk_bolt *b, bk_bolt_info *out)
{
    out->page_size = b->page_size;
    out->meta = b->meta;
    out->txid = b->txid;
    out->high_water = b->high_water;
    out->total_size = b->high_water * b->page_size;
    out->file_size = b->size;
    out->root = b->root;
    out->sha256_trailer = b->sha256_trailer;
}

/* ---- the walk ---- */

static void page_name(const page *pg, char *out, size_t size)
{
    if (pg->id)
        snprintf(out, size, "page %llu", (ull)pg->id);
    else
        snprintf(out, size, "an inline bucket's page");
}

/* BK_EFORMAT about element i of pg, located for the reader. */
static int bad_element(const walker *w, const page *pg, unsigned i, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad_element(const walker *w, const page *pg, unsigned i, const char *fmt, ...)
{
    char what[64], detail[256];
    page_name(pg, what, sizeof what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return bad(w->b, w->err, "%s, element %u of %u (file offset %llu): %s", what, i,
               pg->count, (ull)file_offset(w->b, pg->p + PAGE_HEADER + (size_t)i * ELEMENT_SIZE),
               detail);
}

static int walk_node(walker *w, bucket_keys *keys, const page *pg, int depth);

/* A file page of a bucket's tree, at depth pages below the top-level root. */
static int walk_page(walker *w, bucket_keys *keys, uint64_t id, uint64_t ref, int depth)
{
    const bk_bolt *b = w->b;
    page pg;
    int rc = page_load(b, id, ref, &pg, w->err);
    if (rc)
        return rc;
    if (pg.flags != PAGE_BRANCH && pg.flags != PAGE_LEAF)
        return bad(b, w->err, "page %llu (file offset %llu), referenced at file offset %llu, "
                   "has flags 0x%02x: not a branch (0x%02x) or leaf (0x%02x) page",
                   (ull)id, (ull)file_offset(b, pg.p), (ull)ref, pg.flags, PAGE_BRANCH,
                   PAGE_LEAF);
    for (uint64_t p = id; p < id + pg.len / b->page_size; p++) {
        unsigned char bit = (unsigned char)(1u << (p & 7));
        if (w->seen[p >> 3] & bit)
            return bad(b, w->err, "page %llu (file offset %llu), referenced at file offset "
                       "%llu, is reached a second time: a cycle, or a page shared by two "
                       "trees", (ull)p, (ull)p * b->page_size, (ull)ref);
        w->seen[p >> 3] |= bit;
    }
    return walk_node(w, keys, &pg, depth);
}

static int walk_bucket(walker *w, const bucket_keys *parent, bk_slice name, bk_slice value,
                       int depth)
{
    const bk_bolt *b = w->b;
    const unsigned char *v = value.data;
    char quoted[QUOTE];
    bk_quote(quoted, sizeof quoted, name);
    if (value.len < BUCKET_HEADER)
        return bad(b, w->err, "bucket \"%s\" at file offset %llu: its value has %zu bytes, "
                   "less than a bucket header", quoted, (ull)file_offset(b, v), value.len);
    bucket_keys keys = { parent->depth + 1, { NULL, 0 }, 0 };
    w->path[parent->depth] = name;
    int rc = w->on_bucket ? w->on_bucket(w->ctx, w->path, keys.depth) : 0;
    if (rc)
        return rc;
    uint64_t root = le64(v);
    if (root)
        return walk_page(w, &keys, root, file_offset(b, v), depth + 1);
    /* Inline: bbolt only inlines leaves (bucket.go, inlineable). */
    if (value.len < BUCKET_HEADER + PAGE_HEADER || le16(v + BUCKET_HEADER + 8) != PAGE_LEAF)
        return bad(b, w->err, "inline bucket \"%s\" at file offset %llu: no leaf page in its "
                   "%zu-byte value", quoted, (ull)file_offset(b, v), value.len);
    page pg = { v + BUCKET_HEADER, value.len - BUCKET_HEADER, 0, PAGE_LEAF,
                le16(v + BUCKET_HEADER + 10) };
    return walk_node(w, &keys, &pg, depth + 1);
}

static int walk_node(walker *w, bucket_keys *keys, const page *pg, int depth)
{
    const bk_bolt *b = w->b;
    int branch = pg->flags == PAGE_BRANCH;
    int too_deep = depth > MAX_DEPTH;
    if (too_deep || PAGE_HEADER + (uint64_t)pg->count * ELEMENT_SIZE > pg->len ||
        (branch && !pg->count)) {
        char what[64];
        page_name(pg, what, sizeof what);
        if (too_deep)
            return bad(b, w->err, "%s (file offset %llu) is more than %d pages below the "
                       "top-level root: no real file nests so deep", what,
                       (ull)file_offset(b, pg->p), MAX_DEPTH);
        return bad(b, w->err, "%s (file offset %llu): %u elements %s", what,
                   (ull)file_offset(b, pg->p), pg->count,
                   pg->count ? "do not fit in the page" : "in a branch page");
    }
    /* bbolt writes the keys and values after the element array, in element
     * order, none overlapping another. Holding a file to that bounds a walk
     * by the file's size: each page is reached once and each of its bytes
     * delivered or compared about once (an inline bucket's page lies inside
     * its element's value). Overlaps let a 3 MB file deliver 130 GB. */
    uint64_t used_to = PAGE_HEADER + (uint64_t)pg->count * ELEMENT_SIZE;
    bk_slice prev = { NULL, 0 };
    for (unsigned i = 0; i < pg->count; i++) {
        const unsigned char *e = pg->p + PAGE_HEADER + (size_t)i * ELEMENT_SIZE;
        uint32_t flags = branch ? 0 : le32(e);
        const unsigned char *sizes = branch ? e : e + 4;
        uint64_t start = (uint64_t)(e - pg->p) + le32(sizes);
        uint64_t klen = le32(sizes + 4), vlen = branch ? 0 : le32(sizes + 8);
        if (start + klen + vlen > pg->len)
            return bad_element(w, pg, i, "its %llu-byte key and %llu-byte value at +%u run "
                               "past the page's %llu bytes", (ull)klen, (ull)vlen,
                               le32(sizes), (ull)pg->len);
        if (start < used_to)
            return bad_element(w, pg, i, "its data at page offset %llu overlaps %s (which "
                               "ends at page offset %llu): the page is damaged", (ull)start,
                               i ? "the element before it" : "the element array",
                               (ull)used_to);
        used_to = start + klen + vlen;
        if (!klen)
            return bad_element(w, pg, i, "an empty key");
        bk_slice key = { pg->p + start, klen }, value = { pg->p + start + klen, vlen };
        char q1[QUOTE], q2[QUOTE];
        int rc;
        if (branch) {
            if (i && bk_slice_cmp(prev, key) >= 0) {
                bk_quote(q1, sizeof q1, key);
                bk_quote(q2, sizeof q2, prev);
                return bad_element(w, pg, i, "branch key \"%s\" is not above the one before "
                                   "it, \"%s\"", q1, q2);
            }
            prev = key;
            rc = walk_page(w, keys, le64(e + 8), file_offset(b, e + 8), depth + 1);
        } else {
            if (flags & ~(uint32_t)ELEMENT_BUCKET)
                return bad_element(w, pg, i, "unknown flags 0x%x", flags);
            if (keys->has_last && bk_slice_cmp(keys->last, key) >= 0) {
                bk_quote(q1, sizeof q1, key);
                bk_quote(q2, sizeof q2, keys->last);
                return bad_element(w, pg, i, "key \"%s\" is not above the key before it in "
                                   "its bucket, \"%s\"", q1, q2);
            }
            keys->last = key;
            keys->has_last = 1;
            if (flags & ELEMENT_BUCKET)
                rc = walk_bucket(w, keys, key, value, depth);
            else
                rc = w->on_kv ? w->on_kv(w->ctx, w->path, keys->depth, key, value) : 0;
        }
        if (rc)
            return rc;
    }
    return BK_OK;
}

int bk_bolt_walk(const bk_bolt *b, bk_bolt_bucket_fn on_bucket, bk_bolt_kv_fn on_kv,
                 void *ctx, bk_error *err)
{
    walker w = { b, on_bucket, on_kv, ctx, err, NULL, { { NULL, 0 } } };
    w.seen = calloc((size_t)(b->high_water + 7) / 8, 1);
    if (!w.seen)
        return bk_fail(err, BK_EIO, "out of memory");
    bucket_keys top = { 0, { NULL, 0 }, 0 };
    int rc = walk_page(&w, &top, b->root, meta_offset(b) + 16, 0);
    free(w.seen);
    return rc;
}
