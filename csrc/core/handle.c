/* handle.c: the backend handle's own state, which every layer asks about:
 * its references (a view or snapshot takes one; the last bk_free closes it,
 * backend.c), whether it is closed or has failed, its path and key limit. */
#include "internal.h"

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

void bk_set_failed(bk_backend *be)
{
    pthread_mutex_lock(&be->lock_mu);
    __atomic_store_n(&be->closed, 2, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&be->lock_cv);   /* bk_lock waiters see it */
    pthread_mutex_unlock(&be->lock_mu);
}
