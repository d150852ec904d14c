/* meta.c: LMDB's file format, read and written outside LMDB: the two meta
 * pages (mdb.c: MDB_meta after the 16-byte page header), which snapshots and
 * defrag write themselves, and the check made before LMDB maps a file, that
 * every page in use lies inside it and the structures LMDB trusts are sound
 * (bk_pages_check). */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_MAGIC_OFF 16
#define META_VERSION_OFF 20
#define META_PSIZE_OFF 40     /* mm_dbs[FREE_DBI].md_pad holds the page size */
#define META_FREE_FLAGS_OFF 44 /* mm_dbs[FREE_DBI].md_flags */
#define META_MAIN_FLAGS_OFF 92 /* mm_dbs[MAIN_DBI].md_flags */
#define META_FREE_ROOT_OFF 80 /* mm_dbs[FREE_DBI].md_root */
#define META_MAIN_ROOT_OFF 128 /* mm_dbs[MAIN_DBI].md_root */
#define META_LAST_PG_OFF 136
#define META_TXNID_OFF 144

static uint64_t get64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

void bk_meta_parse(const void *page, bk_meta *m)
{
    const unsigned char *p = page;
    memcpy(&m->magic, p + META_MAGIC_OFF, 4);
    memcpy(&m->version, p + META_VERSION_OFF, 4);
    memcpy(&m->psize, p + META_PSIZE_OFF, 4);
    memcpy(&m->free_flags, p + META_FREE_FLAGS_OFF, 2);
    memcpy(&m->main_flags, p + META_MAIN_FLAGS_OFF, 2);
    m->free_root = get64(p + META_FREE_ROOT_OFF);
    m->main_root = get64(p + META_MAIN_ROOT_OFF);
    m->last_pg = get64(p + META_LAST_PG_OFF);
    m->txnid = get64(p + META_TXNID_OFF);
}

int bk_is_lmdb_file(int fd)
{
    unsigned char head[BK_META_HEAD];
    bk_meta m;
    if (pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head)
        return 0;
    bk_meta_parse(head, &m);
    return m.magic == BK_LMDB_MAGIC;
}

int bk_meta_newest(const void *pair, size_t psize)
{
    bk_meta m[2];
    for (int i = 0; i < 2; i++)
        bk_meta_parse((const char *)pair + (size_t)i * psize, &m[i]);
    int ok0 = m[0].magic == BK_LMDB_MAGIC, ok1 = m[1].magic == BK_LMDB_MAGIC;
    if (ok0 && ok1)
        return m[1].txnid > m[0].txnid;
    return ok0 ? 0 : ok1 ? 1 : -1;
}

/* LMDB finds txn t's meta in slot t & 1 (mdb_txn_renew0 picks by the parity
 * of the lock file's txnid), so both slots get the newest page's state: as
 * txn `txnid` in its slot and as txnid - 1 in the other, whichever LMDB
 * reads, it sees that state. */
void bk_meta_pair(void *pair, size_t psize, int newest, uint64_t txnid)
{
    unsigned char *slot[2] = { pair, (unsigned char *)pair + psize };
    int mine = (int)(txnid & 1);
    uint64_t pgno = (uint64_t)mine, other_pgno = (uint64_t)(1 - mine), prev = txnid - 1;
    if (newest != mine)
        memcpy(slot[mine], slot[newest], psize);
    memcpy(slot[mine], &pgno, 8);
    memcpy(slot[mine] + META_TXNID_OFF, &txnid, 8);
    memcpy(slot[1 - mine], slot[mine], psize);
    memcpy(slot[1 - mine], &other_pgno, 8);
    memcpy(slot[1 - mine] + META_TXNID_OFF, &prev, 8);
}

/* ---- the pages in use: all inside the file? ----
 *
 * LMDB maps the file and trusts it: a page in use past the end of a
 * truncated file kills the process with SIGBUS on first touch, and a page
 * whose header is garbage can send it reading anywhere. The pages in use
 * are those up to the newest meta's last_pg that are not on the freelist (a
 * commit may allocate pages, free them again and never write them, so
 * last_pg alone may lie past the end of a sound file). Read with pread,
 * never through a map (mdb.c: MDB_page, MDB_node): the meta pages' fields
 * LMDB trusts, the main tree (the buckets' records), the root page of each
 * bucket, and the freelist tree (key a txn id, value an IDL: a count, then
 * page numbers), which a writer reads whole entries of. LMDB checks page
 * numbers and types along each path it takes (MDB_PAGE_NOTFOUND,
 * MDB_CORRUPTED); the rest of a page it cannot check without checksums. */

#define PAGE_HEAD 16
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_TYPES 0x2f          /* branch, leaf, overflow, meta, leaf2 */
#define F_BIGDATA 0x01        /* a leaf node's value is on overflow pages */
#define F_SUBDATA 0x02        /* a leaf node's value is a named database */
#define F_DUPDATA 0x04        /* a leaf node's value is a sub-page of duplicates */
#define DB_KEY_FLAGS 0x7e     /* an MDB_db's md_flags LMDB keeps: MDB_REVERSEKEY .. MDB_REVERSEDUP */
#define DB_INTEGERKEY 0x08
#define DB_RECORD 48          /* an MDB_db */
#define DB_ROOT 40            /* its md_root */
#define NODE_HEAD 8
#define MAX_DEPTH 32          /* LMDB's CURSOR_STACK */
#define NO_PAGE UINT64_MAX

typedef struct pages {
    int fd;
    uint64_t psize, npages;   /* npages: whole pages in the file */
    uint64_t last_pg, reads;
    uint64_t *past;           /* free pages past the end */
    size_t npast, cap;
    char *why;
    size_t whylen;
} pages;

static int damaged(pages *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int damaged(pages *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, p->whylen, fmt, ap);
    va_end(ap);
    return -1;
}

static unsigned get16(const unsigned char *b)
{
    uint16_t x;
    memcpy(&x, b, 2);
    return x;
}

static uint64_t get32(const unsigned char *b)
{
    uint32_t x;
    memcpy(&x, b, 4);
    return x;
}

/* Page pgno into buf (psize bytes): inside the file, numbered as it is, of
 * the type wanted (one of the bits in `types`), its node area sane. */
static int page_read(pages *p, uint64_t pgno, unsigned types, const char *what,
                     unsigned char *buf)
{
    typedef unsigned long long ull;
    if (pgno >= p->npages)
        return damaged(p, "%s, page %llu, is past its end (%llu whole pages)", what,
                       (ull)pgno, (ull)p->npages);
    if (++p->reads > p->npages)   /* a sound tree reads each page once */
        return damaged(p, "%s loops", what);
    if (bk_read_full(p->fd, (char *)buf, p->psize, pgno * p->psize))
        return damaged(p, "reading %s, page %llu: %s", what, (ull)pgno, strerror(errno));
    unsigned type = get16(buf + 10) & P_TYPES, lower = get16(buf + 12), upper = get16(buf + 14);
    if (get64(buf) != pgno || !(type & types) || (type & (type - 1)))
        return damaged(p, "%s, page %llu, has a bad header (number %llu, flags 0x%x)", what,
                       (ull)pgno, (ull)get64(buf), get16(buf + 10));
    if (type != P_OVERFLOW && (lower < PAGE_HEAD || lower > upper || upper > p->psize ||
                               (lower - PAGE_HEAD) % 2))
        return damaged(p, "%s, page %llu, has a bad header (lower %u, upper %u)", what,
                       (ull)pgno, lower, upper);
    return 0;
}

/* The offset of node i of a branch or leaf page, checked to lie in it. */
static int node_at(pages *p, const unsigned char *pg, unsigned i, const char *what,
                   unsigned *off)
{
    unsigned o = get16(pg + PAGE_HEAD + 2 * i);
    if (o < get16(pg + 14) || o + NODE_HEAD > p->psize ||
        o + NODE_HEAD + get16(pg + o + 6) > p->psize)
        return damaged(p, "%s, page %llu: node %u lies outside the page", what,
                       (unsigned long long)get64(pg), i);
    *off = o;
    return 0;
}

/* One freelist entry (key: a txn id; value: an IDL, a count then page
 * numbers), which LMDB reads whole when it allocates: its shape, and each
 * page number one that can be free (not a meta page, not past the last
 * page); collects those past the end of the file. */
static int free_entry(pages *p, const unsigned char *pg, unsigned off)
{
    const char *what = "its freelist";
    unsigned ksize = get16(pg + off + 6), flags = get16(pg + off + 4);
    uint64_t dsize = get16(pg + off) | (uint64_t)get16(pg + off + 2) << 16;
    const unsigned char *at = pg + off + NODE_HEAD + ksize;
    unsigned char *big = NULL;
    if (ksize != 8 || (flags & (F_SUBDATA | F_DUPDATA)))
        return damaged(p, "%s, page %llu: an entry is not a freelist entry (key of %u bytes, "
                       "flags 0x%x)", what, (unsigned long long)get64(pg), ksize, flags);
    if (flags & F_BIGDATA) {
        unsigned char *head = malloc(p->psize);
        uint64_t ov = 0, n = 0;
        int rc = !head ? damaged(p, "out of memory")
               : off + NODE_HEAD + ksize + 8 > p->psize ? damaged(p, "%s: a node is cut", what)
               : page_read(p, ov = get64(at), P_OVERFLOW, what, head);
        if (!rc) {
            n = get32(head + 12);
            p->reads += n ? n - 1 : 0;   /* each page once, as for the tree's */
            if (!n || n > p->npages - ov || dsize > n * p->psize - PAGE_HEAD ||
                p->reads > p->npages)
                rc = damaged(p, "%s: overflow pages %llu+%llu are past its end or too few",
                             what, (unsigned long long)ov, (unsigned long long)n);
        }
        free(head);
        if (!rc && !(big = malloc(dsize ? dsize : 1)))
            rc = damaged(p, "out of memory");
        if (!rc && bk_read_full(p->fd, (char *)big, dsize, ov * p->psize + PAGE_HEAD))
            rc = damaged(p, "reading %s: %s", what, strerror(errno));
        if (rc) {
            free(big);
            return rc;
        }
        at = big;
    } else if (off + NODE_HEAD + ksize + dsize > p->psize) {
        return damaged(p, "%s: a node is cut", what);
    }
    uint64_t count = dsize >= 8 ? get64(at) : 0;
    int rc = dsize < 8 || count > dsize / 8 - 1 ? damaged(p, "%s: an entry is cut", what) : 0;
    for (uint64_t i = 1; !rc && i <= count; i++) {
        uint64_t id = get64(at + 8 * i);
        if (id < 2 || id > p->last_pg) {
            rc = damaged(p, "%s names page %llu free (its pages run 2..%llu)", what,
                         (unsigned long long)id, (unsigned long long)p->last_pg);
            break;
        }
        if (id < p->npages)
            continue;
        if (p->npast == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 256;
            uint64_t *grown = realloc(p->past, cap * sizeof *grown);
            if (!grown) {
                rc = damaged(p, "out of memory");
                break;
            }
            p->past = grown;
            p->cap = cap;
        }
        p->past[p->npast++] = id;
    }
    free(big);
    return rc;
}

/* The root of a tree: no further than the last page, a branch or leaf page
 * inside the file. */
static int root_check(pages *p, uint64_t root, const char *what)
{
    if (root == NO_PAGE)
        return 0;
    if (root > p->last_pg)
        return damaged(p, "%s, page %llu, lies past its last page %llu", what,
                       (unsigned long long)root, (unsigned long long)p->last_pg);
    unsigned char *pg = malloc(p->psize);
    int rc = pg ? page_read(p, root, P_BRANCH | P_LEAF, what, pg) : damaged(p, "out of memory");
    free(pg);
    return rc;
}

/* A bucket's record in the main tree (a named database's MDB_db): the
 * header of its root page. Keys that are not databases are not ours. */
static int bucket_entry(pages *p, const unsigned char *pg, unsigned off)
{
    unsigned ksize = get16(pg + off + 6);
    uint64_t dsize = get16(pg + off) | (uint64_t)get16(pg + off + 2) << 16;
    if (!(get16(pg + off + 4) & F_SUBDATA))
        return 0;
    if (dsize != DB_RECORD || off + NODE_HEAD + ksize + dsize > p->psize)
        return damaged(p, "its main tree: a bucket's record is cut");
    return root_check(p, get64(pg + off + NODE_HEAD + ksize + DB_ROOT), "the root of a bucket");
}

/* Every page of a tree, and leaf(p, page, node offset) for each leaf node. */
static int walk(pages *p, uint64_t pgno, int depth, const char *what,
                int (*leaf)(pages *, const unsigned char *, unsigned))
{
    if (depth > MAX_DEPTH)
        return damaged(p, "%s is deeper than LMDB allows", what);
    unsigned char *pg = malloc(p->psize);
    if (!pg)
        return damaged(p, "out of memory");
    int rc = page_read(p, pgno, P_BRANCH | P_LEAF, what, pg);
    unsigned n = rc ? 0 : (get16(pg + 12) - PAGE_HEAD) / 2, off = 0;
    for (unsigned i = 0; !rc && i < n; i++) {
        if ((rc = node_at(p, pg, i, what, &off)))
            break;
        if (get16(pg + 10) & P_BRANCH)
            rc = walk(p, get16(pg + off) | (uint64_t)get16(pg + off + 2) << 16 |
                         (uint64_t)get16(pg + off + 4) << 32, depth + 1, what, leaf);
        else
            rc = leaf(p, pg, off);
    }
    free(pg);
    return rc;
}

static int id_order(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* One pass of bk_pages_check; *txnid: the newest meta's txn id, if the
 * check got that far (else UINT64_MAX). */
static int check_once(int fd, uint64_t size, char *why, size_t whylen, uint64_t *txnid)
{
    typedef unsigned long long ull;
    unsigned char head[2][BK_META_HEAD];
    bk_meta m[2];
    pages p = { fd, 0, 0, 0, 0, NULL, 0, 0, why, whylen };
    *txnid = UINT64_MAX;
    if (size < BK_META_HEAD || bk_read_full(fd, (char *)head[0], BK_META_HEAD, 0))
        return damaged(&p, "its first meta page is cut");
    bk_meta_parse(head[0], &m[0]);
    p.psize = m[0].psize;
    if (p.psize < BK_META_HEAD || p.psize > (1u << 16) || (p.psize & (p.psize - 1)))
        return damaged(&p, "its meta page names a page size of %llu bytes", (ull)p.psize);
    if (size < 2 * p.psize ||
        bk_read_full(fd, (char *)head[1], BK_META_HEAD, p.psize))
        return damaged(&p, "it is shorter than its two meta pages (%llu bytes)", (ull)size);
    bk_meta_parse(head[1], &m[1]);
    if (m[0].magic != BK_LMDB_MAGIC || m[1].magic != BK_LMDB_MAGIC)
        return damaged(&p, "meta page %d is not an LMDB meta page", m[0].magic == BK_LMDB_MAGIC);
    for (int i = 0; i < 2; i++) {
        if (!(get16(head[i] + 10) & P_META))
            return damaged(&p, "meta page %d is not marked a meta page (flags 0x%x)", i,
                           get16(head[i] + 10));
        if (m[i].version != BK_LMDB_VERSION)
            return damaged(&p, "meta page %d names data format %u, not LMDB's %u", i,
                           (unsigned)m[i].version, BK_LMDB_VERSION);
    }
    /* LMDB finds meta page 1 one page size from the start, and then works
     * in the newest page's size */
    if (m[1].psize != p.psize)
        return damaged(&p, "its meta pages name page sizes of %llu and %llu bytes",
                       (ull)p.psize, (ull)m[1].psize);
    const bk_meta *newest = &m[m[1].txnid > m[0].txnid];
    *txnid = newest->txnid;
    /* LMDB trusts these: a freelist compared as other than integers, or a
     * main tree of duplicates, sends its cursors astray */
    if ((newest->free_flags & DB_KEY_FLAGS) != DB_INTEGERKEY || (newest->main_flags & DB_KEY_FLAGS))
        return damaged(&p, "its meta page names the flags 0x%x and 0x%x for its freelist and "
                       "main tree", newest->free_flags, newest->main_flags);
    p.npages = size / p.psize;
    p.last_pg = newest->last_pg;
    if ((newest->main_root != NO_PAGE &&
         walk(&p, newest->main_root, 0, "its main tree", bucket_entry)) ||
        root_check(&p, newest->free_root, "the root of its freelist"))
        return -1;
    int rc = newest->free_root == NO_PAGE ? 0
           : walk(&p, newest->free_root, 0, "its freelist", free_entry);
    uint64_t missing = p.last_pg < p.npages ? 0 : p.last_pg + 1 - p.npages;
    size_t distinct = 0;
    if (!rc && p.npast) {
        qsort(p.past, p.npast, sizeof *p.past, id_order);
        distinct = 1;
        for (size_t i = 1; i < p.npast; i++)
            distinct += p.past[i] != p.past[i - 1];
    }
    free(p.past);
    if (!rc && distinct < missing)
        rc = damaged(&p, "%llu of its pages in use are past its end (it holds %llu whole "
                     "pages, and its last page is %llu)", (ull)(missing - distinct),
                     (ull)p.npages, (ull)p.last_pg);
    return rc;
}

/* The newest meta's txn id, or UINT64_MAX if the meta pages cannot be read. */
static uint64_t newest_txnid(int fd)
{
    unsigned char head[BK_META_HEAD];
    bk_meta m[2];
    if (bk_read_full(fd, (char *)head, BK_META_HEAD, 0))
        return UINT64_MAX;
    bk_meta_parse(head, &m[0]);
    if (m[0].psize < BK_META_HEAD || bk_read_full(fd, (char *)head, BK_META_HEAD, m[0].psize))
        return UINT64_MAX;
    bk_meta_parse(head, &m[1]);
    return m[m[1].txnid > m[0].txnid].txnid;
}

/* A writer in another process may commit while the file is read, and from
 * its second commit on it may reuse pages of the state being checked (LMDB
 * keeps only the last committed state whole, and this check is no LMDB
 * reader). So a failed check counts only if the newest meta is the same
 * after it; else the check is made again, on the file as it is then. */
#define CHECK_TRIES 50

int bk_pages_check(int fd, uint64_t size, char *why, size_t whylen)
{
    for (int tries = 1;; tries++) {
        uint64_t txnid;
        struct stat st;
        int rc = check_once(fd, size, why, whylen, &txnid);
        if (!rc || txnid == UINT64_MAX || tries == CHECK_TRIES || newest_txnid(fd) == txnid ||
            fstat(fd, &st) < 0)
            return rc;
        size = (uint64_t)st.st_size;
    }
}
