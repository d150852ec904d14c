/* read.c: reads merge the memtables of a version (newest first) with its
 * LMDB read txn, seeing only entries with seq <= the reader's sequence:
 * key order, no duplicates, deletes and dropped buckets honoured, any limit
 * on any bucket. Callers hold maplock for reading. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct src {
    mt_node *n;        /* memtable: start of the current key's versions */
    mt_node *vis;      /* the visible version of the current key */
    MDB_cursor *cur;   /* LMDB */
    MDB_val k, v;
    int valid;
} src;

typedef struct scan {
    uint32_t bucket;
    uint64_t seq, floor;
    int nsrc;
    src s[];
} scan;

static int same_key(const mt_node *a, const mt_node *b)
{
    return a->bucket == b->bucket && !mt_keycmp(mt_key(a), a->klen, mt_key(b), b->klen);
}

/* Move a memtable source to the first key at or after s->n that has a
 * version visible at sc->seq. */
static void mt_settle(const scan *sc, src *s)
{
    mt_node *n = s->n;
    while (n && n->bucket == sc->bucket) {
        if (n->klen == 0) {   /* bucket events */
            n = mt_next(n);
            continue;
        }
        mt_node *first = n, *vis = NULL;
        for (; n && same_key(n, first); n = mt_next(n))
            if (!vis && n->seq <= sc->seq)
                vis = n;
        if (vis) {
            s->n = first;
            s->vis = vis;
            s->valid = 1;
            return;
        }
    }
    s->valid = 0;
}

static void mt_advance(const scan *sc, src *s)
{
    mt_node *n = s->vis;
    while (n && same_key(n, s->vis))
        n = mt_next(n);
    s->n = n;
    mt_settle(sc, s);
}

static int db_step(src *s, MDB_cursor_op op)
{
    int rc = mdb_cursor_get(s->cur, &s->k, &s->v, op);
    s->valid = rc == 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The bucket's state at seq in memtables 0..nmt-1: returns whether it
 * exists; *floor is the seq of the newest visible drop (0 if none) and
 * *last_mt the oldest memtable that can hold its live entries. */
static int bucket_state(const version *v, uint32_t id, uint64_t seq,
                        uint64_t *floor, int *last_mt)
{
    int state = -1;
    *floor = 0;
    *last_mt = v->nmt - 1;
    for (int i = 0; i < v->nmt; i++)
        for (mt_node *n = mt_empty(v->mts[i]) ? NULL : mt_seek(v->mts[i], id, "", 0, UINT64_MAX);
             n && n->bucket == id && n->klen == 0; n = mt_next(n)) {
            if (n->seq > seq)
                continue;
            if (state < 0)
                state = n->type;
            if (n->type == MT_DROP) {
                *floor = n->seq;
                *last_mt = i;
                return state == MT_CREATE;
            }
        }
    if (state >= 0)
        return state == MT_CREATE;
    return id < v->g->ndbis && v->g->dbis[id] != 0;
}

static int in_range(const void *k, size_t klen, const bk_slice *to)
{
    return mt_keycmp(k, klen, to->data, to->len) < 0;
}

/* A single key: the newest visible version wins, then LMDB. */
static int read_one(const version *v, uint32_t id, uint64_t seq, uint64_t floor,
                    int last_mt, bk_slice key, bk_result *out, bk_error *err)
{
    for (int i = 0; i <= last_mt; i++) {
        if (mt_empty(v->mts[i]))
            continue;
        for (mt_node *n = mt_seek(v->mts[i], id, key.data, key.len, UINT64_MAX);
             n && n->bucket == id && !mt_keycmp(mt_key(n), n->klen, key.data, key.len);
             n = mt_next(n)) {
            if (n->seq > seq)
                continue;
            if (n->seq < floor || n->type == MT_DEL)
                return BK_OK;
            if (bk_result_append(out, mt_key(n), n->klen, mt_value(n), n->vlen))
                return bk_fail(err, BK_EIO, "out of memory");
            return BK_OK;
        }
    }
    if (floor || id >= v->g->ndbis || !v->g->dbis[id])
        return BK_OK;
    MDB_val k = { key.len, BK_UNCONST(key.data) }, val;
    pthread_mutex_lock(&v->g->mu);
    int rc = mdb_get(v->g->txn, v->g->dbis[id], &k, &val);
    if (rc == 0 && bk_result_append(out, key.data, key.len, val.mv_data, val.mv_size))
        rc = -1;
    pthread_mutex_unlock(&v->g->mu);
    if (rc == -1)
        return bk_fail(err, BK_EIO, "out of memory");
    if (rc && rc != MDB_NOTFOUND)
        return bk_mdb_fail(err, rc, "read");
    return BK_OK;
}

static int read_range(const version *v, scan *sc, int use_db, bk_slice from,
                      const bk_slice *to, int64_t limit, bk_result *out,
                      bk_error *err)
{
    int rc = 0, nmt = sc->nsrc - use_db;
    for (int i = 0; i < nmt; i++) {
        sc->s[i].n = mt_seek(v->mts[i], sc->bucket, from.data, from.len, UINT64_MAX);
        mt_settle(sc, &sc->s[i]);
    }
    src *db = use_db ? &sc->s[nmt] : NULL;
    if (db) {
        pthread_mutex_lock(&v->g->mu);
        rc = mdb_cursor_open(v->g->txn, v->g->dbis[sc->bucket], &db->cur);
        if (!rc) {
            db->k.mv_data = BK_UNCONST(from.data);
            db->k.mv_size = from.len;
            rc = from.len ? db_step(db, MDB_SET_RANGE) : db_step(db, MDB_FIRST);
        }
    }
    while (!rc && (limit <= 0 || (int64_t)out->count < limit)) {
        /* The smallest current key; on a tie the newest source wins. */
        int win = -1;
        const void *wk = NULL;
        size_t wlen = 0;
        for (int i = 0; i < sc->nsrc; i++) {
            src *s = &sc->s[i];
            if (!s->valid)
                continue;
            const void *k = s->cur ? s->k.mv_data : mt_key(s->vis);
            size_t klen = s->cur ? s->k.mv_size : s->vis->klen;
            if (win < 0 || mt_keycmp(k, klen, wk, wlen) < 0) {
                win = i;
                wk = k;
                wlen = klen;
            }
        }
        if (win < 0 || (to && !in_range(wk, wlen, to)))
            break;
        src *w = &sc->s[win];
        int live = w->cur || (w->vis->type == MT_PUT && w->vis->seq >= sc->floor);
        if (live && bk_result_append(out, wk, wlen,
                                     w->cur ? w->v.mv_data : mt_value(w->vis),
                                     w->cur ? w->v.mv_size : w->vis->vlen)) {
            rc = -1;
            break;
        }
        /* Advance every source at this key. wk stays readable after its
         * source moves: arena nodes and the txn's pages never change. */
        for (int i = win; i < sc->nsrc && !rc; i++) {
            src *s = &sc->s[i];
            if (!s->valid)
                continue;
            const void *k = s->cur ? s->k.mv_data : mt_key(s->vis);
            size_t klen = s->cur ? s->k.mv_size : s->vis->klen;
            if (i != win && mt_keycmp(k, klen, wk, wlen))
                continue;
            if (s->cur)
                rc = db_step(s, MDB_NEXT);
            else
                mt_advance(sc, s);
        }
    }
    if (db) {
        if (db->cur)
            mdb_cursor_close(db->cur);
        pthread_mutex_unlock(&v->g->mu);
    }
    if (rc == -1)
        return bk_fail(err, BK_EIO, "out of memory");
    if (rc)
        return bk_mdb_fail(err, rc, "range");
    return BK_OK;
}

int bk_read(bk_backend *be, version *v, uint64_t seq, bk_slice bucket,
            bk_slice from, const bk_slice *to, int64_t limit,
            bk_result *out, bk_error *err)
{
    bk_result_clear(out);
    if (bucket.len == 0)
        return bk_fail(err, BK_EARG, "bucket name must not be empty");
    if (!to && from.len == 0)
        return bk_fail(err, BK_EARG, "key must not be empty");
    if (from.len > be->maxkey && !to)
        return bk_fail(err, BK_EARG, "key is too long (%zu bytes; the limit is %zu bytes)",
                       from.len, be->maxkey);
    bk_bucket *b = bk_bucket_find(be, bucket.data, bucket.len);
    uint64_t floor;
    int last_mt;
    if (!b || !bucket_state(v, b->id, seq, &floor, &last_mt))
        return BK_OK;   /* a missing bucket reads as empty */
    if (!to)
        return read_one(v, b->id, seq, floor, last_mt, from, out, err);
    if (mt_keycmp(from.data, from.len, to->data, to->len) >= 0)
        return BK_OK;
    int use_db = !floor && b->id < v->g->ndbis && v->g->dbis[b->id] != 0;
    int nsrc = last_mt + 1 + use_db;
    scan *sc = calloc(1, sizeof *sc + (size_t)nsrc * sizeof(src));
    if (!sc)
        return bk_fail(err, BK_EIO, "out of memory");
    sc->bucket = b->id;
    sc->seq = seq;
    sc->floor = floor;
    sc->nsrc = nsrc;
    int rc = read_range(v, sc, use_db, from, to, limit, out, err);
    free(sc);
    return rc;
}

static int bucket_order(const void *a, const void *b)
{
    const bk_bucket *x = *(bk_bucket *const *)a, *y = *(bk_bucket *const *)b;
    return mt_keycmp(x->name, x->len, y->name, y->len);
}

int bk_list_buckets(bk_backend *be, const version *v, uint64_t seq, bk_result *out,
                    bk_error *err)
{
    bk_result_clear(out);
    uint32_t n = __atomic_load_n(&be->nbuckets, __ATOMIC_ACQUIRE), found = 0;
    bk_bucket **live = malloc((n ? n : 1) * sizeof *live);
    if (!live)
        return bk_fail(err, BK_EIO, "out of memory");
    for (uint32_t id = 1; id <= n; id++) {
        uint64_t floor;
        int last_mt;
        if (bucket_state(v, id, seq, &floor, &last_mt))
            live[found++] = be->buckets[id];
    }
    qsort(live, found, sizeof *live, bucket_order);
    int rc = BK_OK;
    for (uint32_t i = 0; i < found && !rc; i++)
        if (bk_result_append(out, live[i]->name, live[i]->len, "", 0))
            rc = bk_fail(err, BK_EIO, "out of memory");
    free(live);
    return rc;
}

/* ---- views ---- */

int bk_view_open(bk_backend *be, bk_view **out, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    int rc;
    if (be->cfg.readonly && (rc = bk_readonly_refresh(be, err)))
        return rc;
    bk_view *v = calloc(1, sizeof *v);
    if (!v)
        return bk_fail(err, BK_EIO, "out of memory");
    /* maplock: close and defrag see the view registered, or have swapped
     * files before it looks. ver_mu: one instant for the version and the
     * sequence published with it. */
    pthread_rwlock_rdlock(&be->maplock);
    pthread_mutex_lock(&be->ver_mu);
    version *cur = be->cur;   /* v->v may be invalidated once we unlock */
    if (cur)
        __atomic_add_fetch(&cur->refs, 1, __ATOMIC_RELAXED);
    v->v = cur;
    v->seq = __atomic_load_n(&be->visible_seq, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&be->ver_mu);
    if (cur) {
        v->be = be;
        bk_child_attach(be, &v->link, 0);
    }
    pthread_rwlock_unlock(&be->maplock);
    if (!cur) {
        free(v);
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    }
    *out = v;
    return BK_OK;
}

int bk_view_check(bk_view *v, bk_error *err)
{
    int code = __atomic_load_n(&v->invalid, __ATOMIC_ACQUIRE);
    if (code == BK_EINVALID)
        return bk_fail(err, BK_EINVALID, "read tx was invalidated by defrag "
                       "(or by reopening the database after a failed commit)");
    if (code)
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    return BK_OK;
}

int bk_view_range(bk_view *v, bk_slice bucket, bk_slice from,
                  const bk_slice *to, int64_t limit, bk_result *out,
                  bk_error *err)
{
    bk_backend *be = v->be;
    pthread_rwlock_rdlock(&be->maplock);
    int rc = bk_view_check(v, err);
    if (!rc)
        rc = bk_read(be, v->v, v->seq, bucket, from, to, limit, out, err);
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

int bk_view_buckets(bk_view *v, bk_result *out, bk_error *err)
{
    bk_backend *be = v->be;
    pthread_rwlock_rdlock(&be->maplock);
    int rc = bk_view_check(v, err);
    if (!rc)
        rc = bk_list_buckets(be, v->v, v->seq, out, err);
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

/* Caller holds views_mu. */
void bk_view_invalidate(bk_view *v, int code)
{
    bk_version_unref(v->v);
    v->v = NULL;
    __atomic_store_n(&v->invalid, code, __ATOMIC_RELEASE);
}

void bk_view_close(bk_view *v)
{
    if (!v)
        return;
    bk_backend *be = v->be;
    pthread_rwlock_rdlock(&be->maplock);   /* the txn ends before any swap */
    bk_child_detach(be, &v->link);
    bk_version_unref(v->v);
    pthread_rwlock_unlock(&be->maplock);
    free(v);
    bk_free(be);
}
