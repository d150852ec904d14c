/* memtable.c: see memtable.h. Links are published with release stores and
 * read with acquire loads, so readers on other threads see whole nodes. */
#include "memtable.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BLOCK_SIZE (256 * 1024)
#define ALIGN 8

struct mt_block {
    mt_block *next;
    size_t size;
    char data[];
};

void mt_pool_init(mt_pool *p)
{
    pthread_mutex_init(&p->mu, NULL);
    p->free = NULL;
    p->n = 0;
}

static void free_blocks(mt_block *b)
{
    for (mt_block *next; b; b = next) {
        next = b->next;
        free(b);
    }
}

void mt_pool_destroy(mt_pool *p)
{
    free_blocks(p->free);
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
        p->n--;
    }
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* Gives a memtable's blocks back: standard ones to the pool while it has
 * room, the rest to malloc (outside the pool's lock: a large free unmaps). */
static void release_blocks(mt_pool *p, mt_block *b)
{
    mt_block *spare = NULL;
    if (p)
        pthread_mutex_lock(&p->mu);
    for (mt_block *next; b; b = next) {
        next = b->next;
        if (p && b->size == BLOCK_SIZE && p->n < MT_POOL_MAX) {
            b->next = p->free;
            p->free = b;
            p->n++;
        } else {
            b->next = spare;
            spare = b;
        }
    }
    if (p)
        pthread_mutex_unlock(&p->mu);
    free_blocks(spare);
}

/* A fresh block, its pages faulted in by the kernel in one call: touched
 * one by one they cost a fault each, on the writer (on these VMs 36 us
 * for 256 KiB in one call, 0.75-0.95 ms page by page). */
static mt_block *block_alloc(size_t size)
{
    mt_block *b = malloc(sizeof *b + size);
    if (!b)
        return NULL;
    b->size = size;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)b->data + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)b->data + size) & ~(page - 1);
    /* Before Linux 5.14 this fails (EINVAL): the pages then fault in as
     * they are first written, which is all the call saves. */
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
    return b;
}

/* A standard block: from the pool, else fresh, and then MT_REFILL - 1 more
 * fresh ones go to the pool, so that the writer stops for the kernel once
 * per MT_REFILL blocks. */
static mt_block *standard_block(mt_pool *p)
{
    mt_block *b = pool_take(p);
    if (b || !(b = block_alloc(BLOCK_SIZE)) || !p)
        return b;
    mt_block *more = NULL;
    for (int i = 1; i < MT_REFILL; i++) {
        mt_block *e = block_alloc(BLOCK_SIZE);
        if (!e)
            break;
        e->next = more;
        more = e;
    }
    release_blocks(p, more);
    return b;
}

static mt_block *new_block(memtable *m, size_t size)
{
    mt_block *b = size == BLOCK_SIZE ? standard_block(m->pool) : block_alloc(size);
    if (!b)
        return NULL;
    __atomic_add_fetch(&m->arena_bytes, sizeof *b + size, __ATOMIC_RELAXED);
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
    mt_block *b = new_block(m, n > BLOCK_SIZE / 4 ? n : BLOCK_SIZE);
    if (!b)
        return NULL;
    if (n > BLOCK_SIZE / 4 && m->blocks) {
        /* A large entry gets a block of its own, listed behind the current
         * block, which goes on serving small ones. */
        b->next = m->blocks->next;
        m->blocks->next = b;
        return b->data;
    }
    b->next = m->blocks;
    m->blocks = b;
    m->cur = b->data + n;
    m->end = b->data + b->size;
    return b->data;
}

memtable *mt_new(uint64_t id, mt_pool *pool)
{
    memtable *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->refs = 1;
    m->id = id;
    m->pool = pool;
    m->height = 1;
    m->rng = 0x9e3779b9u ^ (uint32_t)id;
    m->head = arena_alloc(m, sizeof(mt_node) + MT_MAX_HEIGHT * sizeof(mt_node *));
    if (!m->head) {
        free(m);
        return NULL;
    }
    memset(m->head, 0, sizeof(mt_node) + MT_MAX_HEIGHT * sizeof(mt_node *));
    m->head->height = MT_MAX_HEIGHT;
    return m;
}

void mt_ref(memtable *m)
{
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
}

void mt_unref(memtable *m)
{
    if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    release_blocks(m->pool, m->blocks);
    free(m);
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
