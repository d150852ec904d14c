/* memtable_test.c: the tests of memtable.c: the skiplist, unlinking and the
 * arena pool. */
#include "core_test.h"

static int node_is(const mt_node *n, uint32_t bucket, const char *key, uint64_t seq)
{
    return n && n->bucket == bucket && n->seq == seq && n->klen == strlen(key) &&
           !memcmp(mt_key(n), key, n->klen);
}

static void test_memtable(void)
{
    CHECK(mt_keycmp("a", 1, "a", 1) == 0);
    CHECK(mt_keycmp("a", 1, "ab", 2) < 0);
    CHECK(mt_keycmp("ab", 2, "a", 1) > 0);
    CHECK(mt_keycmp("", 0, "a", 1) < 0);
    CHECK(mt_keycmp("", 0, "", 0) == 0);
    CHECK(mt_keycmp("b", 1, "ab", 2) > 0);
    CHECK(mt_keycmp("\xff", 1, "\x01", 1) > 0);
    CHECK(mt_keycmp("a\0", 2, "a", 1) > 0);

    memtable *m = mt_new(7, NULL);
    if (!CHECK(m != NULL))
        return;
    CHECK(m->id == 7 && mt_first(m) == NULL);
    CHECK(mt_seek(m, 1, "a", 1, UINT64_MAX) == NULL);
    CHECK(mt_insert(m, 5, 2, MT_PUT, "a", 1, "x", 1));
    CHECK(mt_insert(m, 1, 1, MT_PUT, "b", 1, "b1", 2));
    CHECK(mt_insert(m, 2, 1, MT_PUT, "a", 1, "a2", 2));
    CHECK(mt_insert(m, 3, 1, MT_PUT, "ab", 2, "ab3", 3));
    CHECK(mt_insert(m, 9, 1, MT_DEL, "a", 1, "", 0));
    CHECK(mt_insert(m, 4, 1, MT_CREATE, "", 0, "", 0));
    CHECK(mt_insert(m, 6, 1, MT_PUT, "a\0", 2, "z", 1));
    CHECK(mt_insert(m, 8, 1, MT_PUT, "a", 1, "a8", 2));
    CHECK(mt_insert(m, 10, 1, MT_DROP, "", 0, "", 0));
    CHECK(m->writes == 9);
    CHECK(m->bytes == 1 + 1 + 1 + 2 + 1 + 2 + 2 + 3 + 1 + 2 + 1 + 1 + 2);

    /* bucket, then key (shorter prefix first), then seq descending */
    mt_node *n = mt_first(m);
    CHECK(node_is(n, 1, "", 10) && n->type == MT_DROP);
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "", 4) && n->type == MT_CREATE);
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "a", 9) && n->type == MT_DEL && n->vlen == 0);
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "a", 8) && n->vlen == 2 && !memcmp(mt_value(n), "a8", 2));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "a", 2) && !memcmp(mt_value(n), "a2", 2));
    n = n ? mt_next(n) : NULL;
    CHECK(n && n->bucket == 1 && n->seq == 6 && n->klen == 2 && !memcmp(mt_key(n), "a\0", 2));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "ab", 3) && !memcmp(mt_value(n), "ab3", 3));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 1, "b", 1));
    n = n ? mt_next(n) : NULL;
    CHECK(node_is(n, 2, "a", 5) && n->type == MT_PUT);
    n = n ? mt_next(n) : NULL;
    CHECK(n == NULL);

    /* mt_seek: first node >= (bucket, key, seq) */
    CHECK(node_is(mt_seek(m, 1, "a", 1, UINT64_MAX), 1, "a", 9));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 9), 1, "a", 9));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 8), 1, "a", 8));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 7), 1, "a", 2));
    CHECK(node_is(mt_seek(m, 1, "a", 1, 2), 1, "a", 2));
    n = mt_seek(m, 1, "a", 1, 1);
    CHECK(n && n->seq == 6 && n->klen == 2);
    CHECK(node_is(mt_seek(m, 1, "aa", 2, UINT64_MAX), 1, "ab", 3));
    CHECK(node_is(mt_seek(m, 1, "", 0, UINT64_MAX), 1, "", 10));
    CHECK(node_is(mt_seek(m, 1, "", 0, 5), 1, "", 4));
    CHECK(node_is(mt_seek(m, 1, "", 0, 0), 1, "a", 9));
    CHECK(node_is(mt_seek(m, 1, "c", 1, UINT64_MAX), 2, "a", 5));
    CHECK(node_is(mt_seek(m, 0, "zzz", 3, 0), 1, "", 10));
    CHECK(node_is(mt_seek(m, 2, "", 0, UINT64_MAX), 2, "a", 5));
    CHECK(mt_seek(m, 2, "a", 1, 4) == NULL);
    CHECK(mt_seek(m, 3, "", 0, UINT64_MAX) == NULL);
    mt_ref(m);
    CHECK(m->refs == 2);
    mt_unref(m);
    mt_unref(m);

    /* many random inserts, large values among them */
    m = mt_new(1, NULL);
    if (!CHECK(m != NULL))
        return;
    int count = t_quick() ? 3000 : 20000;
    size_t bigsz = 200 * 1024;
    char *big = malloc(bigsz);
    for (size_t i = 0; i < bigsz; i++)
        big[i] = (char)(i % 253);
    for (int i = 1; i <= count; i++) {
        unsigned char k[8];
        size_t klen = rand_key(k);
        uint32_t bucket = 1 + (uint32_t)(rnd() % 3);
        uint64_t seq = (uint64_t)i;
        if (i % 5000 == 0)
            CHECK(mt_insert(m, seq, bucket, MT_PUT, k, klen, big, bigsz));
        else
            CHECK(mt_insert(m, seq, bucket, (uint8_t)(rnd() % 2), k, klen, &seq, sizeof seq));
    }
    CHECK(m->writes == (uint64_t)count);
    CHECK(m->arena_bytes > bigsz * (size_t)(count / 5000));
    int seen = 0, bad = 0;
    mt_node *prev = NULL;
    for (n = mt_first(m); n; prev = n, n = mt_next(n)) {
        seen++;
        if (n->vlen == bigsz)
            bad += memcmp(mt_value(n), big, bigsz) != 0;
        else {
            uint64_t s;
            memcpy(&s, mt_value(n), sizeof s);
            bad += n->vlen != sizeof s || s != n->seq;
        }
        if (prev) {
            int c = prev->bucket != n->bucket ? (prev->bucket < n->bucket ? -1 : 1)
                                              : mt_keycmp(mt_key(prev), prev->klen, mt_key(n), n->klen);
            bad += c > 0 || (c == 0 && prev->seq <= n->seq);
        }
        /* seeking each node's own position finds it */
        if (seen % 7 == 0)
            bad += mt_seek(m, n->bucket, mt_key(n), n->klen, n->seq) != n;
    }
    CHECK(seen == count);
    CHECK(bad == 0);
    free(big);
    mt_unref(m);
}

/* Rollback's unlinking: a random half of the nodes go, in random order; the
 * rest stay linked in order at every level, the tails stay right (ordered
 * inserts take the fast path after them), and a node unlinked still leads
 * on to the nodes after it. */
static void test_memtable_unlink(void)
{
    memtable *m = mt_new(1, NULL);
    if (!CHECK(m != NULL))
        return;
    enum { N = 4000 };
    mt_node **nodes = calloc(N, sizeof *nodes);
    for (int i = 0; i < N; i++) {
        unsigned char k[8];
        size_t klen = rand_key(k);
        uint64_t seq = (uint64_t)i + 1;
        nodes[i] = mt_insert(m, seq, 1 + (uint32_t)(rnd() % 2), MT_PUT, k, klen, &seq, sizeof seq);
    }
    int dropped = 0;
    uint64_t dropped_bytes = 0;
    for (int i = N - 1; i > 0; i--) {   /* shuffle */
        int j = (int)(rnd() % (uint32_t)(i + 1));
        mt_node *t = nodes[i];
        nodes[i] = nodes[j];
        nodes[j] = t;
    }
    for (int i = 0; i < N / 2; i++) {
        mt_node *next = mt_next(nodes[i]);
        mt_unlink(m, nodes[i]);
        CHECK(mt_next(nodes[i]) == next);   /* a reader standing on it goes on */
        nodes[i]->type = 0xEE;              /* marks it unlinked */
        dropped++;
        dropped_bytes += nodes[i]->klen + nodes[i]->vlen;
    }
    CHECK(m->writes == (uint64_t)(N - dropped) && m->dropped == (uint64_t)dropped);
    CHECK(m->dropped_bytes == dropped_bytes);
    /* in order after the last node: the tails serve the fast path */
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t seq = N + 1 + i;
        unsigned char k[9] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, (unsigned char)i };
        CHECK(mt_insert(m, seq, 9, MT_PUT, k, sizeof k, &seq, sizeof seq));
    }
    int bad = 0;
    for (int level = 0; level < MT_MAX_HEIGHT; level++) {
        size_t count = 0;
        mt_node *prev = NULL;
        for (mt_node *n = m->head->next[level]; n; prev = n, n = n->next[level]) {
            bad += n->type == 0xEE;
            if (prev)
                bad += prev->bucket > n->bucket ||
                       (prev->bucket == n->bucket &&
                        mt_keycmp(mt_key(prev), prev->klen, mt_key(n), n->klen) > 0);
            count++;
        }
        if (level == 0)
            CHECK(count == (size_t)(N - dropped + 100));
    }
    CHECK(bad == 0);
    for (int i = N / 2; i < N; i++)   /* every node kept is found */
        bad += mt_seek(m, nodes[i]->bucket, mt_key(nodes[i]), nodes[i]->klen, nodes[i]->seq) != nodes[i];
    CHECK(bad == 0);
    free(nodes);
    mt_unref(m);
}

/* Whether every page inside [p, p + len) is in memory. */
static int resident(const void *p, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(page - 1);
    unsigned char vec[256];
    if (!CHECK(hi > lo && (hi - lo) / page <= sizeof vec) ||
        !CHECK(mincore((void *)lo, hi - lo, vec) == 0))
        return 0;
    for (uintptr_t i = 0; i < (hi - lo) / page; i++)
        if (!(vec[i] & 1))
            return 0;
    return 1;
}

/* Arena blocks are recycled: a memtable's standard blocks go to its pool,
 * up to MT_POOL_MAX of them, and a new memtable's come from there (the
 * memtable itself in its first one); a large entry's own block is
 * unmapped. An empty pool is refilled with MT_REFILL fresh blocks at once,
 * their pages already in memory. */
static void test_memtable_pool(void)
{
    enum { BLOCK = 256 * 1024 };
    mt_pool pool;
    mt_pool_init(&pool);
    memtable *m = mt_new(1, &pool);
    CHECK(pool.n == MT_REFILL - 1);
    CHECK(pool.free && resident(pool.free, BLOCK));
    static char val[1000], big[BLOCK / 2];
    uint64_t seq = 0;
    while (m && m->arena_bytes < (uint64_t)(MT_POOL_MAX + 8) * BLOCK) {
        seq++;
        if (!CHECK(mt_insert(m, seq, 1, MT_PUT, &seq, sizeof seq, val, sizeof val)))
            break;
    }
    mt_unref(m);
    CHECK(pool.n == MT_POOL_MAX);
    mt_block *recycled = pool.free;
    m = mt_new(2, &pool);
    if (CHECK(m != NULL)) {
        CHECK(pool.n == MT_POOL_MAX - 1 && m->blocks == recycled &&
              (void *)m > (void *)recycled && (char *)m < (char *)recycled + BLOCK);
        CHECK(mt_insert(m, 1, 1, MT_PUT, "k", 1, big, sizeof big));
        CHECK(pool.n == MT_POOL_MAX - 1);   /* a block of its own, mapped for it */
        mt_unref(m);
    }
    CHECK(pool.n == MT_POOL_MAX);
    mt_pool_destroy(&pool);

    /* Topped up off the writer: 2 MiB a call below MT_POOL_LOW, every page
     * already in memory; nothing at or above it. */
    enum { CHUNK_BLOCKS = 2 * 1024 * 1024 / BLOCK };
    mt_pool_init(&pool);
    int calls = 0;
    for (int before = -1; pool.n != before; calls++) {
        before = pool.n;
        mt_pool_top_up(&pool);
        CHECK(pool.n == before || pool.n == before + CHUNK_BLOCKS);
    }
    int want = (MT_POOL_LOW + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS * CHUNK_BLOCKS;
    CHECK(pool.n == want && calls == want / CHUNK_BLOCKS + 1);
    int resident_blocks = 0;
    for (mt_block *b = pool.free; b; b = *(mt_block **)b)   /* a block begins with its link */
        resident_blocks += resident(b, BLOCK);
    CHECK(resident_blocks == pool.n);
    m = mt_new(3, &pool);
    if (CHECK(m != NULL)) {
        CHECK(pool.n == want - 1);
        mt_unref(m);
    }
    mt_pool_destroy(&pool);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_memtable();
    test_memtable_unlink();
    test_memtable_pool();
    return t_done();
}
