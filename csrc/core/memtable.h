/* memtable.h: the write buffer. One skiplist of versioned entries ordered by
 * (bucket, key, seq descending), in an arena. One writer inserts (under the
 * batch lock); any number of readers traverse it without locks, each seeing
 * only the entries with seq <= its own snapshot sequence. A reader never
 * copies the buffer: that is what keeps a concurrent read tx O(1). */
#ifndef MEMTABLE_H
#define MEMTABLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)   /* as in backend.h */

enum mt_type { MT_PUT = 0, MT_DEL = 1, MT_CREATE = 2, MT_DROP = 3 };

#define MT_MAX_HEIGHT 20

typedef struct mt_node mt_node;
struct mt_node {
    uint64_t seq;
    uint32_t bucket;
    uint32_t klen;
    uint32_t vlen;
    uint8_t type;
    uint8_t height;
    mt_node *next[];   /* height links, then key bytes, then value bytes */
};

typedef struct mt_block mt_block;

/* Free arena blocks kept for new memtables: a recycled block's pages are
 * mapped already, where a fresh one pays a page fault per page at first
 * touch (1-2 ms a block on VMs), on the writer. Freed by whichever thread
 * drops a memtable's last reference; at most MT_POOL_MAX blocks (16 MiB)
 * are kept, the rest are unmapped. An empty pool is refilled with
 * MT_REFILL fresh blocks (1 MiB) in one mapping, its pages faulted in by
 * the kernel in the same call (memtable.c). */
#define MT_POOL_MAX 64
#define MT_REFILL 4
#define MT_POOL_LOW 32
typedef struct mt_pool {
    pthread_mutex_t mu;
    mt_block *free;
    int n;                     /* written under mu; read atomically */
} mt_pool;

void mt_pool_init(mt_pool *p);
void mt_pool_destroy(mt_pool *p);   /* every memtable using it is gone */
/* Below MT_POOL_LOW blocks (8 MiB: what the writer takes while a commit's
 * fsync holds the committer), adds 2 MiB of them, their pages faulted in by
 * this thread (not the writer's: the committer calls it between writes).
 * Out of memory it adds none: the writer then maps its own. */
void mt_pool_top_up(mt_pool *p);

typedef struct memtable {
    int refs;                  /* atomic */
    uint64_t id;               /* creation order; commits go in this order */
    uint64_t writes;           /* entries linked */
    uint64_t bytes;            /* their key and value bytes */
    uint64_t dropped;          /* entries unlinked again (rolled back) */
    uint64_t dropped_bytes;    /* their key and value bytes, still in the arena */
    uint64_t arena_bytes;      /* memory held */
    int height;                /* atomic: current list height */
    uint32_t rng;
    mt_pool *pool;             /* NULL: blocks come from malloc */
    mt_block *blocks;
    char *cur, *end;           /* bump allocation in blocks->data */
    mt_node *head;
    mt_node *tail[MT_MAX_HEIGHT];   /* writer's: last node of each level */
    struct memtable *qnext;    /* the backend's commit queue (under its cmu) */
} memtable;

memtable *mt_new(uint64_t id, mt_pool *pool);
/* n bytes in m's arena, freed with m (single writer, as mt_insert). */
void *mt_alloc(memtable *m, size_t n);
void mt_ref(memtable *m);
void mt_unref(memtable *m);

/* Insert an entry (single writer). Bucket events (MT_CREATE, MT_DROP) use
 * an empty key, which sorts before every real key of the bucket. Returns
 * the new node, or NULL when out of memory. */
mt_node *mt_insert(memtable *m, uint64_t seq, uint32_t bucket, uint8_t type,
                   const void *key, size_t klen, const void *val, size_t vlen);

/* Unlink a node mt_insert returned (single writer). A reader standing on
 * it goes on through its links, which stay as they were; its memory lives
 * as long as the memtable. */
void mt_unlink(memtable *m, mt_node *n);

/* First node >= (bucket, key, seq) in list order, or NULL. */
mt_node *mt_seek(const memtable *m, uint32_t bucket, const void *key,
                 size_t klen, uint64_t seq);
mt_node *mt_first(const memtable *m);
static inline mt_node *mt_next(const mt_node *n)
{
    return __atomic_load_n(&n->next[0], __ATOMIC_ACQUIRE);
}
/* No entry yet: a read can skip it (the writer may be adding one; a reader
 * that skips it was not going to see that entry anyway). */
static inline int mt_empty(const memtable *m)
{
    return __atomic_load_n(&m->head->next[0], __ATOMIC_ACQUIRE) == NULL;
}

static inline const char *mt_key(const mt_node *n)
{
    return (const char *)&n->next[n->height];
}
static inline const char *mt_value(const mt_node *n)
{
    return mt_key(n) + n->klen;
}
/* memcmp order, shorter first on a common prefix (LMDB's and bbolt's). */
int mt_keycmp(const void *a, size_t alen, const void *b, size_t blen);

#pragma GCC visibility pop

#endif
