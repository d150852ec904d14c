/* version.c: what a reader sees. A gen is one LMDB read txn over committed
 * data with each bucket's handle resolved; a version is a gen plus the
 * memtables not yet committed in it, newest first. Both are refcounted and
 * never change: the writer and the committer only swap in new versions. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void bk_gen_unref(gen *g)
{
    if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    mdb_txn_abort(g->txn);   /* before its environment can close */
    bk_env_unref(g->env);
    pthread_mutex_destroy(&g->mu);
    free(g->dbis);
    free(g);
}

void bk_version_unref(version *v)
{
    if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    bk_gen_unref(v->g);
    memtable *host = v->hosted ? v->mts[0] : NULL;
    for (int i = host ? 1 : 0; i < v->nmt; i++)
        mt_unref(v->mts[i]);
    if (host)
        mt_unref(host);   /* v with it */
    else
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
 * (the new active memtable) in front when given. Takes new references.
 * With push, the caller is its writer, and v lives in its arena: the
 * writer then makes no malloc, which can take a millisecond in a big heap
 * (memtable.c). */
version *bk_version_make(gen *g, const version *from, memtable *push)
{
    int n = from ? from->nmt : 0;
    size_t size = sizeof(version) + (size_t)(n + 1) * sizeof(memtable *);
    version *v = push ? mt_alloc(push, size) : malloc(size);
    if (!v)
        return NULL;
    v->refs = 1;
    v->hosted = push != NULL;
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
int bk_version_update(bk_backend *be, gen *g, memtable *push)
{
    pthread_mutex_lock(&be->ver_mu);
    version *cur = be->cur;
    version *v = bk_version_make(g ? g : cur->g, cur, push);
    if (v)
        be->cur = v;
    pthread_mutex_unlock(&be->ver_mu);
    if (!v)
        return -1;
    bk_version_unref(cur);
    return 0;
}

void bk_version_install(bk_backend *be, version *v)
{
    pthread_mutex_lock(&be->ver_mu);
    version *old = be->cur;
    be->cur = v;
    pthread_mutex_unlock(&be->ver_mu);
    bk_version_unref(old);
}

/* A gen over txn (a read txn of env just begun; it ends with the gen, or
 * here on failure), each bucket's handle resolved now, so later drops and
 * handle reuse cannot touch it. */
int bk_gen_make(bk_backend *be, bk_env *env, MDB_txn *txn, uint64_t last_mt_id, gen **out,
                bk_error *err)
{
    gen *g = calloc(1, sizeof *g);
    if (!g) {
        mdb_txn_abort(txn);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    g->refs = 1;
    g->last_mt_id = last_mt_id;
    pthread_mutex_init(&g->mu, NULL);
    __atomic_add_fetch(&env->refs, 1, __ATOMIC_RELAXED);
    g->env = env;
    g->txn = txn;
    g->txnid = mdb_txn_id(g->txn);
    g->ndbis = __atomic_load_n(&be->nbuckets, __ATOMIC_ACQUIRE) + 1;
    g->dbis = calloc(g->ndbis, sizeof *g->dbis);
    if (!g->dbis) {
        bk_gen_unref(g);
        return bk_fail(err, BK_EIO, "out of memory");
    }
    for (uint32_t id = 1; id < g->ndbis; id++) {
        MDB_dbi dbi = env->dbis[id];
        MDB_cursor *c;
        MDB_val k, v;
        if (!dbi || mdb_cursor_open(g->txn, dbi, &c))
            continue;
        int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        mdb_cursor_close(c);
        if (rc == 0 || rc == MDB_NOTFOUND) {
            g->dbis[id] = dbi;
        } else if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) {
            bk_gen_unref(g);   /* a damaged bucket is no absent one */
            return bk_mdb_fail(err, rc, "reading a bucket");
        }
    }
    *out = g;
    return BK_OK;
}
