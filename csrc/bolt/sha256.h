/* sha256.h: SHA-256 for the trailer `etcdctl snapshot save` appends to a
 * snapshot (the digest of everything before it): nettle's, whose x86-64
 * build uses the CPU's SHA instructions (an export hashes the whole file).
 * Incremental: init, any number of updates, final. */
#ifndef SHA256_H
#define SHA256_H

#include <nettle/sha2.h>
#include <stddef.h>

#define BK_SHA256_SIZE SHA256_DIGEST_SIZE

typedef struct sha256_ctx bk_sha256;

static inline void bk_sha256_init(bk_sha256 *s)
{
    sha256_init(s);
}

static inline void bk_sha256_update(bk_sha256 *s, const void *data, size_t len)
{
    sha256_update(s, len, data);
}

static inline void bk_sha256_final(bk_sha256 *s, unsigned char out[BK_SHA256_SIZE])
{
    sha256_digest(s, BK_SHA256_SIZE, out);
}

#endif
