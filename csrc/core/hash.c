/* hash.c: etcd's Backend.Hash: CRC-32C over each bucket name in byte order
 * (the main database holds only bucket names, so its cursor gives them in
 * that order), then each of its keys and values, minus the ignored keys. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct ignore_set {
    const bk_slice *pairs;   /* 2 per entry: bucket, key */
    size_t *order;           /* sorted indexes */
    size_t n;
} ignore_set;

static int pair_cmp(const bk_slice *a, const bk_slice *b)
{
    int c = bk_slice_cmp(a[0], b[0]);
    return c ? c : bk_slice_cmp(a[1], b[1]);
}

/* Insertion sort: ignore lists are short (etcd's has one entry). */
static void ignores_sort(ignore_set *set)
{
    for (size_t i = 1; i < set->n; i++)
        for (size_t j = i; j > 0 &&
             pair_cmp(set->pairs + 2 * set->order[j], set->pairs + 2 * set->order[j - 1]) < 0; j--) {
            size_t t = set->order[j];
            set->order[j] = set->order[j - 1];
            set->order[j - 1] = t;
        }
}

static int ignored(const ignore_set *set, bk_slice bucket, bk_slice key)
{
    bk_slice want[2] = { bucket, key };
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = pair_cmp(set->pairs + 2 * set->order[mid], want);
        if (!c)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

typedef struct hash_job {
    const ignore_set *set;
    const gen *g;
    uint32_t crc;
} hash_job;

static int hash_bucket(void *ctx, bk_bucket *b, bk_slice name)
{
    hash_job *job = ctx;
    const gen *g = job->g;
    MDB_cursor *c;
    MDB_val k, v;
    if (!b || b->id >= g->ndbis || !g->dbis[b->id])
        return 0;   /* not a bucket of ours */
    job->crc = bk_crc32c(job->crc, name.data, name.len);
    int rc = mdb_cursor_open(g->txn, g->dbis[b->id], &c);
    if (rc)
        return rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        bk_slice key = { k.mv_data, k.mv_size };
        if (job->set->n && ignored(job->set, name, key))
            continue;
        job->crc = bk_crc32c(job->crc, k.mv_data, k.mv_size);
        job->crc = bk_crc32c(job->crc, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int hash_visit(bk_backend *be, gen *g, void *ctx)
{
    hash_job *job = ctx;
    job->g = g;
    return bk_each_bucket(be, g->txn, hash_bucket, job);
}

int bk_hash(bk_backend *be, const bk_slice *ignores, size_t n,
            uint32_t *out, bk_error *err)
{
    ignore_set set = { ignores, NULL, n };
    if (n && !(set.order = malloc(n * sizeof *set.order)))
        return bk_fail(err, BK_EIO, "out of memory");
    for (size_t i = 0; i < n; i++)
        set.order[i] = i;
    ignores_sort(&set);
    hash_job job = { &set, NULL, 0 };
    int rc = bk_visit_committed(be, hash_visit, &job, "hash", err);
    if (!rc)
        *out = job.crc;
    free(set.order);
    return rc;
}
