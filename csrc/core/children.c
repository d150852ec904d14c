/* children.c: the views and snapshots of a backend, listed so that close
 * and a reopen can end their LMDB txns (invalidate them) before the
 * environment goes. A child holds a reference to its backend until it is
 * freed, and counts as an open read tx while listed. */
#include "internal.h"

/* Views and snapshots of a backend that closes or reopens its file stop
 * working; their LMDB txns end now. Caller holds maplock for writing. */
void bk_invalidate_children(bk_backend *be, int code)
{
    pthread_mutex_lock(&be->views_mu);
    for (bk_child *c = be->children; c; c = c->next)
        if (c->is_snapshot) {
            bk_snapshot *s = (bk_snapshot *)c;
            bk_gen_unref(s->g);
            s->g = NULL;
            __atomic_store_n(&s->invalid, code, __ATOMIC_RELEASE);
        } else {
            bk_view *v = (bk_view *)c;
            bk_version_unref(v->v);
            v->v = NULL;
            __atomic_store_n(&v->invalid, code, __ATOMIC_RELEASE);
        }
    pthread_mutex_unlock(&be->views_mu);
}

/* Caller holds views_mu. */
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

int bk_child_check(const int *invalid, const char *what, bk_error *err)
{
    int code = __atomic_load_n(invalid, __ATOMIC_ACQUIRE);
    if (code == BK_EINVALID)
        return bk_fail(err, BK_EINVALID, "%s was invalidated: the database was reopened "
                       "(after a failed commit, or read-only after the writer's defrag)", what);
    if (code)
        return bk_fail(err, BK_ECLOSED, "backend is closed");
    return BK_OK;
}
