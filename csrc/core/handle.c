/* handle.c: the backend handle's own state, which every layer asks about:
 * its references (a view or snapshot takes one; the last bk_free closes it,
 * backend.c), whether it is closed or has failed (or belongs to another
 * process: util.c's bk_foreign), its path and key limit. */
#include "internal.h"

int bk_closed_fail(const bk_backend *be, bk_error *err)
{
    if (bk_foreign(be))
        return bk_process_fail(&be->process, "backend", err);
    return bk_fail(err, BK_ECLOSED, "backend is closed");
}

int bk_check_open(const bk_backend *be, bk_error *err)
{
    return bk_is_closed(be) ? bk_closed_fail(be, err) : BK_OK;
}

void bk_ref(bk_backend *be)
{
    __atomic_add_fetch(&be->refs, 1, __ATOMIC_RELAXED);
}

int bk_is_closed(const bk_backend *be)
{
    return __atomic_load_n(&be->closed, __ATOMIC_ACQUIRE) || bk_foreign(be);
}

const char *bk_path(const bk_backend *be)
{
    return be->path;
}

size_t bk_max_key_size(const bk_backend *be)
{
    return be->maxkey;
}

void bk_set_failed(bk_backend *be)
{
    pthread_mutex_lock(&be->lock_mu);
    __atomic_store_n(&be->closed, 2, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&be->lock_cv);   /* bk_lock waiters see it */
    pthread_mutex_unlock(&be->lock_mu);
}
