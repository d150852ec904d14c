/* sha256.h: SHA-256 (FIPS 180-4), for the trailer `etcdctl snapshot save`
 * appends to a snapshot (the digest of everything before it). Incremental:
 * init, any number of updates, final. */
#ifndef SHA256_H
#define SHA256_H

#include <stddef.h>
#include <stdint.h>

#define BK_SHA256_SIZE 32

typedef struct bk_sha256 {
    uint32_t state[8];
    uint64_t total;            /* bytes hashed so far */
    unsigned char block[64];   /* a partial block */
    size_t used;               /* bytes in block */
} bk_sha256;

void bk_sha256_init(bk_sha256 *s);
void bk_sha256_update(bk_sha256 *s, const void *data, size_t len);
void bk_sha256_final(bk_sha256 *s, unsigned char out[BK_SHA256_SIZE]);

#endif
