/*
 * bolt_format.h: bbolt's on-disk layout (bbolt's page.go, db.go and
 * bucket.go), shared by the reader (bolt.c) and the writer (bolt_write.c).
 * All integers are little-endian, as on every platform etcd ships for.
 */
#ifndef BOLT_FORMAT_H
#define BOLT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define BOLT_MAGIC 0xED0CDAEDu
#define BOLT_VERSION 2
#define PAGE_HEADER 16          /* id u64, flags u16, count u16, overflow u32 */
#define ELEMENT_SIZE 16         /* leaf: flags, pos, ksize, vsize (u32 each);
                                 * branch: pos, ksize (u32), child page (u64) */
#define META_SIZE 64            /* the meta fields, after the page header: magic,
                                 * version, page size, flags (u32 each), root
                                 * bucket (root page, sequence), freelist page,
                                 * high-water mark, txid, checksum (u64 each) */
#define META_SUMMED 56          /* the checksum covers the fields before it */
#define BUCKET_HEADER 16        /* root page u64, sequence u64 */
#define NO_FREELIST UINT64_MAX  /* etcd writes no freelist (NoFreelistSync) */
#define PAGE_BRANCH 0x01
#define PAGE_LEAF 0x02
#define PAGE_META 0x04
#define PAGE_FREELIST 0x10
#define ELEMENT_BUCKET 0x01
#define MIN_PAGE_SIZE 512
#define MAX_PAGE_SIZE 65536
#define DEFAULT_PAGE_SIZE 4096  /* the OS page size etcd's files are made with */

static inline uint16_t le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The meta page checksum: FNV-1a, 64 bits, over the META_SUMMED bytes. */
static inline uint64_t fnv1a64(const unsigned char *p, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

#endif
