/* CRC-32C (Castagnoli), the checksum of etcd's Backend.Hash: SSE4.2's crc32
 * instruction where the CPU has it, slicing-by-8 tables otherwise. */
#include "backend.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82f63b78u

/* Immutable after pthread_once: safe to share between threads. */
static uint32_t tables[8][256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void tables_build(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
        tables[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            tables[t][n] = (tables[t - 1][n] >> 8) ^ tables[0][tables[t - 1][n] & 0xff];
}

static uint32_t crc_soft(uint32_t c, const unsigned char *p, size_t len)
{
    pthread_once(&tables_once, tables_build);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;  /* little-endian: the running crc meets the first 4 bytes */
        c = tables[7][w & 0xff] ^ tables[6][(w >> 8) & 0xff] ^
            tables[5][(w >> 16) & 0xff] ^ tables[4][(w >> 24) & 0xff] ^
            tables[3][(w >> 32) & 0xff] ^ tables[2][(w >> 40) & 0xff] ^
            tables[1][(w >> 48) & 0xff] ^ tables[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = (c >> 8) ^ tables[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t c, const unsigned char *p, size_t len)
{
    uint64_t c64 = c;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        len -= 8;
    }
    c = (uint32_t)c64;
    while (len--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t bk_crc32c(uint32_t crc, const void *data, size_t len)
{
    uint32_t c = ~crc;
#ifdef HAVE_HW_CRC
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc_hw(c, data, len);
#endif
    return ~crc_soft(c, data, len);
}

/* For the C tests: the table path regardless of the CPU (not exported). */
__attribute__((visibility("hidden"))) uint32_t bk_crc32c_soft(uint32_t crc, const void *data,
                                                              size_t len);
uint32_t bk_crc32c_soft(uint32_t crc, const void *data, size_t len)
{
    return ~crc_soft(~crc, data, len);
}
