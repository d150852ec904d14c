/* bucket.c: the bucket registry (names to ids and LMDB names; entries never
 * move or die while the backend lives), the checks on names and keys, and
 * the one walk over the buckets an LMDB txn holds (bk_each_bucket), which
 * reopening, hash, defrag and snapshots share. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define MAIN_DBI 1   /* LMDB's main database: the bucket names */

static uint32_t name_hash(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    while (len--)
        h = (h ^ *s++) * 16777619u;
    return h;
}

/* LMDB names databases with C strings; bucket names may hold any byte. The
 * main database's keys are the names escaped so: 0x00 -> 01 01, 0x01 ->
 * 01 02, other bytes as they are. The escape keeps byte order, so buckets
 * still iterate in the order of their names (hash and defrag rely on it). */
size_t bk_dbname_len(const void *name, size_t len)
{
    const unsigned char *p = name;
    size_t n = len;
    for (size_t i = 0; i < len; i++)
        n += p[i] <= 1;
    return n;
}

static void dbname_encode(const unsigned char *name, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        if (name[i] <= 1) {
            *out++ = 1;
            *out++ = (char)(name[i] + 1);
        } else {
            *out++ = (char)name[i];
        }
    }
    *out = 0;
}

bk_bucket *bk_bucket_by_dbname(bk_backend *be, const void *dbname, size_t len,
                               bk_slice *name, char buf[512])
{
    const unsigned char *p = dbname;
    size_t n = 0;
    name->data = NULL;
    name->len = 0;
    for (size_t i = 0; i < len; i++, n++) {
        if (n == 512 || p[i] == 0)
            return NULL;
        if (p[i] == 1) {
            if (++i == len || (p[i] != 1 && p[i] != 2))
                return NULL;   /* not a name we could have made */
            buf[n] = (char)(p[i] - 1);
        } else {
            buf[n] = (char)p[i];
        }
    }
    name->data = buf;
    name->len = n;
    return n ? bk_bucket_find(be, buf, n) : NULL;
}

/* Lock-free: slots and entries are published with release stores. */
bk_bucket *bk_bucket_find(bk_backend *be, const void *name, size_t len)
{
    for (uint32_t i = name_hash(name, len);; i++) {
        uint32_t id = __atomic_load_n(&be->slots[i % BK_HASH_SLOTS], __ATOMIC_ACQUIRE);
        if (!id)
            return NULL;
        bk_bucket *b = be->buckets[id];
        if (b->len == len && !memcmp(b->name, name, len))
            return b;
    }
}

bk_bucket *bk_bucket_register(bk_backend *be, const void *name, size_t len,
                           bk_error *err)
{
    pthread_mutex_lock(&be->reg_mu);
    bk_bucket *b = bk_bucket_find(be, name, len);
    if (b)
        goto out;
    if (be->nbuckets >= BK_MAX_BUCKETS) {
        bk_fail(err, BK_EARG, "too many buckets (the limit is %d)", BK_MAX_BUCKETS);
        goto out;
    }
    b = calloc(1, sizeof *b);
    if (b && (!(b->name = malloc(len ? len : 1)) ||
              !(b->dbname = malloc(bk_dbname_len(name, len) + 1)))) {
        free(b->name);
        free(b);
        b = NULL;
    }
    if (!b) {
        bk_fail(err, BK_EIO, "out of memory");
        goto out;
    }
    memcpy(b->name, name, len);
    dbname_encode(name, len, b->dbname);
    b->len = len;
    b->id = be->nbuckets + 1;
    be->buckets[b->id] = b;
    uint32_t i = name_hash(name, len);
    while (be->slots[i % BK_HASH_SLOTS])
        i++;
    __atomic_store_n(&be->slots[i % BK_HASH_SLOTS], b->id, __ATOMIC_RELEASE);
    __atomic_store_n(&be->nbuckets, b->id, __ATOMIC_RELEASE);
out:
    pthread_mutex_unlock(&be->reg_mu);
    return b;
}

int bk_check_key(const bk_backend *be, const char *what, bk_slice s,
                 bk_error *err)
{
    if (s.len == 0)
        return bk_fail(err, BK_EARG, "%s must not be empty", what);
    if (s.len > be->maxkey)
        return bk_fail(err, BK_EARG, "%s is too long (%zu bytes; the limit is %zu bytes)",
                       what, s.len, be->maxkey);
    return BK_OK;
}

int bk_each_bucket(bk_backend *be, MDB_txn *txn, bk_bucket_fn fn, void *ctx)
{
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, MAIN_DBI, &c);
    if (rc)
        return rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        char buf[512];
        bk_slice name;
        bk_bucket *b = bk_bucket_by_dbname(be, k.mv_data, k.mv_size, &name, buf);
        if (name.len && (rc = fn(ctx, b, name)))   /* else not a name we could have made */
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}
