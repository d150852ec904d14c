/* memtable.c: see memtable.h. Links are published with release stores and
 * read with acquire loads, so readers on other threads see whole nodes. */
#include "memtable.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* LeakSanitizer scans malloc'd memory for pointers, not what the program
 * maps itself: a block holds pointers to malloc'd objects (a version in a
 * memtable's arena, its gen), so under ASan each block is registered. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define SCANNED(b) __lsan_register_root_region((b), (b)->len)
#define UNSCANNED(b) __lsan_unregister_root_region((b), (b)->len)
#else
#define SCANNED(b) ((void)(b))
#define UNSCANNED(b) ((void)(b))
#endif

#define BLOCK_SIZE (256 * 1024)   /* a standard block's mapping */
#define ALIGN 8

/* Blocks are mapped from the kernel, not malloc'd: in a heap of millions
 * of small objects (a Lua application's), a 256 KiB malloc first sorts
 * glibc's free lists and only then maps: 0.3-1.7 ms a block measured in
 * W9 with 3M live Lua strings, against 0.03-0.15 ms for the mmap. */
struct mt_block {
    mt_block *next;
    size_t len;   /* of the mapping, this header included */
    char data[];
};

#define BLOCK_DATA (BLOCK_SIZE - offsetof(mt_block, data))

void mt_pool_init(mt_pool *p)
{
    pthread_mutex_init(&p->mu, NULL);
    p->free = NULL;
    p->n = 0;
}

static void unmap_blocks(mt_block *b)
{
    for (mt_block *next; b; b = next) {
        next = b->next;
        UNSCANNED(b);
        munmap(b, b->len);
    }
}

void mt_pool_destroy(mt_pool *p)
{
    unmap_blocks(p->free);
    pthread_mutex_destroy(&p->mu);
}

/* A standard block from the pool, or NULL when it has none. */
static mt_block *pool_take(mt_pool *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->mu);
    mt_block *b = p->free;
    if (b) {
        p->free = b->next;
        __atomic_store_n(&p->n, p->n - 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* Gives a memtable's blocks back: standard ones to the pool while it has
 * room, the rest to the kernel (outside the pool's lock). */
static void release_blocks(mt_pool *p, mt_block *b)
{
    mt_block *spare = NULL;
    if (p)
        pthread_mutex_lock(&p->mu);
    for (mt_block *next; b; b = next) {
        next = b->next;
        if (p && b->len == BLOCK_SIZE && p->n < MT_POOL_MAX) {
            b->next = p->free;
            p->free = b;
            __atomic_store_n(&p->n, p->n + 1, __ATOMIC_RELAXED);
        } else {
            b->next = spare;
            spare = b;
        }
    }
    if (p)
        pthread_mutex_unlock(&p->mu);
    unmap_blocks(spare);
}

/* The mapping at p cut into n blocks of len bytes each, linked in address
 * order. */
static mt_block *carve(char *p, size_t len, size_t n)
{
    mt_block *list = NULL;
    for (size_t i = n; i-- > 0;) {
        mt_block *b = (mt_block *)(p + len * i);
        b->len = len;
        SCANNED(b);
        b->next = list;
        list = b;
    }
    return list;
}

/* n blocks of len bytes each (a multiple of the page size), in one
 * mapping whose pages the kernel faults in at once: touched one by one
 * they cost a fault each, on the writer (on these VMs 36 us for 256 KiB
 * in one call, 0.75-0.95 ms page by page). Each block can be unmapped on
 * its own. Returns them linked, or NULL. */
static mt_block *map_blocks(size_t len, int n)
{
    char *p = mmap(NULL, len * (size_t)n, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : carve(p, len, (size_t)n);
}

/* Blocks made off the writer, as the pool runs low: a 2 MiB-aligned chunk,
 * in one huge page where the kernel gives them (transparent huge pages in
 * "madvise" mode), every page touched. A page the kernel has faulted in
 * can still cost its first user access a fault on some VMs (measured here:
 * 5 us a page after MAP_POPULATE, 0.06 us once another thread of the
 * process had touched it); a huge page costs one such fault for 2 MiB. */
#define CHUNK_SIZE (2u << 20)

static mt_block *map_chunk(void)
{
    char *p = mmap(NULL, 2 * CHUNK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)p + CHUNK_SIZE - 1) & ~(uintptr_t)(CHUNK_SIZE - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    munmap(a + CHUNK_SIZE, (size_t)(p + 2 * CHUNK_SIZE - (a + CHUNK_SIZE)));
    (void)madvise(a, CHUNK_SIZE, MADV_HUGEPAGE);   /* EINVAL without THP: small pages */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t off = 0; off < CHUNK_SIZE; off += page)
        ((volatile char *)a)[off] = 0;
    return carve(a, BLOCK_SIZE, CHUNK_SIZE / BLOCK_SIZE);
}

void mt_pool_top_up(mt_pool *p)
{
    if (__atomic_load_n(&p->n, __ATOMIC_RELAXED) >= MT_POOL_LOW)
        return;
    mt_block *b = map_chunk();
    if (b)
        release_blocks(p, b);
}

/* A standard block: from the pool, else fresh along with MT_REFILL - 1
 * more for the pool, so that the writer stops for the kernel once per
 * MT_REFILL blocks. */
static mt_block *standard_block(mt_pool *p)
{
    mt_block *b = pool_take(p);
    if (!b && (b = map_blocks(BLOCK_SIZE, p ? MT_REFILL : 1)))
        release_blocks(p, b->next);
    if (b)
        b->next = NULL;
    return b;
}

/* A block with room for at least size bytes. */
static mt_block *new_block(memtable *m, size_t size)
{
    mt_block *b;
    if (size <= BLOCK_DATA) {
        b = standard_block(m->pool);
    } else {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        if (size > SIZE_MAX - offsetof(mt_block, data) - page)
            return NULL;
        size_t len = offsetof(mt_block, data) + size;
        b = map_blocks((len + page - 1) / page * page, 1);
    }
    if (!b)
        return NULL;
    __atomic_add_fetch(&m->arena_bytes, b->len, __ATOMIC_RELAXED);
    return b;
}

static void *arena_alloc(memtable *m, size_t n)
{
    n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if ((size_t)(m->end - m->cur) >= n) {
        void *p = m->cur;
        m->cur += n;
        return p;
    }
    mt_block *b = new_block(m, n > BLOCK_DATA / 4 ? n : BLOCK_DATA);
    if (!b)
        return NULL;
    if (n > BLOCK_DATA / 4) {
        /* A large entry gets a block of its own, listed behind the current
         * block (there is one from mt_new on), which goes on serving small
         * ones. */
        b->next = m->blocks->next;
        m->blocks->next = b;
        return b->data;
    }
    b->next = m->blocks;
    m->blocks = b;
    m->cur = b->data + n;
    m->end = (char *)b + b->len;
    return b->data;
}

/* The memtable lives at the start of its first block: a rotation makes no
 * malloc on the writer, where a small one can take a millisecond in a big,
 * churned heap (glibc first sorts up to 10,000 freed chunks; 0.7-1.8 ms
 * measured in W9 with 3M live Lua strings). */
memtable *mt_new(uint64_t id, mt_pool *pool)
{
    mt_block *b = standard_block(pool);
    if (!b)
        return NULL;
    memtable *m = (memtable *)b->data;
    memset(m, 0, sizeof *m);
    m->refs = 1;
    m->id = id;
    m->pool = pool;
    m->height = 1;
    m->rng = 0x9e3779b9u ^ (uint32_t)id;
    m->arena_bytes = b->len;
    m->blocks = b;
    m->cur = b->data + ((sizeof *m + ALIGN - 1) & ~(size_t)(ALIGN - 1));
    m->end = (char *)b + b->len;
    size_t head = sizeof(mt_node) + MT_MAX_HEIGHT * sizeof(mt_node *);
    m->head = arena_alloc(m, head);   /* in the same block */
    memset(m->head, 0, head);
    m->head->height = MT_MAX_HEIGHT;
    return m;
}

void *mt_alloc(memtable *m, size_t n)
{
    return arena_alloc(m, n);
}

void mt_ref(memtable *m)
{
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
}

void mt_unref(memtable *m)
{
    if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    release_blocks(m->pool, m->blocks);   /* m with them */
}

int mt_keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Order of node n against (bucket, key, seq): bucket, key, newest first. */
static int node_cmp(const mt_node *n, uint32_t bucket, const void *key,
                    size_t klen, uint64_t seq)
{
    if (n->bucket != bucket)
        return n->bucket < bucket ? -1 : 1;
    int c = mt_keycmp(mt_key(n), n->klen, key, klen);
    if (c)
        return c;
    return n->seq > seq ? -1 : n->seq < seq;
}

static mt_node *load(mt_node *n, int level)
{
    return __atomic_load_n(&n->next[level], __ATOMIC_ACQUIRE);
}

static int random_height(memtable *m)
{
    int h = 1;
    for (;;) {
        m->rng ^= m->rng << 13;
        m->rng ^= m->rng >> 17;
        m->rng ^= m->rng << 5;
        if (h >= MT_MAX_HEIGHT || (m->rng & 3))
            return h;
        h++;
    }
}

/* Finds the first node >= target; fills prev[] with the last node < target
 * at each level when prev is given. */
static mt_node *find_ge(const memtable *m, uint32_t bucket, const void *key,
                        size_t klen, uint64_t seq, mt_node **prev)
{
    mt_node *x = m->head;
    int level = __atomic_load_n(&m->height, __ATOMIC_ACQUIRE) - 1;
    for (;;) {
        mt_node *next = load(x, level);
        if (next && node_cmp(next, bucket, key, klen, seq) < 0) {
            x = next;
            continue;
        }
        if (prev)
            prev[level] = x;
        if (level == 0)
            return next;
        level--;
    }
}

mt_node *mt_insert(memtable *m, uint64_t seq, uint32_t bucket, uint8_t type,
                   const void *key, size_t klen, const void *val, size_t vlen)
{
    mt_node *prev[MT_MAX_HEIGHT];
    int cur = m->height;
    if (m->tail[0] && node_cmp(m->tail[0], bucket, key, klen, seq) < 0) {
        /* After the last node (keys arriving in order): no search. */
        for (int i = 0; i < cur; i++)
            prev[i] = m->tail[i] ? m->tail[i] : m->head;
    } else {
        find_ge(m, bucket, key, klen, seq, prev);
    }
    int h = random_height(m);
    if (h > cur) {
        for (int i = cur; i < h; i++)
            prev[i] = m->head;
        /* Readers that see the new height before the links find NULL at
         * the new levels from head, and simply drop a level. */
        __atomic_store_n(&m->height, h, __ATOMIC_RELEASE);
    }
    mt_node *n = arena_alloc(m, sizeof *n + (size_t)h * sizeof(mt_node *) + klen + vlen);
    if (!n)
        return NULL;
    n->seq = seq;
    n->bucket = bucket;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->type = type;
    n->height = (uint8_t)h;
    char *data = (char *)&n->next[h];
    if (klen)
        memcpy(data, key, klen);
    if (vlen)
        memcpy(data + klen, val, vlen);
    for (int i = 0; i < h; i++) {
        n->next[i] = load(prev[i], i);
        __atomic_store_n(&prev[i]->next[i], n, __ATOMIC_RELEASE);
        if (!n->next[i])
            m->tail[i] = n;
    }
    /* Read by stats on other threads. */
    __atomic_add_fetch(&m->writes, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&m->bytes, klen + vlen, __ATOMIC_RELAXED);
    return n;
}

void mt_unlink(memtable *m, mt_node *n)
{
    mt_node *prev[MT_MAX_HEIGHT];
    find_ge(m, n->bucket, mt_key(n), n->klen, n->seq, prev);
    for (int i = 0; i < n->height; i++) {
        __atomic_store_n(&prev[i]->next[i], n->next[i], __ATOMIC_RELEASE);
        if (m->tail[i] == n)
            m->tail[i] = prev[i] == m->head ? NULL : prev[i];
    }
    size_t size = (size_t)n->klen + n->vlen;
    __atomic_sub_fetch(&m->writes, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&m->bytes, size, __ATOMIC_RELAXED);
    __atomic_add_fetch(&m->dropped, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&m->dropped_bytes, size, __ATOMIC_RELAXED);
}

mt_node *mt_seek(const memtable *m, uint32_t bucket, const void *key,
                 size_t klen, uint64_t seq)
{
    return find_ge(m, bucket, key, klen, seq, NULL);
}

mt_node *mt_first(const memtable *m)
{
    return load(m->head, 0);
}
