/* commit.c: versions, generations and the background committer.
 *
 * Writers never wait for an fsync: at unlock a full batch (memtable) is
 * queued and a new one started; the committer thread begins an LMDB write
 * txn, applies the queued batches in key order, commits it, opens a read
 * txn on the result (a new gen) and installs a version without them. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- versions and generations ---- */

void bk_gen_unref(gen *g)
{
    if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    mdb_txn_abort(g->txn);
    pthread_mutex_destroy(&g->mu);
    free(g->dbis);
    free(g);
}

void bk_version_unref(version *v)
{
    if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    bk_gen_unref(v->g);
    for (int i = 0; i < v->nmt; i++)
        mt_unref(v->mts[i]);
    free(v);
}

version *bk_version_get(bk_backend *be)
{
    pthread_mutex_lock(&be->ver_mu);
    version *v = be->cur;
    if (v)
        __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&be->ver_mu);
    return v;
}

/* A version over g with the memtables of `from` newer than g, plus `push`
 * (the new active memtable) in front when given. Takes new references. */
static version *version_make(gen *g, const version *from, memtable *push)
{
    int n = from ? from->nmt : 0;
    version *v = malloc(sizeof *v + (size_t)(n + 1) * sizeof(memtable *));
    if (!v)
        return NULL;
    v->refs = 1;
    v->g = g;
    __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
    v->nmt = 0;
    if (push) {
        mt_ref(push);
        v->mts[v->nmt++] = push;
    }
    for (int i = 0; i < n; i++) {
        memtable *m = from->mts[i];
        if (m->id <= g->last_mt_id)
            continue;
        mt_ref(m);
        v->mts[v->nmt++] = m;
    }
    return v;
}

/* Replace the current version by one over g (NULL: the current gen) with
 * the current memtables newer than g, and push (the new active memtable)
 * in front. One critical section: a rotation and a commit racing never
 * lose each other's change. */
static int version_update(bk_backend *be, gen *g, memtable *push)
{
    pthread_mutex_lock(&be->ver_mu);
    version *cur = be->cur;
    version *v = version_make(g ? g : cur->g, cur, push);
    if (v)
        be->cur = v;
    pthread_mutex_unlock(&be->ver_mu);
    if (!v)
        return -1;
    bk_version_unref(cur);
    return 0;
}

static void version_install(bk_backend *be, version *v)
{
    pthread_mutex_lock(&be->ver_mu);
    version *old = be->cur;
    be->cur = v;
    pthread_mutex_unlock(&be->ver_mu);
    bk_version_unref(old);
}

/* LMDB gives up on an environment whose meta page it failed to write (it
 * sets MDB_FATAL_ERROR: every txn then fails with MDB_PANIC), and one it
 * failed to map again in a resize (no map is left: the next txn would
 * crash). The file is intact, its meta pages still name the last commit,
 * so close the environment and open it again, as defrag does: views and
 * snapshots pin txns of the old one and are invalidated; the current
 * version keeps its batches, over the reopened state. If even that fails
 * the backend has failed. Caller holds txn_mu and maplock for writing, so
 * no reader or rotation holds a version: the current one's gen has the old
 * environment's last txn (its others died with the views). */
static int env_reopen(bk_backend *be, const char *why, bk_error *err)
{
    bk_invalidate_children(be, BK_EINVALID);
    if (be->cur) {
        mdb_txn_abort(be->cur->g->txn);
        be->cur->g->txn = NULL;   /* the gen goes with the version replaced */
    }
    mdb_env_close(be->env);
    be->env = NULL;
    int rc = bk_env_open(be, err);
    if (rc) {
        bk_env_close(be);
        bk_set_failed(be);
        pthread_mutex_lock(&be->cmu);
        be->stop = 2;   /* nothing can be committed any more */
        pthread_cond_signal(&be->ccv);
        pthread_mutex_unlock(&be->cmu);
        bk_log(be, "error", "reopening the database failed, backend closed, "
               "%llu writes lost: %s", (unsigned long long)bk_pending(be), err->msg);
        return rc;
    }
    bk_log(be, "warn", "database reopened (%s); open read txns and snapshots were "
           "invalidated", why);
    return BK_OK;
}

/* Resize the map with no cursor alive anywhere (readers hold maplock). */
static int map_resize(bk_backend *be, size_t size, bk_error *err)
{
    pthread_rwlock_wrlock(&be->maplock);
    int rc = mdb_env_set_mapsize(be->env, size);
    MDB_envinfo info;
    bk_error rerr;
    if (!rc)
        rc = mdb_env_info(be->env, &info);
    else   /* it unmaps first: a failed mmap leaves no map */
        env_reopen(be, "growing the map failed", &rerr);
    pthread_rwlock_unlock(&be->maplock);
    if (rc)
        return bk_mdb_fail(err, rc, "resizing the map");
    __atomic_store_n(&be->map_size, (uint64_t)info.me_mapsize, __ATOMIC_RELAXED);
    return BK_OK;
}

static int map_grow(bk_backend *be, bk_error *err)
{
    size_t old = (size_t)__atomic_load_n(&be->map_size, __ATOMIC_RELAXED);
    int rc = map_resize(be, old * 2, err);
    if (rc)
        return rc;
    __atomic_add_fetch(&be->map_grows, 1, __ATOMIC_RELAXED);
    bk_log(be, "info", "map grown from %zu to %zu bytes", old, old * 2);
    return BK_OK;
}

/* Begin a read txn. A process killed while reading (SIGKILL) leaves its
 * reader slots taken, and LMDB clears them only when asked: when the table
 * is full, clear the slots of dead processes (mdb_reader_check) and retry. */
int bk_read_txn_begin(bk_backend *be, MDB_txn **txn)
{
    int dead = 0, rc = mdb_txn_begin(be->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_READERS_FULL && mdb_reader_check(be->env, &dead) == 0 && dead > 0)
        rc = mdb_txn_begin(be->env, NULL, MDB_RDONLY, txn);
    return rc;
}

/* Size and size in use of the state g sees: the page high-water mark, less
 * the pages listed in the free database. */
static void sizes_update(bk_backend *be, gen *g)
{
    MDB_envinfo info;
    MDB_cursor *c;
    MDB_val k, v;
    if (mdb_env_info(be->env, &info) || mdb_cursor_open(g->txn, 0, &c))
        return;
    uint64_t free_pages = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        size_t n;
        memcpy(&n, v.mv_data, sizeof n);
        free_pages += n;
    }
    mdb_cursor_close(c);
    uint64_t size = ((uint64_t)info.me_last_pgno + 1) * be->psize;
    __atomic_store_n(&be->size, size, __ATOMIC_RELAXED);
    __atomic_store_n(&be->size_in_use, size - free_pages * be->psize, __ATOMIC_RELAXED);
}

/* A gen: a read txn over the newest committed state, each bucket's handle
 * resolved now, so later drops and handle reuse cannot touch it. Callers
 * hold txn_mu (or are alone, opening): the map is only resized under it. */
static int gen_new(bk_backend *be, uint64_t last_mt_id, gen **out, bk_error *err)
{
    gen *g = calloc(1, sizeof *g);
    if (!g)
        return bk_fail(err, BK_EIO, "out of memory");
    g->refs = 1;
    g->last_mt_id = last_mt_id;
    pthread_mutex_init(&g->mu, NULL);
    int rc = bk_read_txn_begin(be, &g->txn);
    if (rc == MDB_MAP_RESIZED && !map_resize(be, 0, err))
        rc = bk_read_txn_begin(be, &g->txn);
    if (rc) {
        pthread_mutex_destroy(&g->mu);
        free(g);
        return bk_mdb_fail(err, rc, "beginning a read transaction");
    }
    g->txnid = mdb_txn_id(g->txn);
    g->ndbis = __atomic_load_n(&be->nbuckets, __ATOMIC_ACQUIRE) + 1;
    g->dbis = calloc(g->ndbis, sizeof *g->dbis);
    if (!g->dbis) {
        bk_gen_unref(g);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    for (uint32_t id = 1; id < g->ndbis; id++) {
        bk_bucket *b = be->buckets[id];
        MDB_cursor *c;
        MDB_val k, v;
        if (!b->dbi || mdb_cursor_open(g->txn, b->dbi, &c))
            continue;
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        mdb_cursor_close(c);
        if (rc == 0 || rc == MDB_NOTFOUND) {
            g->dbis[id] = b->dbi;
        } else if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) {
            bk_gen_unref(g);   /* a damaged bucket is no absent one */
            return bk_mdb_fail(err, rc, "reading a bucket");
        }
    }
    *out = g;
    return BK_OK;
}

/* Register every bucket in the main database and open its handle, in a read
 * txn that is committed so the handles outlive it (LMDB's rule). */
static int buckets_sync(bk_backend *be, bk_error *err)
{
    MDB_txn *txn;
    MDB_dbi main_dbi;
    MDB_cursor *c;
    MDB_val k, v;
    int rc = bk_read_txn_begin(be, &txn);
    if (rc)
        return bk_mdb_fail(err, rc, "reading bucket names");
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (!rc)
        rc = mdb_cursor_open(txn, main_dbi, &c);
    if (rc) {
        mdb_txn_abort(txn);
        return bk_mdb_fail(err, rc, "reading bucket names");
    }
    int status = BK_OK;
    while ((rc = mdb_cursor_get(c, &k, &v, rc == -1 ? MDB_FIRST : MDB_NEXT)) == 0) {
        char buf[512];
        bk_slice name;
        bk_bucket *b = bk_bucket_by_dbname(be, k.mv_data, k.mv_size, &name, buf);
        if (!name.len)
            continue;   /* not a name we could have made */
        if (!b && !(b = bk_bucket_register(be, name.data, name.len, err))) {
            status = err->code;
            break;
        }
        if (!b->dbi) {
            MDB_dbi dbi;
            if (mdb_dbi_open(txn, b->dbname, 0, &dbi) == 0)
                b->dbi = dbi;   /* else a plain key in the main db: skip */
        }
        b->writer_exists = b->dbi != 0;
    }
    mdb_cursor_close(c);
    if (status == BK_OK && rc != MDB_NOTFOUND)
        status = bk_mdb_fail(err, rc, "reading bucket names");
    if (status == BK_OK && (rc = mdb_txn_commit(txn)))
        return bk_mdb_fail(err, rc, "reading bucket names");
    if (status != BK_OK)
        mdb_txn_abort(txn);
    return status;
}

int bk_env_open(bk_backend *be, bk_error *err)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc = mdb_env_create(&be->env);
    if (rc)
        return bk_mdb_fail(err, rc, "creating the environment");
    if ((rc = mdb_env_set_maxdbs(be->env, BK_MAX_BUCKETS)) ||
        (rc = mdb_env_set_maxreaders(be->env, be->cfg.max_readers)) ||
        (rc = mdb_env_set_mapsize(be->env, be->cfg.mmap_size)) ||
        (rc = mdb_env_open(be->env, be->path, be->env_flags, 0600))) {
        mdb_env_close(be->env);
        be->env = NULL;
        return bk_mdb_fail(err, rc, be->path);
    }
    int dead;
    if (!be->cfg.readonly)
        mdb_reader_check(be->env, &dead);
    /* A new file's meta pages are durable before its first commit writes
     * pages behind them (files.c is_unborn: what a power cut may leave). */
    if (!be->cfg.readonly && !be->cfg.no_fsync && (rc = mdb_env_info(be->env, &info)) == 0 &&
        info.me_last_txnid == 0)
        rc = mdb_env_sync(be->env, 1);
    if (rc) {
        bk_env_close(be);
        return bk_mdb_fail(err, rc, "syncing the new file's meta pages");
    }
    for (uint32_t id = 1, n = __atomic_load_n(&be->nbuckets, __ATOMIC_ACQUIRE); id <= n; id++)
        be->buckets[id]->dbi = 0;
    gen *g;
    if ((rc = mdb_env_info(be->env, &info)) || (rc = mdb_env_stat(be->env, &st))) {
        bk_env_close(be);
        return bk_mdb_fail(err, rc, "reading the environment");
    }
    be->psize = st.ms_psize;
    be->maxkey = (size_t)mdb_env_get_maxkeysize(be->env);
    __atomic_store_n(&be->map_size, (uint64_t)info.me_mapsize, __ATOMIC_RELAXED);
    if ((rc = buckets_sync(be, err)) || (rc = gen_new(be, be->committed_id, &g, err))) {
        bk_env_close(be);
        return rc;
    }
    sizes_update(be, g);
    /* Reopened by env_reopen: the batches of the current version stay. */
    version *v = be->cur ? version_make(g, be->cur, NULL) : version_make(g, NULL, be->active);
    bk_gen_unref(g);
    if (!v) {
        bk_env_close(be);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    version_install(be, v);
    return BK_OK;
}

void bk_env_close(bk_backend *be)
{
    version_install(be, NULL);
    if (be->env)
        mdb_env_close(be->env);
    be->env = NULL;
}

/* In read-only mode another process commits: move to its newest state. */
/* The writer's defrag renamed a new file over ours: is the path another file? */
static int file_replaced(bk_backend *be)
{
    struct stat ours, now;
    int fd;
    return !mdb_env_get_fd(be->env, &fd) && !fstat(fd, &ours) && !stat(be->path, &now) &&
           (ours.st_ino != now.st_ino || ours.st_dev != now.st_dev);
}

int bk_readonly_refresh(bk_backend *be, bk_error *err)
{
    MDB_envinfo info;
    int rc = BK_OK;
    pthread_mutex_lock(&be->txn_mu);
    /* Checked before LMDB maps it, as at open; the old file stays mapped if
     * the new one is damaged. */
    if (file_replaced(be) && !(rc = bk_files_check_replaced(be, err))) {
        pthread_rwlock_wrlock(&be->maplock);
        rc = env_reopen(be, "the writer defragmented it", err);
        pthread_rwlock_unlock(&be->maplock);
    }
    version *v = rc ? NULL : bk_version_get(be);
    if (!mdb_env_info(be->env, &info) && v && (uint64_t)info.me_last_txnid != v->g->txnid) {
        gen *g;
        rc = buckets_sync(be, err);
        if (!rc)
            rc = gen_new(be, 0, &g, err);
        if (!rc) {
            sizes_update(be, g);
            if (version_update(be, g, NULL))
                rc = bk_fail(err, BK_EIO, "out of memory");
            bk_gen_unref(g);
        }
    }
    bk_version_unref(v);
    pthread_mutex_unlock(&be->txn_mu);
    return rc;
}

int bk_visit_committed(bk_backend *be, bk_gen_visit fn, void *ctx, const char *what,
                       bk_error *err)
{
    int rc = be->cfg.readonly ? bk_readonly_refresh(be, err) : bk_force_commit(be, err);
    if (rc)
        return rc;
    gen *g;
    pthread_mutex_lock(&be->txn_mu);
    pthread_rwlock_rdlock(&be->maplock);
    rc = bk_fresh_gen(be, &g, err);
    /* Commits may go on while we read; defrag and remaps wait for us. */
    pthread_mutex_unlock(&be->txn_mu);
    if (rc == BK_OK) {
        pthread_mutex_lock(&g->mu);
        int mrc = fn(be, g, ctx);
        pthread_mutex_unlock(&g->mu);
        if (mrc)
            rc = bk_mdb_fail(err, mrc, what);
        bk_gen_unref(g);
    }
    pthread_rwlock_unlock(&be->maplock);
    return rc;
}

/* The gen holding everything committed so far, for hash and snapshot. The
 * committer may have failed to open one (no reader slot): then try now, and
 * fail rather than answer from an older state. Caller holds txn_mu. */
int bk_fresh_gen(bk_backend *be, gen **out, bk_error *err)
{
    version *v = bk_version_get(be);
    if (!v)
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    uint64_t committed;
    pthread_mutex_lock(&be->cmu);
    committed = be->committed_id;
    pthread_mutex_unlock(&be->cmu);
    gen *g = v->g;
    int rc = BK_OK;
    if (be->cfg.readonly || g->last_mt_id >= committed) {
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
    } else if ((rc = gen_new(be, committed, &g, err)) == BK_OK) {
        if (version_update(be, g, NULL)) {
            bk_gen_unref(g);
            rc = bk_fail(err, BK_EIO, "out of memory");
        }
    }
    bk_version_unref(v);
    if (rc == BK_OK)
        *out = g;
    return rc;
}

/* ---- applying one batch ---- */

enum { TOUCH_OPENED = 1, TOUCH_DROPPED = 2 };

static int key_after(const MDB_val *k, const char *last, size_t lastlen)
{
    return mt_keycmp(k->mv_data, k->mv_size, last, lastlen) > 0;
}

/* Applies one bucket's entries starting at *np; returns the LMDB code. */
static int apply_bucket(bk_backend *be, MDB_txn *txn, mt_node **np,
                        uint8_t *touched)
{
    mt_node *n = *np;
    uint32_t id = n->bucket;
    bk_bucket *b = be->buckets[id];
    int last_event = -1, rc = 0;
    uint64_t floor = 0;
    for (; n && n->bucket == id && n->klen == 0; n = mt_next(n)) {
        if (last_event < 0)
            last_event = n->type;
        if (n->type == MT_DROP && !floor)
            floor = n->seq;   /* newest first: the last drop of the batch */
    }
    if (!b->dbi) {
        MDB_dbi dbi;
        rc = mdb_dbi_open(txn, b->dbname, 0, &dbi);
        if (rc && rc != MDB_NOTFOUND)
            goto out;
        if (!rc) {
            b->dbi = dbi;
            touched[id] |= TOUCH_OPENED;
        }
        rc = 0;
    }
    if (floor && b->dbi) {
        if ((rc = mdb_drop(txn, b->dbi, 1)))
            goto out;
        b->dbi = 0;
        touched[id] |= TOUCH_DROPPED;
    }
    if (last_event == MT_CREATE && !b->dbi) {
        if ((rc = mdb_dbi_open(txn, b->dbname, MDB_CREATE, &b->dbi)))
            goto out;
        touched[id] |= TOUCH_OPENED;
    }
    if (!n || n->bucket != id)
        goto out;
    if (!b->dbi) {   /* every key write here predates a drop */
        while (n && n->bucket == id)
            n = mt_next(n);
        goto out;
    }
    MDB_cursor *c;
    MDB_val k, v;
    char last[512];
    size_t lastlen = 0;
    int empty, append = 0;
    if ((rc = mdb_cursor_open(txn, b->dbi, &c)))
        goto out;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc && rc != MDB_NOTFOUND) {
        mdb_cursor_close(c);
        goto out;
    }
    empty = rc == MDB_NOTFOUND;
    if (!empty) {
        lastlen = k.mv_size;
        memcpy(last, k.mv_data, lastlen);
    }
    rc = 0;
    while (n && n->bucket == id) {
        mt_node *newest = n;
        do
            n = mt_next(n);
        while (n && n->bucket == id &&
               !mt_keycmp(mt_key(n), n->klen, mt_key(newest), newest->klen));
        if (newest->seq < floor)
            continue;
        k.mv_data = BK_UNCONST(mt_key(newest));
        k.mv_size = newest->klen;
        if (newest->type == MT_PUT) {
            /* Sorted batch: once past the last key, append (fills pages). */
            if (!append && (empty || key_after(&k, last, lastlen)))
                append = 1;
            v.mv_data = BK_UNCONST(mt_value(newest));
            v.mv_size = newest->vlen;
            rc = mdb_cursor_put(c, &k, &v, append ? MDB_APPEND : 0);
        } else if (!append) {
            rc = mdb_cursor_get(c, &k, &v, MDB_SET);
            rc = rc == MDB_NOTFOUND ? 0 : rc ? rc : mdb_cursor_del(c, 0);
        }
        if (rc)
            break;
    }
    mdb_cursor_close(c);
out:
    *np = n;
    return rc;
}

/* A group is the nm oldest queued batches, from `first` on by qnext. The
 * committer follows the links inside its group only: the writer may be
 * linking a new batch behind the last one. */

/* The group's last batch, and its writes in *writes. */
static memtable *group_last(memtable *m, int nm, uint64_t *writes)
{
    *writes = m->writes;
    for (int i = 1; i < nm; i++) {
        m = m->qnext;
        *writes += m->writes;
    }
    return m;
}

/* One attempt at a group, oldest first, in one write txn: 0, or the
 * LMDB/system code (txn aborted, handles restored). */
static int apply_batches(bk_backend *be, memtable *first, int nm, uint8_t *touched)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(be->env, NULL, 0, &txn);
    if (rc)
        return rc;
    memtable *m = first;
    for (int i = 0; i < nm && !rc; i++) {
        if (i)
            m = m->qnext;
        for (mt_node *n = mt_first(m); n && !rc;)
            rc = apply_bucket(be, txn, &n, touched);
    }
    if (rc)
        mdb_txn_abort(txn);
    else if (!(rc = mdb_txn_commit(txn)))   /* a failed commit frees the txn */
        return 0;
    /* Handles opened or dropped in the failed txn are closed now (buckets
     * the writer registers meanwhile were not touched). */
    for (uint32_t id = 1, n = __atomic_load_n(&be->nbuckets, __ATOMIC_ACQUIRE); id <= n; id++)
        if (touched[id])
            be->buckets[id]->dbi = 0;
    return rc;
}

/* After a failed commit: a failed meta-page write leaves LMDB's environment
 * fatal (mdb_env_write_meta), which the next txn tells: reopen it now. */
static void env_check(bk_backend *be)
{
    MDB_txn *txn;
    bk_error rerr;
    int rc = mdb_txn_begin(be->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0)
        mdb_txn_abort(txn);
    if (rc != MDB_PANIC)
        return;
    pthread_rwlock_wrlock(&be->maplock);
    env_reopen(be, "LMDB gave up on it after a failed commit", &rerr);
    pthread_rwlock_unlock(&be->maplock);
}

static void count_commit(bk_backend *be, double dt)
{
    __atomic_add_fetch(&be->commits, 1, __ATOMIC_RELAXED);
    __atomic_store(&be->last_commit_s, &dt, __ATOMIC_RELAXED);
    double total;
    __atomic_load(&be->total_commit_s, &total, __ATOMIC_RELAXED);
    total += dt;   /* only the committer writes it */
    __atomic_store(&be->total_commit_s, &total, __ATOMIC_RELAXED);
    bk_hist_observe(be, &be->commit_hist, dt);
}

/* Commits a group of *nm batches as one LMDB write txn. If LMDB finds
 * that too much for one txn (MDB_TXN_FULL: too many dirty pages), its
 * older half, and so on: *nm says how many went in. */
static int commit_batches(bk_backend *be, memtable *first, int *nm, bk_error *err)
{
    uint8_t *touched = calloc(BK_MAX_BUCKETS + 1, 1);
    if (!touched)
        return bk_fail(err, BK_EIO, "out of memory");
    pthread_mutex_lock(&be->txn_mu);
    double t0 = bk_now();
    int rc = 0;
    uint64_t live;
    memtable *last = group_last(first, *nm, &live);
    /* Batches of rolled-back writes only: no LMDB txn, no commit; a new
     * version still lets their memory go. */
    for (int grows = 0; live;) {
        memset(touched, 0, BK_MAX_BUCKETS + 1);
        rc = apply_batches(be, first, *nm, touched);
        if (rc == MDB_TXN_FULL && *nm > 1) {
            bk_log(be, "info", "%d batches are too much for one LMDB transaction: "
                   "committing %d first", *nm, *nm / 2);
            *nm /= 2;
            last = group_last(first, *nm, &live);
            rc = 0;
        } else if (rc != MDB_MAP_FULL || grows++ == 40) {
            break;
        } else if ((rc = map_grow(be, err))) {
            goto done;
        }
    }
    if (rc) {
        rc = bk_write_fail(be, err, rc, "commit");
        env_check(be);
        goto done;
    }
    if (live)
        count_commit(be, bk_now() - t0);
    gen *g;
    bk_error gerr;
    if (gen_new(be, last->id, &g, &gerr) == BK_OK) {
        sizes_update(be, g);
        if (version_update(be, g, NULL))
            bk_log(be, "warn", "no memory for a new version after commit");
        bk_gen_unref(g);
        /* Grow ahead, at a commit boundary, before writes hit the end; once
         * g is installed, as a failed remap reopens (env_reopen). */
        if (__atomic_load_n(&be->size, __ATOMIC_RELAXED) >
            __atomic_load_n(&be->map_size, __ATOMIC_RELAXED) / 4 * 3)
            map_grow(be, &gerr);
    } else {
        /* The batch stays in the version: readers still see it there. */
        bk_log(be, "warn", "no read txn after commit: %s", gerr.msg);
    }
done:
    pthread_mutex_unlock(&be->txn_mu);
    free(touched);
    return rc;
}

/* ---- the committer thread ---- */

/* The oldest nm batches are committed: off the queue (cmu held), still
 * linked to each other for release_group. */
static void dequeue(bk_backend *be, int nm)
{
    for (int i = 0; i < nm; i++) {
        memtable *m = be->qhead;
        be->qhead = m->qnext;
        __atomic_sub_fetch(&be->queued_writes, m->writes, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&be->queued_bytes, m->arena_bytes, __ATOMIC_RELAXED);
        be->committed_id = m->id;
    }
    if (!be->qhead)
        be->qtail = NULL;
    be->nqueue -= nm;
}

/* The queue's references to a dequeued group, dropped without cmu: the
 * last one frees a batch's memory (munmaps), and writers queue under cmu. */
static void release_group(memtable *m, int nm)
{
    for (int i = 0; i < nm; i++) {
        memtable *next = m->qnext;   /* no longer the tail: no writer links it */
        mt_unref(m);
        m = next;
    }
}

static struct timespec abs_time(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    return ts;
}

/* Ask for the active batch to be queued: at once if nobody holds the batch
 * lock, else at the holder's unlock (the committer never waits on writers). */
static void request_rotation(bk_backend *be)
{
    pthread_mutex_lock(&be->lock_mu);
    if (be->locked) {
        __atomic_store_n(&be->rotate_requested, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&be->lock_mu);
        return;
    }
    bk_lock_take(be);
    pthread_mutex_unlock(&be->lock_mu);
    bk_error err;
    if (bk_rotate(be, &err))
        bk_log(be, "error", "queueing a batch: %s", err.msg);
    pthread_mutex_lock(&be->lock_mu);
    bk_lock_drop(be);
    pthread_cond_signal(&be->lock_cv);
    pthread_mutex_unlock(&be->lock_mu);
}

static void *committer_main(void *arg)
{
    bk_backend *be = arg;
    double interval = be->cfg.batch_interval < 0.001 ? 0.001 : be->cfg.batch_interval;
    double next_tick = bk_now() + interval, retry_at = 0;
    int tick_due = 0;
    pthread_mutex_lock(&be->cmu);
    for (;;) {
        double now = bk_now();
        if (be->stop == 2)
            break;
        if (be->nqueue > 0 && (now >= retry_at || be->kick)) {
            /* Behind? The batches queued share one txn, one fsync, up to a
             * BK_BUFFER_SHARE of max_buffered_bytes: the per-commit costs
             * (fsync, meta page, the trees' upper pages) are long paid off
             * by then, and a writer held at the bound is let go after one
             * such commit rather than after the whole buffer. */
            uint64_t cap = be->cfg.max_buffered_bytes / BK_BUFFER_SHARE, bytes = 0;
            memtable *first = be->qhead;
            int nm = 0;
            for (memtable *m = first;
                 m && (!nm || (bytes < cap && m->arena_bytes <= cap - bytes));
                 m = m->qnext, nm++)
                bytes += m->arena_bytes;
            be->kick = 0;
            uint64_t attempt = ++be->attempts;
            pthread_mutex_unlock(&be->cmu);
            bk_error err;
            int rc = commit_batches(be, first, &nm, &err);
            pthread_mutex_lock(&be->cmu);
            if (rc == BK_OK) {
                dequeue(be, nm);
                retry_at = 0;
            } else {
                be->failures++;
                be->failed_attempt = attempt;
                be->last_err = err;
                retry_at = bk_now() + interval;
                bk_log(be, "error", "commit failed, will retry: %s", err.msg);
            }
            pthread_cond_broadcast(&be->done_cv);
            if (rc == BK_OK) {
                pthread_mutex_unlock(&be->cmu);
                release_group(first, nm);
                pthread_mutex_lock(&be->cmu);
            }
            continue;
        }
        if (be->stop && be->nqueue == 0)
            break;
        if (now >= next_tick) {
            next_tick = now + interval;
            tick_due = 1;
        }
        /* A tick while batches wait is held until the queue drains: more
         * small commits behind a busy committer would only add fsyncs and
         * copied pages, and make nothing durable sooner. */
        if (tick_due && be->nqueue == 0) {
            tick_due = 0;
            if (__atomic_load_n(&be->active_writes, __ATOMIC_ACQUIRE) > 0) {
                pthread_mutex_unlock(&be->cmu);
                request_rotation(be);
                pthread_mutex_lock(&be->cmu);
                continue;
            }
        }
        double wake = next_tick;
        if (be->nqueue > 0 && retry_at < wake)
            wake = retry_at;
        struct timespec ts = abs_time(wake);
        pthread_cond_timedwait(&be->ccv, &be->cmu, &ts);
    }
    be->committer_running = 0;
    pthread_cond_broadcast(&be->done_cv);
    pthread_mutex_unlock(&be->cmu);
    return NULL;
}

int bk_committer_start(bk_backend *be, bk_error *err)
{
    be->committer_running = 1;
    int rc = pthread_create(&be->committer, NULL, committer_main, be);
    if (rc) {
        be->committer_running = 0;
        return bk_fail(err, BK_EIO, "starting the committer: %s", strerror(rc));
    }
    return BK_OK;
}

void bk_committer_stop(bk_backend *be, int drop)
{
    pthread_mutex_lock(&be->cmu);
    be->stop = drop ? 2 : 1;
    pthread_cond_signal(&be->ccv);
    pthread_mutex_unlock(&be->cmu);
    /* Even if it ended by itself (env_reopen failed): bk_close calls this once. */
    pthread_join(be->committer, NULL);
}

/* Queue the active batch (batch lock held). Never waits: the queue has no
 * fixed size, writers wait for room in lock() (batch.c). */
int bk_rotate(bk_backend *be, bk_error *err)
{
    memtable *old = be->active;
    if (old->writes == 0 && old->dropped == 0)
        return BK_OK;   /* a memtable of rolled-back writes goes too: its memory */
    memtable *fresh = mt_new(be->next_mt_id + 1, &be->pool);
    if (!fresh)
        return bk_fail(err, BK_EIO, "out of memory");
    /* maplock: the version replaced (maybe its gen's txn too) ends here,
     * never while env_reopen closes the environment. Readers see fresh in
     * front of old from now on; the committer, which keeps every batch
     * newer than what it committed, cannot drop either. */
    pthread_rwlock_rdlock(&be->maplock);
    int vrc = version_update(be, NULL, fresh);
    pthread_rwlock_unlock(&be->maplock);
    if (vrc) {
        mt_unref(fresh);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    be->next_mt_id++;
    be->active = fresh;
    __atomic_store_n(&be->active_bytes, fresh->arena_bytes, __ATOMIC_RELAXED);
    pthread_mutex_lock(&be->cmu);
    if (be->qtail)   /* be->active's reference moves to the queue */
        be->qtail->qnext = old;
    else
        be->qhead = old;
    be->qtail = old;
    be->nqueue++;
    __atomic_add_fetch(&be->queued_writes, old->writes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&be->queued_bytes, old->arena_bytes, __ATOMIC_RELAXED);
    pthread_cond_signal(&be->ccv);
    pthread_mutex_unlock(&be->cmu);
    /* After queueing, so that bk_pending never misses these writes. */
    __atomic_store_n(&be->active_writes, 0, __ATOMIC_RELEASE);
    return BK_OK;
}

/* Wait until every batch queued so far is in LMDB, or an attempt fails. */
int bk_wait_committed(bk_backend *be, bk_error *err)
{
    int rc = BK_OK;
    pthread_mutex_lock(&be->cmu);
    uint64_t target = be->qtail ? be->qtail->id : be->committed_id;
    /* Only an attempt begun after this call answers it: one already under
     * way may fail on a disk that has had room since. */
    uint64_t begun = be->attempts;
    be->kick = 1;
    pthread_cond_signal(&be->ccv);
    while (be->committed_id < target) {
        if (be->failed_attempt > begun) {
            *err = be->last_err;
            rc = err->code;
            break;
        }
        if (!be->committer_running) {
            rc = bk_fail(err, BK_ECLOSED, "backend is closed");
            break;
        }
        pthread_cond_wait(&be->done_cv, &be->cmu);
    }
    pthread_mutex_unlock(&be->cmu);
    return rc;
}
