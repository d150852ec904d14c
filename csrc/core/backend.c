/* backend.c: opening and closing, the bucket registry, errors, logging and
 * statistics. */
#include "internal.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#define LOG_MAX 1000

/* ---- errors, time, logging ---- */

int bk_fail(bk_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* Bytes for a message: printable ASCII as it is, the rest as \xHH. */
void bk_quote(char *out, size_t size, bk_slice s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s.data;
    size_t i = 0, o = 0;
    /* Each byte takes up to 4; keep room for "..." and the NUL. */
    for (; i < s.len && o + 8 <= size; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
            out[o++] = (char)p[i];
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
        }
    }
    if (i < s.len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
}

int bk_mdb_fail(bk_error *err, int rc, const char *what)
{
    int damaged = rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND;
    return bk_fail(err, BK_EIO, "%s: %s%s", what, mdb_strerror(rc),
                   damaged ? " (the database file is damaged)" : "");
}

/* LMDB turns a short write into EIO (mdb_page_flush): the kernel writes what
 * fits on a disk that fills up mid-write, and fails only the next write
 * with ENOSPC. So an EIO on a file system with (all but) no room left is
 * reported as what it most likely is. */
#define FULL_BYTES ((uint64_t)1 << 20)

int bk_write_fail(const bk_backend *be, bk_error *err, int rc, const char *what)
{
    struct statvfs sv;
    if (rc == EIO && be->datafd >= 0 && fstatvfs(be->datafd, &sv) == 0) {
        /* root may write into the blocks reserved for it */
        uint64_t room = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
        if (room < FULL_BYTES)
            return bk_fail(err, BK_EIO, "%s: %s (LMDB: %s, a short write; %llu bytes free)",
                           what, strerror(ENOSPC), mdb_strerror(rc), (unsigned long long)room);
    }
    if (rc == ENOSPC)   /* the same words whichever way it came */
        return bk_fail(err, BK_EIO, "%s: %s", what, strerror(ENOSPC));
    return bk_mdb_fail(err, rc, what);
}

int bk_read_full(int fd, char *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pread(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {   /* pages past the end of the file read as zeros */
            memset(buf, 0, len);
            return 0;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int bk_write_full(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

double bk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bk_log(bk_backend *be, const char *level, const char *fmt, ...)
{
    log_node *n = calloc(1, sizeof *n);
    if (!n)
        return;
    va_list ap;
    n->e.level = level;
    va_start(ap, fmt);
    vsnprintf(n->e.message, sizeof n->e.message, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&be->log_mu);
    if (be->log_len >= LOG_MAX) {   /* bounded: drop the oldest */
        log_node *old = be->log_head;
        be->log_head = old->next;
        __atomic_store_n(&be->log_len, be->log_len - 1, __ATOMIC_RELAXED);
        free(old);
        if (!be->log_head)
            be->log_tail = NULL;
    }
    if (be->log_tail)
        be->log_tail->next = n;
    else
        be->log_head = n;
    be->log_tail = n;
    __atomic_store_n(&be->log_len, be->log_len + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&be->log_mu);
}

int bk_log_pop(bk_backend *be, bk_log_entry *out)
{
    /* Every call of the binding asks: nothing queued takes no lock. */
    if (!__atomic_load_n(&be->log_len, __ATOMIC_RELAXED))
        return 0;
    pthread_mutex_lock(&be->log_mu);
    log_node *n = be->log_head;
    if (n) {
        be->log_head = n->next;
        if (!be->log_head)
            be->log_tail = NULL;
        __atomic_store_n(&be->log_len, be->log_len - 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&be->log_mu);
    if (!n)
        return 0;
    *out = n->e;
    free(n);
    return 1;
}

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

/* ---- the bucket registry ---- */

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

/* ---- opening ---- */

void bk_config_default(bk_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch_interval = 0.1;
    cfg->batch_limit = 10000;
    cfg->mmap_size = (uint64_t)10 << 30;   /* etcd's initial mmap size */
    cfg->max_buffered_bytes = (uint64_t)256 << 20;
    cfg->max_readers = 126;
}

static void hist_init(bk_hist *h, double first, int n)
{
    memset(h, 0, sizeof *h);
    h->first = first;
    h->n = n;
}

void bk_hist_observe(bk_backend *be, bk_hist *h, double seconds)
{
    pthread_mutex_lock(&be->hist_mu);
    double bound = h->first;
    for (int i = 0; i < h->n; i++, bound *= 2)
        if (seconds <= bound) {
            h->counts[i]++;
            break;
        }
    h->count++;
    h->sum += seconds;
    pthread_mutex_unlock(&be->hist_mu);
}

static void init_sync(bk_backend *be)
{
    pthread_mutex_init(&be->hist_mu, NULL);
    hist_init(&be->commit_hist, 0.001, 14);
    hist_init(&be->defrag_hist, 0.1, 13);
    hist_init(&be->snapshot_hist, 0.01, 17);
    pthread_mutex_init(&be->reg_mu, NULL);
    pthread_mutex_init(&be->lock_mu, NULL);
    pthread_cond_init(&be->lock_cv, NULL);
    pthread_mutex_init(&be->ver_mu, NULL);
    pthread_mutex_init(&be->cmu, NULL);
    pthread_cond_init(&be->ccv, NULL);
    pthread_cond_init(&be->done_cv, NULL);
    pthread_mutex_init(&be->txn_mu, NULL);
    /* Writers first: readers overlap constantly, and a remap or a defrag
     * must not starve behind them. (No path takes it twice for reading.) */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&be->maplock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&be->views_mu, NULL);
    pthread_mutex_init(&be->log_mu, NULL);
    mt_pool_init(&be->pool);
}

static void destroy(bk_backend *be)
{
    for (uint32_t id = 1; id <= be->nbuckets; id++) {
        free(be->buckets[id]->name);
        free(be->buckets[id]->dbname);
        free(be->buckets[id]);
    }
    for (log_node *n = be->log_head, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    for (bk_view *v = be->view_pool, *next; v; v = next) {
        next = (bk_view *)v->link.next;
        free(v);
    }
    free(be->undo);
    pthread_mutex_destroy(&be->hist_mu);
    pthread_mutex_destroy(&be->reg_mu);
    pthread_mutex_destroy(&be->lock_mu);
    pthread_cond_destroy(&be->lock_cv);
    pthread_mutex_destroy(&be->ver_mu);
    pthread_mutex_destroy(&be->cmu);
    pthread_cond_destroy(&be->ccv);
    pthread_cond_destroy(&be->done_cv);
    pthread_mutex_destroy(&be->txn_mu);
    pthread_rwlock_destroy(&be->maplock);
    pthread_mutex_destroy(&be->views_mu);
    pthread_mutex_destroy(&be->log_mu);
    mt_pool_destroy(&be->pool);   /* the last view has let its batches go */
    free(be->path);
    free(be->lockpath);
    free(be);
}

static int validate(const bk_config *cfg, bk_error *err)
{
    if (!cfg->path || !*cfg->path)
        return bk_fail(err, BK_EARG, "config.path must be a non-empty string");
    if (!(cfg->batch_interval > 0) || cfg->batch_interval > 86400.0 * 365)
        return bk_fail(err, BK_EARG, "config.batch_interval must be a positive number of seconds");
    if (cfg->batch_limit < 1)
        return bk_fail(err, BK_EARG, "config.batch_limit must be at least 1");
    if (cfg->mmap_size < 4096 || cfg->mmap_size > ((uint64_t)1 << 46))
        return bk_fail(err, BK_EARG, "config.mmap_size must be between 4096 and 2^46 bytes");
    if (cfg->max_readers < 1 || cfg->max_readers > 100000)
        return bk_fail(err, BK_EARG, "config.max_readers must be between 1 and 100000");
    /* Below a few arena blocks (256 KiB each) every section would wait. */
    if (cfg->max_buffered_bytes < ((uint64_t)1 << 20) ||
        cfg->max_buffered_bytes > ((uint64_t)1 << 46))
        return bk_fail(err, BK_EARG,
                       "config.max_buffered_bytes must be between 2^20 and 2^46 bytes");
    return BK_OK;
}

int bk_open(const bk_config *cfg, bk_backend **out, bk_error *err)
{
    int rc = validate(cfg, err);
    if (rc)
        return rc;
    bk_backend *be = calloc(1, sizeof *be);
    if (!be)
        return bk_fail(err, BK_EIO, "out of memory");
    init_sync(be);
    be->refs = 1;
    be->cfg = *cfg;
    be->env_flags = MDB_NOSUBDIR | MDB_NOTLS |
                    (cfg->no_fsync ? MDB_NOSYNC : 0) | (cfg->readonly ? MDB_RDONLY : 0);
    if ((rc = bk_files_open(be, err))) {
        destroy(be);
        return rc;
    }
    be->cfg.path = be->path;
    be->active = mt_new(++be->next_mt_id, &be->pool);
    if (!be->active) {
        rc = bk_fail(err, BK_EIO, "out of memory");
        goto fail;
    }
    if ((rc = bk_env_open(be, err)))
        goto fail;
    if (!cfg->readonly && (rc = bk_committer_start(be, err))) {
        bk_env_close(be);
        goto fail;
    }
    *out = be;
    return BK_OK;
fail:
    mt_unref(be->active);
    bk_files_close(be);
    destroy(be);
    return rc;
}

/* ---- closing ---- */

void bk_ref(bk_backend *be)
{
    __atomic_add_fetch(&be->refs, 1, __ATOMIC_RELAXED);
}

int bk_is_closed(const bk_backend *be)
{
    return __atomic_load_n(&be->closed, __ATOMIC_ACQUIRE);
}

const char *bk_path(const bk_backend *be)
{
    return be->path;
}

size_t bk_max_key_size(const bk_backend *be)
{
    return be->maxkey;
}

/* Views and snapshots of a backend that closes or defrags stop working;
 * their LMDB txns end now. Caller holds maplock for writing. */
void bk_invalidate_children(bk_backend *be, int code)
{
    pthread_mutex_lock(&be->views_mu);
    for (bk_child *c = be->children; c; c = c->next)
        if (c->is_snapshot)
            bk_snapshot_invalidate((bk_snapshot *)c, code);
        else
            bk_view_invalidate((bk_view *)c, code);
    pthread_mutex_unlock(&be->views_mu);
}

/* A child holds a reference to its backend until it is freed; it counts
 * as an open read tx while listed. Caller holds views_mu. */
void bk_child_link(bk_backend *be, bk_child *c, int is_snapshot)
{
    bk_ref(be);
    c->is_snapshot = is_snapshot;
    c->prev = NULL;
    c->next = be->children;
    if (be->children)
        be->children->prev = c;
    be->children = c;
    __atomic_store_n(&be->open_views, be->open_views + 1, __ATOMIC_RELAXED);
}

void bk_child_unlink(bk_backend *be, bk_child *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        be->children = c->next;
    if (c->next)
        c->next->prev = c->prev;
    __atomic_store_n(&be->open_views, be->open_views - 1, __ATOMIC_RELAXED);
}

void bk_child_attach(bk_backend *be, bk_child *c, int is_snapshot)
{
    pthread_mutex_lock(&be->views_mu);
    bk_child_link(be, c, is_snapshot);
    pthread_mutex_unlock(&be->views_mu);
}

void bk_child_detach(bk_backend *be, bk_child *c)
{
    pthread_mutex_lock(&be->views_mu);
    bk_child_unlink(be, c);
    pthread_mutex_unlock(&be->views_mu);
}

static void remove_files(const bk_backend *be)
{
    unlink(be->path);
    unlink(be->lockpath);
    char *dcopy = strdup(be->path);
    if (dcopy)
        rmdir(dirname(dcopy));   /* only succeeds if it is now empty */
    free(dcopy);
}

void bk_set_failed(bk_backend *be)
{
    pthread_mutex_lock(&be->lock_mu);
    __atomic_store_n(&be->closed, 2, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&be->lock_cv);   /* bk_lock waiters see it */
    pthread_mutex_unlock(&be->lock_mu);
}

int bk_close(bk_backend *be, int force, bk_error *err)
{
    int state = __atomic_load_n(&be->closed, __ATOMIC_ACQUIRE);
    if (state == 1)
        return BK_OK;
    int rc = BK_OK;
    if (state == 2) {   /* failed: nothing can be committed; release it all */
        if (bk_pending(be))
            rc = bk_fail(err, BK_EIO, "backend failed (its database could not be "
                         "reopened): %llu writes lost", (unsigned long long)bk_pending(be));
    } else if (!be->cfg.readonly && !be->stopped) {
        if (bk_locked_by_me(be))
            bk_rollback(be, "closing the backend", err);   /* cannot fail here */
        rc = bk_force_commit(be, err);
        if (rc && !force)
            return rc;
        if (rc)
            bk_log(be, "error", "closing without the last writes (%llu lost): %s",
                   (unsigned long long)bk_pending(be), err->msg);
    }
    if (!be->cfg.readonly)
        bk_committer_stop(be, rc != BK_OK || state == 2);
    pthread_mutex_lock(&be->lock_mu);
    __atomic_store_n(&be->closed, 1, __ATOMIC_RELEASE);
    bk_lock_drop(be);
    pthread_cond_broadcast(&be->lock_cv);
    pthread_mutex_unlock(&be->lock_mu);

    pthread_rwlock_wrlock(&be->maplock);
    bk_invalidate_children(be, BK_ECLOSED);
    bk_env_close(be);
    pthread_rwlock_unlock(&be->maplock);
    bk_closer_join(be);
    for (memtable *m = be->qhead, *next; m; m = next) {
        next = m->qnext;
        mt_unref(m);
    }
    be->qhead = be->qtail = NULL;
    be->nqueue = 0;
    mt_unref(be->active);
    be->active = NULL;
    if (be->cfg.remove_on_close)
        remove_files(be);
    bk_files_close(be);
    return rc;
}

void bk_free(bk_backend *be)
{
    if (!be || __atomic_sub_fetch(&be->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    bk_error err;
    bk_close(be, 1, &err);
    destroy(be);
}

/* ---- statistics and test hooks ---- */

int bk_stats_get(bk_backend *be, bk_stats *st, bk_error *err)
{
    if (bk_is_closed(be))
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    memset(st, 0, sizeof *st);
    st->commits = __atomic_load_n(&be->commits, __ATOMIC_RELAXED);
    st->pending = bk_pending(be);
    pthread_rwlock_rdlock(&be->maplock);   /* the version's txn may end here */
    version *v = bk_version_get(be);
    for (int i = 0; v && i < v->nmt; i++) {
        st->buffered_writes += __atomic_load_n(&v->mts[i]->writes, __ATOMIC_RELAXED);
        st->buffered_bytes += __atomic_load_n(&v->mts[i]->arena_bytes, __ATOMIC_RELAXED);
    }
    bk_version_unref(v);
    pthread_rwlock_unlock(&be->maplock);
    pthread_mutex_lock(&be->cmu);
    st->queued_batches = (uint64_t)be->nqueue;
    st->commit_failures = be->failures;
    pthread_mutex_unlock(&be->cmu);
    st->map_size = __atomic_load_n(&be->map_size, __ATOMIC_RELAXED);
    st->page_size = be->psize;
    st->size = __atomic_load_n(&be->size, __ATOMIC_RELAXED);
    st->size_in_use = __atomic_load_n(&be->size_in_use, __ATOMIC_RELAXED);
    st->open_read_tx_n = __atomic_load_n(&be->open_views, __ATOMIC_RELAXED);
    st->map_grows = __atomic_load_n(&be->map_grows, __ATOMIC_RELAXED);
    st->rollbacks = __atomic_load_n(&be->rollbacks, __ATOMIC_RELAXED);
    st->backpressure_waits = __atomic_load_n(&be->backpressure_waits, __ATOMIC_RELAXED);
    st->backpressure_seconds =
        (double)__atomic_load_n(&be->backpressure_ns, __ATOMIC_RELAXED) / 1e9;
    __atomic_load(&be->last_commit_s, &st->last_commit_seconds, __ATOMIC_RELAXED);
    __atomic_load(&be->total_commit_s, &st->total_commit_seconds, __ATOMIC_RELAXED);
    __atomic_load(&be->defrag_s, &st->defrag_seconds, __ATOMIC_RELAXED);
    __atomic_load(&be->snapshot_s, &st->snapshot_seconds, __ATOMIC_RELAXED);
    st->defrag_inflight = __atomic_load_n(&be->defrag_inflight, __ATOMIC_RELAXED);
    pthread_mutex_lock(&be->hist_mu);
    st->commit_hist = be->commit_hist;
    st->defrag_hist = be->defrag_hist;
    st->snapshot_hist = be->snapshot_hist;
    pthread_mutex_unlock(&be->hist_mu);
    return BK_OK;
}

typedef struct stats_job {
    bk_bucket_stat *out;
    size_t cap, n;
} stats_job;

static int bucket_stat_order(const void *a, const void *b)
{
    const bk_bucket_stat *x = a, *y = b;
    return mt_keycmp(x->name.data, x->name.len, y->name.data, y->name.len);
}

static int stats_visit(bk_backend *be, gen *g, void *ctx)
{
    stats_job *job = ctx;
    for (uint32_t id = 1; id < g->ndbis; id++) {
        MDB_stat st;
        if (!g->dbis[id])
            continue;
        if (job->n == job->cap)
            return ENOBUFS;
        int rc = mdb_stat(g->txn, g->dbis[id], &st);
        if (rc)
            return rc;
        bk_bucket *b = be->buckets[id];
        bk_bucket_stat *o = &job->out[job->n++];
        o->name.data = b->name;
        o->name.len = b->len;
        o->entries = st.ms_entries;
        o->depth = st.ms_depth;
        o->branch_pages = st.ms_branch_pages;
        o->leaf_pages = st.ms_leaf_pages;
        o->overflow_pages = st.ms_overflow_pages;
    }
    qsort(job->out, job->n, sizeof *job->out, bucket_stat_order);
    return 0;
}

int bk_bucket_stats(bk_backend *be, bk_bucket_stat *out, size_t cap, size_t *n,
                    bk_error *err)
{
    if (bk_is_closed(be))
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    stats_job job = { out, cap, 0 };
    int rc = bk_visit_committed(be, stats_visit, &job, "bucket stats", err);
    *n = rc ? 0 : job.n;
    return rc;
}

int bk_committed_get(bk_backend *be, bk_slice bucket, bk_slice key,
                     bk_result *out, bk_error *err)
{
    MDB_txn *txn;
    bk_result_clear(out);
    if (bk_is_closed(be))
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    int rc = bk_check_key(be, "key", key, err);   /* as get() does, not MDB_BAD_VALSIZE */
    if (rc)
        return rc;
    pthread_mutex_lock(&be->txn_mu);   /* bucket handles stay put */
    pthread_rwlock_rdlock(&be->maplock);
    bk_bucket *b = bk_bucket_find(be, bucket.data, bucket.len);
    rc = b && b->dbi ? bk_read_txn_begin(be, &txn) : MDB_NOTFOUND;
    if (!rc) {
        MDB_val k = { key.len, BK_UNCONST(key.data) }, v;
        if ((rc = mdb_get(txn, b->dbi, &k, &v)) == 0 &&
            bk_result_append(out, k.mv_data, k.mv_size, v.mv_data, v.mv_size))
            rc = ENOMEM;
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&be->maplock);
    pthread_mutex_unlock(&be->txn_mu);
    if (rc && rc != MDB_NOTFOUND)
        return bk_mdb_fail(err, rc, "reading committed data");
    return BK_OK;
}

void bk_lmdb_version(int *major, int *minor, int *patch)
{
    mdb_version(major, minor, patch);
}

size_t bk_lmdb_max_key_size(void)
{
    MDB_env *env;
    if (mdb_env_create(&env))
        return 0;
    size_t n = (size_t)mdb_env_get_maxkeysize(env);
    mdb_env_close(env);
    return n;
}
