/* read.c: every read through the batch tx or a view, and the results they
 * fill. Reads merge the memtables of a version (newest first) with its
 * LMDB read txn, seeing only entries with seq <= the reader's sequence:
 * key order, no duplicates, deletes and dropped buckets honoured, any limit
 * on any bucket. Callers hold maplock for reading. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- results ---- */

void bk_result_init(bk_result *r)
{
    memset(r, 0, sizeof *r);
}

void bk_result_clear(bk_result *r)
{
    r->count = 0;
    r->used = 0;
}

void bk_result_free(bk_result *r)
{
    free(r->offs);
    free(r->data);
    bk_result_init(r);
}

int bk_result_append(bk_result *r, const void *k, size_t klen,
                     const void *v, size_t vlen)
{
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        size_t *offs = realloc(r->offs, cap * 4 * sizeof *offs);
        if (!offs)
            return -1;
        r->offs = offs;
        r->cap = cap;
    }
    if (r->size - r->used < klen + vlen) {
        size_t size = r->size ? r->size : 4096;
        while (size - r->used < klen + vlen)
            size *= 2;
        char *data = realloc(r->data, size);
        if (!data)
            return -1;
        r->data = data;
        r->size = size;
    }
    size_t *o = r->offs + r->count * 4;
    o[0] = r->used;
    o[1] = klen;
    if (klen)
        memcpy(r->data + r->used, k, klen);
    r->used += klen;
    o[2] = r->used;
    o[3] = vlen;
    if (vlen)
        memcpy(r->data + r->used, v, vlen);
    r->used += vlen;
    r->count++;
    return 0;
}

bk_slice bk_result_key(const bk_result *r, size_t i)
{
    bk_slice s = { r->data + r->offs[i * 4], r->offs[i * 4 + 1] };
    return s;
}

bk_slice bk_result_value(const bk_result *r, size_t i)
{
    bk_slice s = { r->data + r->offs[i * 4 + 2], r->offs[i * 4 + 3] };
    return s;
}

/* ---- merged reads ---- */

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
    src *s;
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

/* The key a source stands on. */
static const void *src_key(const src *s, size_t *len)
{
    *len = s->cur ? s->k.mv_size : s->vis->klen;
    return s->cur ? s->k.mv_data : mt_key(s->vis);
}

static int src_at(const src *s, bk_slice key)
{
    size_t len;
    const void *k = src_key(s, &len);
    return !mt_keycmp(k, len, key.data, key.len);
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

static int has_room(const bk_query *q, const bk_result *out)
{
    return q->limit <= 0 || (int64_t)out->count < q->limit;
}

/* The rest of a range once only LMDB has entries left (a scan of
 * committed data): no merging. 0, -1 (no memory) or the LMDB code. */
static int read_db(src *db, const bk_query *q, bk_result *out)
{
    int rc = 0;
    while (!rc && db->valid && has_room(q, out)) {
        if (q->to && mt_keycmp(db->k.mv_data, db->k.mv_size, q->to->data, q->to->len) >= 0)
            break;
        if (bk_result_append(out, db->k.mv_data, db->k.mv_size, db->v.mv_data, db->v.mv_size))
            return -1;
        rc = db_step(db, MDB_NEXT);
    }
    return rc;
}

static int read_range(const version *v, scan *sc, int use_db, const bk_query *q,
                      bk_result *out, bk_error *err)
{
    int rc = 0, nmt = sc->nsrc - use_db, mt_left = 0;
    bk_slice from = q->from;
    for (int i = 0; i < nmt; i++) {
        src *s = &sc->s[i];
        s->n = mt_seek(v->mts[i], sc->bucket, from.data, from.len, UINT64_MAX);
        mt_settle(sc, s);
        if (q->after && s->valid && src_at(s, from))
            mt_advance(sc, s);
        mt_left += s->valid;
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
        if (!rc && q->after && db->valid && src_at(db, from))
            rc = db_step(db, MDB_NEXT);
    }
    while (!rc && has_room(q, out)) {
        if (!mt_left) {
            rc = db ? read_db(db, q, out) : 0;
            break;
        }
        /* The smallest current key; on a tie the newest source wins. */
        int win = -1;
        const void *wk = NULL;
        size_t wlen = 0;
        for (int i = 0; i < sc->nsrc; i++) {
            src *s = &sc->s[i];
            size_t klen;
            const void *k;
            if (!s->valid)
                continue;
            k = src_key(s, &klen);
            if (win < 0 || mt_keycmp(k, klen, wk, wlen) < 0) {
                win = i;
                wk = k;
                wlen = klen;
            }
        }
        if (win < 0 || (q->to && mt_keycmp(wk, wlen, q->to->data, q->to->len) >= 0))
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
        bk_slice at = { wk, wlen };
        for (int i = win; i < sc->nsrc && !rc; i++) {
            src *s = &sc->s[i];
            if (!s->valid || (i != win && !src_at(s, at)))
                continue;
            if (s->cur) {
                rc = db_step(s, MDB_NEXT);
            } else {
                mt_advance(sc, s);
                mt_left -= !s->valid;
            }
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

/* Sources a range merges without allocating: most versions have a few
 * memtables. */
#define SCAN_STACK 8

static int read_query(bk_backend *be, const version *v, uint64_t seq, const bk_query *q,
                      bk_result *out, bk_error *err)
{
    bk_result_clear(out);
    int single = !q->to && !q->open_end;
    if (q->bucket.len == 0)
        return bk_fail(err, BK_EARG, "bucket name must not be empty");
    if (single && q->from.len == 0)
        return bk_fail(err, BK_EARG, "key must not be empty");
    if (single && q->from.len > be->maxkey)
        return bk_fail(err, BK_EARG, "key is too long (%zu bytes; the limit is %zu bytes)",
                       q->from.len, be->maxkey);
    bk_bucket *b = bk_bucket_find(be, q->bucket.data, q->bucket.len);
    uint64_t floor;
    int last_mt;
    if (!b || !bucket_state(v, b->id, seq, &floor, &last_mt))
        return BK_OK;   /* a missing bucket reads as empty */
    if (single)
        return read_one(v, b->id, seq, floor, last_mt, q->from, out, err);
    if (q->to && mt_keycmp(q->from.data, q->from.len, q->to->data, q->to->len) >= 0)
        return BK_OK;
    int use_db = !floor && b->id < v->g->ndbis && v->g->dbis[b->id] != 0;
    src stack[SCAN_STACK];
    scan sc = { b->id, seq, floor, last_mt + 1 + use_db, stack };
    if (sc.nsrc > SCAN_STACK && !(sc.s = malloc((size_t)sc.nsrc * sizeof *sc.s)))
        return bk_fail(err, BK_EIO, "out of memory");
    memset(sc.s, 0, (size_t)sc.nsrc * sizeof *sc.s);
    int rc = read_range(v, &sc, use_db, q, out, err);
    if (sc.s != stack)
        free(sc.s);
    return rc;
}

static int bucket_order(const void *a, const void *b)
{
    const bk_bucket *x = *(bk_bucket *const *)a, *y = *(bk_bucket *const *)b;
    return mt_keycmp(x->name, x->len, y->name, y->len);
}

static int list_buckets(bk_backend *be, const version *v, uint64_t seq, bk_result *out,
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

/* A query, or with q NULL the list of buckets. */
static int read_any(bk_backend *be, const version *v, uint64_t seq, const bk_query *q,
                    bk_result *out, bk_error *err)
{
    return q ? read_query(be, v, seq, q, out, err) : list_buckets(be, v, seq, out, err);
}

/* ---- views ---- */

#define VIEW_POOL_MAX 64   /* closed views kept for reuse */

int bk_view_open(bk_backend *be, bk_view **out, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_closed_fail(be, err);
    int rc;
    if (be->cfg.readonly && (rc = bk_readonly_refresh(be, err)))
        return rc;
    /* maplock: close and defrag see the view registered, or have swapped
     * files before it looks. ver_mu: one instant for the version and the
     * sequence published with it. */
    pthread_rwlock_rdlock(&be->maplock);
    pthread_mutex_lock(&be->ver_mu);
    version *cur = be->cur;
    if (cur)
        __atomic_add_fetch(&cur->refs, 1, __ATOMIC_RELAXED);
    uint64_t seq = __atomic_load_n(&be->visible_seq, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&be->ver_mu);
    bk_view *v = NULL;
    if (cur) {
        pthread_mutex_lock(&be->views_mu);
        v = be->view_pool;
        if (v) {
            be->view_pool = (bk_view *)v->link.next;
            be->npool--;
        } else {
            v = malloc(sizeof *v);   /* a leaf lock: nothing calls back */
        }
        if (v) {
            v->be = be;
            v->v = cur;   /* may be invalidated once views_mu is released */
            v->seq = seq;
            v->invalid = 0;
            bk_child_link(be, &v->link, 0);
        }
        pthread_mutex_unlock(&be->views_mu);
        if (!v)
            bk_version_unref(cur);
    }
    pthread_rwlock_unlock(&be->maplock);
    if (!cur)
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    if (!v)
        return bk_fail(err, BK_EIO, "out of memory");
    *out = v;
    return BK_OK;
}

/* Not invalidated (by a close or a reopen); bk_view_check also asks
 * whether v is this process's, which the reads ask before their locks. */
static int view_valid(bk_view *v, bk_error *err)
{
    return bk_child_check(&v->invalid, "read tx", err);
}

int bk_view_check(bk_view *v, bk_error *err)
{
    if (bk_foreign(v->be))
        return bk_closed_fail(v->be, err);
    return view_valid(v, err);
}

/* q NULL lists the buckets. Under maplock the view's version stays (see
 * bk_invalidate_children). */
int bk_view_read(bk_view *v, const bk_query *q, bk_result *out, bk_error *err)
{
    bk_backend *be = v->be;
    if (bk_foreign(be))   /* before its locks */
        return bk_closed_fail(be, err);
    pthread_rwlock_rdlock(&be->maplock);
    int rc = view_valid(v, err);
    if (!rc)
        rc = read_any(be, v->v, v->seq, q, out, err);
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

int bk_view_range(bk_view *v, bk_slice bucket, bk_slice from,
                  const bk_slice *to, int64_t limit, bk_result *out,
                  bk_error *err)
{
    bk_query q = { bucket, from, to, 0, 0, limit };
    return bk_view_read(v, &q, out, err);
}

int bk_view_buckets(bk_view *v, bk_result *out, bk_error *err)
{
    return bk_view_read(v, NULL, out, err);
}

/* Drops a reference to v unless it is the last: whether it did. */
static int version_unref_shared(version *v)
{
    int refs = __atomic_load_n(&v->refs, __ATOMIC_RELAXED);
    while (refs > 1)
        if (__atomic_compare_exchange_n(&v->refs, &refs, refs - 1, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
            return 1;
    return 0;
}

/* Unlists a view (caller holds views_mu) and keeps it for reuse: whether
 * it was kept, else the caller frees it. */
static int view_retire(bk_backend *be, bk_view *v)
{
    bk_child_unlink(be, &v->link);
    v->v = NULL;
    if (be->npool >= VIEW_POOL_MAX)
        return 0;
    v->link.next = (bk_child *)be->view_pool;
    be->view_pool = v;
    be->npool++;
    return 1;
}

void bk_view_close(bk_view *v)
{
    if (!v || bk_foreign(v->be))
        return;
    bk_backend *be = v->be;
    /* A reference that is not the last ends no txn: then no maplock. A
     * listed view's version is only taken by invalidation, under views_mu. */
    pthread_mutex_lock(&be->views_mu);
    int done = !v->v || version_unref_shared(v->v);
    int kept = done && view_retire(be, v);
    pthread_mutex_unlock(&be->views_mu);
    if (!done) {
        pthread_rwlock_rdlock(&be->maplock);   /* the txn ends before any swap */
        pthread_mutex_lock(&be->views_mu);
        version *last = v->v;
        kept = view_retire(be, v);
        pthread_mutex_unlock(&be->views_mu);
        bk_version_unref(last);
        pthread_rwlock_unlock(&be->maplock);
    }
    if (!kept)
        free(v);
    bk_free(be);
}

/* ---- reads through the batch tx ---- */

/* Reads through the batch tx: the current version, all of it; q NULL
 * lists the buckets. */
int bk_tx_read(bk_backend *be, const bk_query *q, bk_result *out, bk_error *err)
{
    int rc = bk_tx_held(be, err);
    if (rc)
        return rc;
    pthread_rwlock_rdlock(&be->maplock);
    version *v = bk_version_get(be);
    rc = read_any(be, v, UINT64_MAX, q, out, err);
    bk_version_unref(v);
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

int bk_tx_range(bk_backend *be, bk_slice bucket, bk_slice from,
                const bk_slice *to, int64_t limit, bk_result *out,
                bk_error *err)
{
    bk_query q = { bucket, from, to, 0, 0, limit };
    return bk_tx_read(be, &q, out, err);
}

int bk_tx_buckets(bk_backend *be, bk_result *out, bk_error *err)
{
    return bk_tx_read(be, NULL, out, err);
}
