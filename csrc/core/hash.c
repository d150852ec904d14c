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

static int slice_cmp(bk_slice a, bk_slice b)
{
    return mt_keycmp(a.data, a.len, b.data, b.len);
}

static int pair_cmp(const bk_slice *a, const bk_slice *b)
{
    int c = slice_cmp(a[0], b[0]);
    return c ? c : slice_cmp(a[1], b[1]);
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

static int hash_gen(bk_backend *be, gen *g, const ignore_set *set, uint32_t *out)
{
    MDB_cursor *names, *c;
    MDB_val name, k, v;
    uint32_t crc = 0;
    int rc = mdb_cursor_open(g->txn, 1 /* MAIN_DBI */, &names);
    if (rc)
        return rc;
    for (rc = mdb_cursor_get(names, &name, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(names, &name, &v, MDB_NEXT)) {
        char buf[512];
        bk_slice bname;
        bk_bucket *b = bk_bucket_by_dbname(be, name.mv_data, name.mv_size, &bname, buf);
        if (!b || b->id >= g->ndbis || !g->dbis[b->id])
            continue;   /* not a bucket of ours */
        crc = bk_crc32c(crc, bname.data, bname.len);
        if ((rc = mdb_cursor_open(g->txn, g->dbis[b->id], &c)))
            break;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            bk_slice key = { k.mv_data, k.mv_size };
            if (set->n && ignored(set, bname, key))
                continue;
            crc = bk_crc32c(crc, k.mv_data, k.mv_size);
            crc = bk_crc32c(crc, v.mv_data, v.mv_size);
        }
        mdb_cursor_close(c);
        if (rc != MDB_NOTFOUND)
            break;
    }
    mdb_cursor_close(names);
    *out = crc;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

typedef struct hash_job {
    const ignore_set *set;
    uint32_t *out;
} hash_job;

static int hash_visit(bk_backend *be, gen *g, void *ctx)
{
    hash_job *job = ctx;
    return hash_gen(be, g, job->set, job->out);
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
    hash_job job = { &set, out };
    int rc = bk_visit_committed(be, hash_visit, &job, "hash", err);
    free(set.order);
    return rc;
}
