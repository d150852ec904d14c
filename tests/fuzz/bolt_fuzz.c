/*
 * bolt_fuzz.c: a libFuzzer target over the bbolt reader (bolt.c). Each input
 * is a whole file: it is written to one temporary file per process (unlinked
 * at once and reopened through /proc/self/fd, so nothing is left behind),
 * opened, and walked with callbacks that read every byte they are given.
 * Any outcome but BK_OK or BK_EFORMAT aborts, and so does a walk that
 * delivers more bytes than the file holds (overlapping elements, a page read
 * twice); sanitizers catch the rest, and -timeout a loop.
 *
 * libFuzzer cannot forge checksums, so before the file is written its meta
 * pages' checksums and any SHA-256 trailer are made right: mutations then
 * reach the checks behind them. (Damaged checksums are bolt_test's.)
 *
 * Seeds: corpus/bolt/, made by mkboltseeds.go.
 */
#include "bolt/bolt.h"
#include "bolt/sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct tally {
    uint32_t crc;
    size_t buckets, keys;
    uint64_t bytes;            /* bucket names, keys and values delivered */
} tally;

static int on_bucket(void *ctx, const bk_slice *path, size_t depth)
{
    tally *t = ctx;
    for (size_t i = 0; i < depth; i++)
        t->crc = bk_crc32c(t->crc, path[i].data, path[i].len);
    t->buckets++;
    t->bytes += path[depth - 1].len;
    return 0;
}

static int on_kv(void *ctx, const bk_slice *path, size_t depth, bk_slice key, bk_slice value)
{
    tally *t = ctx;
    for (size_t i = 0; i < depth; i++)
        t->crc = bk_crc32c(t->crc, path[i].data, path[i].len);
    t->crc = bk_crc32c(t->crc, key.data, key.len);
    t->crc = bk_crc32c(t->crc, value.data, value.len);
    t->keys++;
    t->bytes += key.len + value.len;
    return 0;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The FNV-1a 64 of the 56 bytes of meta fields after the page header, in
 * the 8 bytes after them. */
static void seal_meta(uint8_t *page)
{
    uint64_t h = 14695981039346656037ull;
    for (int i = 16; i < 16 + 56; i++)
        h = (h ^ page[i]) * 1099511628211ull;
    for (int i = 0; i < 8; i++)
        page[16 + 56 + i] = (uint8_t)(h >> (8 * i));
}

/* Meta 0, meta 1 where meta 0's page size puts it, and the trailer if the
 * size says there is one. */
static void seal(uint8_t *f, size_t size)
{
    const size_t meta_end = 16 + 64;
    if (size < meta_end)
        return;
    seal_meta(f);
    uint32_t ps = le32(f + 16 + 8);
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)))
        return;
    if (ps + meta_end <= size)
        seal_meta(f + ps);
    if (size % ps == BK_SHA256_SIZE) {
        bk_sha256 s;
        bk_sha256_init(&s);
        bk_sha256_update(&s, f, size - BK_SHA256_SIZE);
        bk_sha256_final(&s, f + size - BK_SHA256_SIZE);
    }
}

static void fail(const char *what)
{
    perror(what);
    abort();
}

/* The input's file, rewritten for each input. */
static const char *input_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        char tmpl[] = "/tmp/bolt_fuzz.XXXXXX";
        if ((fd = mkstemp(tmpl)) < 0 || unlink(tmpl) < 0)
            fail("bolt_fuzz: temporary file");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0)
        fail("bolt_fuzz: ftruncate");
    uint8_t *file = malloc(size ? size : 1);
    if (!file)
        fail("bolt_fuzz: malloc");
    if (size)
        memcpy(file, data, size);
    seal(file, size);
    for (size_t off = 0; off < size;) {
        ssize_t n = pwrite(fd, file + off, size - off, (off_t)off);
        if (n <= 0)
            fail("bolt_fuzz: pwrite");
        off += (size_t)n;
    }
    free(file);
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bk_error err;
    bk_bolt *b;
    int rc = bk_bolt_open(input_file(data, size), &b, &err);
    if (rc == BK_OK) {
        bk_bolt_info info;
        bk_bolt_info_get(b, &info);
        if (info.total_size > info.file_size || info.file_size != size)
            abort();
        tally t = { 0, 0, 0, 0 };
        rc = bk_bolt_walk(b, on_bucket, on_kv, &t, &err);
        bk_bolt_close(b);
        if (t.bytes > size) {
            fprintf(stderr, "bolt_fuzz: the walk delivered %llu bytes of a %zu-byte file\n",
                    (unsigned long long)t.bytes, size);
            abort();
        }
    }
    if (rc != BK_OK && rc != BK_EFORMAT) {
        fprintf(stderr, "bolt_fuzz: unexpected code %d: %s\n", rc, err.msg);
        abort();
    }
    return 0;
}
