/* bolt_test.c: the bbolt reader, importer and writer (bolt.c,
 * bolt_import.c, bolt_write.c) and SHA-256. Real etcd 3.4 files come from spec/fixtures/etcd (relative
 * to the repository, where `make ctest` runs): their
 * import must match what `etcdctl snapshot status` printed for them. Hostile
 * files are made here, from tiny.db or from scratch, and each must fail with
 * BK_EFORMAT and a message saying what is wrong, and leave no import behind.
 * Exports are read back with the reader and checked page by page as bbolt's
 * tx.Check() does. */
#include "test.h"
#include "bolt/bolt.h"
#include "bolt/sha256.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#define FIXTURES "spec/fixtures/etcd"
#define PS 4096                /* the fixtures' page size */
#define TINY_DATA (5 * PS)     /* tiny.db without its SHA-256 trailer */

/* ---- files ---- */

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;   /* JSON is read as a string */
        *len = (size_t)n;
    }
    return buf;
}

static void write_all(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;
    if (f && fclose(f))
        ok = 0;
    if (!ok) {
        perror(path);
        exit(2);
    }
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t json_number(const char *json, const char *field)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", field);
    const char *p = strstr(json, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

/* ---- little-endian writers, for building pages ---- */

/* x as n little-endian bytes at p. */
static void put(unsigned char *p, uint64_t x, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(x >> (8 * i));
}

/* Recomputes the checksum of the meta page at off (FNV-1a 64 over the 56
 * bytes of fields), after a test changed a field. */
static void meta_seal(unsigned char *file, size_t off)
{
    unsigned char *m = file + off + 16;
    uint64_t h = 14695981039346656037ull;
    for (int i = 0; i < 56; i++)
        h = (h ^ m[i]) * 1099511628211ull;
    put(m + 56, h, 8);
}

static void meta_write(unsigned char *file, uint32_t ps, int which, uint64_t root,
                       uint64_t high_water, uint64_t txid)
{
    unsigned char *p = file + (size_t)which * ps;
    memset(p, 0, 16 + 64);
    put(p, (uint64_t)which, 8);
    put(p + 8, 0x04, 2);
    put(p + 16, 0xED0CDAEDu, 4);
    put(p + 20, 2, 4);
    put(p + 24, ps, 4);
    put(p + 32, root, 8);
    put(p + 48, UINT64_MAX, 8);   /* no freelist, as etcd writes */
    put(p + 56, high_water, 8);
    put(p + 64, txid, 8);
    meta_seal(file, (size_t)which * ps);
}

typedef struct elem {
    const char *key;
    uint32_t flags;            /* leaf: 1 for a bucket */
    const void *value;         /* leaf */
    size_t vlen;
    uint64_t child;            /* branch: the child page */
} elem;

/* A branch or leaf page (id 0 for an inline leaf): header, elements, then
 * each key (and value). Returns the bytes used. */
static size_t node_write(unsigned char *p, uint64_t id, int branch, const elem *e, int n)
{
    size_t data = 16 + (size_t)n * 16;
    put(p, id, 8);
    put(p + 8, branch ? 0x01 : 0x02, 2);
    put(p + 10, (uint16_t)n, 2);
    put(p + 12, 0, 4);
    for (int i = 0; i < n; i++) {
        unsigned char *el = p + 16 + (size_t)i * 16, *sizes = branch ? el : el + 4;
        size_t klen = strlen(e[i].key);
        if (branch) {
            put(el + 8, e[i].child, 8);
        } else {
            put(el, e[i].flags, 4);
            put(sizes + 8, (uint32_t)e[i].vlen, 4);
        }
        put(sizes, (uint32_t)(data - (size_t)(el - p)), 4);
        put(sizes + 4, (uint32_t)klen, 4);
        memcpy(p + data, e[i].key, klen);
        if (e[i].vlen)
            memcpy(p + data + klen, e[i].value, e[i].vlen);
        data += klen + e[i].vlen;
    }
    return data;
}

#define LEAF 0
#define BRANCH 1

/* An inline bucket's value: a bucket header with root 0, then its leaf. */
static size_t inline_bucket(unsigned char *out, const elem *e, int n)
{
    memset(out, 0, 16);
    return 16 + node_write(out + 16, 0, LEAF, e, n);
}

/* ---- what etcdctl snapshot status computes (clientv3/snapshot, Status) ---- */

typedef struct status {
    uint32_t hash;
    uint64_t buckets, keys;
    int64_t revision;          /* main revision of the last key of "key" */
    size_t max_depth;
    uint64_t bytes;            /* of the keys and values delivered */
    uint64_t limit;            /* stop past this many bytes (0: never) */
} status;

#define PAST_LIMIT (-1)        /* status_kv's code: the walk passed st.limit */

static int status_bucket(void *ctx, const bk_slice *path, size_t depth)
{
    status *s = ctx;
    s->hash = bk_crc32c(s->hash, path[depth - 1].data, path[depth - 1].len);
    s->buckets++;
    if (depth > s->max_depth)
        s->max_depth = depth;
    return 0;
}

static int status_kv(void *ctx, const bk_slice *path, size_t depth, bk_slice key,
                     bk_slice value)
{
    status *s = ctx;
    s->hash = bk_crc32c(s->hash, key.data, key.len);
    s->hash = bk_crc32c(s->hash, value.data, value.len);
    s->keys++;
    s->bytes += key.len + value.len;
    if (s->limit && s->bytes > s->limit)
        return PAST_LIMIT;
    /* etcd's bytesToRev: 8 bytes big-endian main revision, '_', 8 bytes sub. */
    if (depth == 1 && path[0].len == 3 && !memcmp(path[0].data, "key", 3) && key.len >= 17) {
        const unsigned char *k = key.data;
        uint64_t main_rev = 0;
        for (int i = 0; i < 8; i++)
            main_rev = main_rev << 8 | k[i];
        s->revision = (int64_t)main_rev;
    }
    return 0;
}

static int stop_after_three(void *ctx, const bk_slice *path, size_t depth, bk_slice key,
                            bk_slice value)
{
    (void)path, (void)depth, (void)key, (void)value;
    return ++*(int *)ctx == 3 ? 42 : 0;
}

static void cfg_for(bk_config *cfg, const char *path)
{
    bk_config_default(cfg);
    cfg->path = path;
    cfg->no_fsync = 1;
    cfg->mmap_size = (uint64_t)1 << 22;   /* small: the import grows it */
}

/* ---- SHA-256 ---- */

static int sha_is(const void *data, size_t len, const char *hex)
{
    unsigned char sum[BK_SHA256_SIZE];
    char got[2 * BK_SHA256_SIZE + 1];
    bk_sha256 s;
    bk_sha256_init(&s);
    bk_sha256_update(&s, data, len);
    bk_sha256_final(&s, sum);
    for (int i = 0; i < BK_SHA256_SIZE; i++)
        snprintf(got + 2 * i, 3, "%02x", sum[i]);
    return !strcmp(got, hex);
}

static void test_sha256(void)
{
    /* FIPS 180-4's examples (NIST CSRC) and the long-message vector. */
    CHECK(sha_is("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    CHECK(sha_is("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(sha_is(m448, strlen(m448),
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    CHECK(sha_is(m896, strlen(m896),
                 "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
    size_t n = 1000000;
    char *million = malloc(n);
    if (!CHECK(million))
        return;
    memset(million, 'a', n);
    CHECK(sha_is(million, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    /* Fed in uneven pieces, across block boundaries: the same digest. */
    unsigned char whole[BK_SHA256_SIZE], pieces[BK_SHA256_SIZE];
    bk_sha256 s;
    bk_sha256_init(&s);
    bk_sha256_update(&s, million, 1000);
    bk_sha256_final(&s, whole);
    bk_sha256_init(&s);
    size_t off = 0;
    for (size_t step = 1; off < 1000; step = step * 7 % 130 + 1) {
        size_t take = step < 1000 - off ? step : 1000 - off;
        bk_sha256_update(&s, million + off, take);
        off += take;
    }
    bk_sha256_final(&s, pieces);
    CHECK(!memcmp(whole, pieces, sizeof whole));
    /* Message lengths around the padding boundary (55, 56, 63, 64 bytes). */
    CHECK(sha_is(million, 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"));
    CHECK(sha_is(million, 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"));
    CHECK(sha_is(million, 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"));
    free(million);
}

/* ---- the fixtures ---- */

static char *fixture(const char *name)
{
    char *p = malloc(strlen(FIXTURES) + strlen(name) + 2);
    if (!p)
        exit(2);
    sprintf(p, "%s/%s", FIXTURES, name);
    return p;
}

static void test_fixture(const char *name)
{
    bk_error err;
    char db[64], json_name[64];
    snprintf(db, sizeof db, "%s.db", name);
    snprintf(json_name, sizeof json_name, "%s.status.json", name);
    char *src = fixture(db), *json_path = fixture(json_name);
    size_t json_len;
    char *json = (char *)read_all(json_path, &json_len);
    if (!CHECK(json))
        goto out;
    uint64_t want_hash = json_number(json, "hash"), want_rev = json_number(json, "revision");
    uint64_t want_keys = json_number(json, "totalKey"), want_size = json_number(json, "totalSize");

    bk_bolt *b;
    if (!CHECK_OK(bk_bolt_open(src, &b, &err)))
        goto out;
    bk_bolt_info info;
    bk_bolt_info_get(b, &info);
    CHECK(info.page_size == PS);
    CHECK(info.sha256_trailer == 1);
    CHECK(info.total_size == want_size);
    CHECK(info.file_size == want_size + 32);
    status st = { 0, 0, 0, -1, 0, 0, 0 };
    CHECK_OK(bk_bolt_walk(b, status_bucket, status_kv, &st, &err));
    CHECK(st.bytes <= info.file_size);
    CHECK(st.hash == want_hash);
    CHECK(st.keys == want_keys);
    CHECK(st.revision >= 0 && (uint64_t)st.revision == want_rev);
    CHECK(st.max_depth == 1);
    int seen = 0;
    CHECK(bk_bolt_walk(b, NULL, stop_after_three, &seen, &err) == 42 && seen == 3);
    bk_bolt_close(b);

    char dst_name[64];
    snprintf(dst_name, sizeof dst_name, "%s.imported", name);
    const char *dst = tmp_path(dst_name);
    bk_config cfg;
    cfg_for(&cfg, dst);
    bk_bolt_import_stats is;
    double t0 = now();
    if (CHECK_OK(bk_bolt_import(src, &cfg, &is, &err))) {
        CHECK(is.hash == want_hash);
        CHECK(is.keys == want_keys);
        CHECK(is.buckets == st.buckets);
        bk_backend *be;
        uint32_t hash = 0;
        if (CHECK_OK(bk_open(&cfg, &be, &err))) {
            CHECK_OK(bk_hash(be, NULL, 0, &hash, &err));
            CHECK_OK(bk_close(be, 0, &err));
            bk_free(be);
        }
        CHECK(hash == want_hash);
        printf("%s: hash %08x (status.json %08llx), revision %lld (%llu), total keys %llu (%llu), "
               "total size %llu (%llu); imported %llu buckets, %llu keys, %llu bytes in %.2f s\n",
               name, hash, (unsigned long long)want_hash, (long long)st.revision,
               (unsigned long long)want_rev, (unsigned long long)is.keys,
               (unsigned long long)want_keys, (unsigned long long)info.total_size,
               (unsigned long long)want_size, (unsigned long long)is.buckets,
               (unsigned long long)is.keys, (unsigned long long)is.bytes, now() - t0);
    }
    /* A second import must not touch the first. */
    CHECK_CODE(bk_bolt_import(src, &cfg, NULL, &err), BK_EARG);
    CHECK(strstr(err.msg, "exists"));
    CHECK(exists(dst));
out:
    free(json);
    free(src);
    free(json_path);
}

/* ---- hostile files ---- */

#define EXPECT_BAD(name, data, len, needle) expect_bad(name, data, len, needle, __LINE__)
#define EXPECT_REFUSED(path, code, needle) expect_refused(path, code, needle, __LINE__)

/* The import of path fails with code and a message holding needle, and
 * leaves nothing at its destination. */
static void expect_refused(const char *path, int code, const char *needle, int line)
{
    bk_error err = { 0, "" };
    char what[sizeof err.msg + 128], lock[PATH_MAX + 8];
    bk_config cfg;
    snprintf(lock, sizeof lock, "%s.imported", path);
    cfg_for(&cfg, tmp_path(strrchr(lock, '/') + 1));
    snprintf(lock, sizeof lock, "%s-lock", cfg.path);
    int rc = bk_bolt_import(path, &cfg, NULL, &err);
    snprintf(what, sizeof what, "import of %s: code %d, message \"%s\", files left: %d "
             "(want %d, \"%s\")", path, rc, rc ? err.msg : "", exists(cfg.path) + exists(lock),
             code, needle);
    t_check(rc == code && strstr(err.msg, needle) && !exists(cfg.path) && !exists(lock),
            what, __FILE__, line);
}

/* Open and walk fail with BK_EFORMAT and a message holding needle, and so
 * does the import. */
static void expect_bad(const char *name, const void *data, size_t len, const char *needle,
                       int line)
{
    bk_error err = { 0, "" };
    char what[sizeof err.msg + 128];
    const char *path = tmp_path(name);
    write_all(path, data, len);
    bk_bolt *b;
    int rc = bk_bolt_open(path, &b, &err);
    if (rc == BK_OK) {
        /* A walk never delivers more than the file holds: past that it is
         * stopped here, failing the test, rather than run for hours. */
        status st = { 0, 0, 0, -1, 0, 0, len };
        rc = bk_bolt_walk(b, status_bucket, status_kv, &st, &err);
        bk_bolt_close(b);
    }
    printf("  %-22s %s\n", name, rc ? err.msg : "(no error)");
    snprintf(what, sizeof what, "%s: code %d, message \"%s\" (want EFORMAT, \"%s\")", name, rc,
             rc ? err.msg : "", needle);
    if (t_check(rc == BK_EFORMAT && strstr(err.msg, needle), what, __FILE__, line))
        expect_refused(path, BK_EFORMAT, needle, line);
}

/* Byte offsets in tiny.db: page 3 is the root leaf of the top-level bucket;
 * its element 0 is bucket "alarm" (inline), element 1 "auth". */
#define ROOT (3 * PS)
#define ELEM(i) (ROOT + 16 + 16 * (i))
#define ALARM_VALUE (ELEM(0) + 160 + 5)
#define META(field) (16 + (field))   /* in both meta pages, checksums redone */

/* One field of tiny.db (without its trailer) changed, and what must be said. */
typedef struct patch {
    const char *name;
    size_t off;
    uint64_t value;
    int size;
    int in_metas;
    const char *needle;
} patch;

static const patch patches[] = {
    { "root-past-hwm", META(16), 99, 8, 1,
      "page id 99 at file offset 32 is outside the data pages 2..4" },
    { "hwm-past-file", META(40), 1000, 8, 1, "high-water mark 1000 pages is past the end" },
    { "page-size", META(8), 1000, 4, 1, "page size 1000 is not a power of two" },
    { "element-past-page", ELEM(0) + 4, 5000, 4, 0, "page 3, element 0 of 10 (file offset "
      "12304): its 5-byte key and 32-byte value at +5000 run past the page's 4096 bytes" },
    { "count-too-big", ROOT + 10, 300, 2, 0, "300 elements do not fit in the page" },
    { "page-type", ROOT + 8, 0x10, 2, 0, "has flags 0x10: not a branch" },
    { "page-id", ROOT, 7, 8, 0, "page 3 (file offset 12288) says it is page 7" },
    { "overflow", ROOT + 12, 10, 4, 0, "10 overflow pages run past the high-water mark" },
    /* "auth" -> "aath", below "alarm" */
    { "keys-unsorted", ELEM(1) + 181 + 1, 'a', 1, 0,
      "key \"aath\" is not above the key before it in its bucket, \"alarm\"" },
    { "element-flags", ELEM(0), 3, 4, 0, "unknown flags 0x3" },
    { "empty-key", ELEM(0) + 8, 0, 4, 0, "element 0 of 10 (file offset 12304): an empty key" },
    { "bucket-header", ELEM(0) + 12, 8, 4, 0, "bucket \"alarm\" at file offset 12469: its "
      "value has 8 bytes, less than a bucket header" },
    { "inline-not-leaf", ALARM_VALUE + 16 + 8, 0x01, 2, 0,
      "inline bucket \"alarm\" at file offset 12469: no leaf page" },
    { "inline-count", ALARM_VALUE + 16 + 10, 2, 2, 0,
      "an inline bucket's page (file offset 12485): 2 elements do not fit" },
    { "bucket-root-meta", ALARM_VALUE, 1, 8, 0,
      "the page id 1 at file offset 12469 is outside the data pages 2..4" },
    { "bucket-root-cycle", ALARM_VALUE, 3, 8, 0, "page 3 (file offset 12288), referenced "
      "at file offset 12469, is reached a second time" },
    /* "auth"'s key moved onto "alarm"'s ("alar" would fail the key order
     * after: the overlap is found first), and "alarm"'s into the array. */
    { "elements-overlap", ELEM(1) + 4, 144, 4, 0, "page 3, element 1 of 10 (file offset "
      "12320): its data at page offset 176 overlaps the element before it (which ends at "
      "page offset 213): the page is damaged" },
    { "element-in-array", ELEM(0) + 4, 0, 4, 0, "page 3, element 0 of 10 (file offset "
      "12304): its data at page offset 16 overlaps the element array (which ends at page "
      "offset 176)" },
};

static void test_hostile_tiny(void)
{
    bk_error err;
    size_t len;
    char *src = fixture("tiny.db");
    unsigned char *tiny = read_all(src, &len);
    free(src);
    if (!CHECK(tiny && len == TINY_DATA + 32))
        goto out;
    unsigned char *f = malloc(len);
    if (!CHECK(f))
        goto out;
#define FRESH() memcpy(f, tiny, len)

    EXPECT_BAD("empty", f, 0, "empty file");
    uint64_t x = 88172645463325252ull;   /* xorshift64 */
    for (size_t i = 0; i < TINY_DATA; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        f[i] = (unsigned char)x;
    }
    EXPECT_BAD("random", f, TINY_DATA, "both meta pages are damaged");
    FRESH();
    EXPECT_BAD("short", f, 50, "too short");
    EXPECT_BAD("truncated-page", f, 4 * PS, "past the end of the file");
    EXPECT_BAD("truncated-odd", f, 20000, "not a multiple of the page size");

    /* The trailer: a flipped byte in the data, or in the trailer itself. */
    f[ROOT + 600] ^= 1;
    EXPECT_BAD("sha256-data", f, len, "SHA-256 trailer mismatch");
    FRESH();
    f[len - 1] ^= 0x80;
    EXPECT_BAD("sha256-trailer", f, len, "SHA-256 trailer mismatch");
    FRESH();

    /* Without its trailer tiny.db is a live db file: the same data. */
    const char *live = tmp_path("tiny-live.db");
    write_all(live, f, TINY_DATA);
    bk_bolt *b;
    status full = { 0, 0, 0, -1, 0, 0, 0 }, trimmed = { 0, 0, 0, -1, 0, 0, 0 };
    if (CHECK_OK(bk_bolt_open(live, &b, &err))) {
        bk_bolt_info info;
        bk_bolt_info_get(b, &info);
        CHECK(!info.sha256_trailer && info.file_size == TINY_DATA);
        CHECK(info.total_size == TINY_DATA);
        CHECK_OK(bk_bolt_walk(b, status_bucket, status_kv, &trimmed, &err));
        bk_bolt_close(b);
    }
    const char *whole = tmp_path("tiny-whole.db");
    write_all(whole, f, len);
    if (CHECK_OK(bk_bolt_open(whole, &b, &err))) {
        CHECK_OK(bk_bolt_walk(b, status_bucket, status_kv, &full, &err));
        bk_bolt_close(b);
    }
    CHECK(full.hash == trimmed.hash && full.keys == 14 && trimmed.keys == 14);

    /* From here on without the trailer, so the damage itself is found. */
    f[META(40)] ^= 1;   /* meta 0's high-water mark: its checksum fails */
    const char *flipped = tmp_path("meta0-flipped");
    write_all(flipped, f, TINY_DATA);
    if (CHECK_OK(bk_bolt_open(flipped, &b, &err))) {
        /* bbolt falls back to the other meta page, and so do we. */
        bk_bolt_info info;
        bk_bolt_info_get(b, &info);
        CHECK(info.meta == 1 && info.txid == 7 && !info.sha256_trailer);
        bk_bolt_close(b);
    }
    f[PS + META(48)] ^= 1;   /* meta 1's txid */
    EXPECT_BAD("both-metas-flipped", f, TINY_DATA, "meta 1 at offset 4096: checksum");
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        const patch *pt = &patches[i];
        FRESH();
        for (int m = 0; m < (pt->in_metas ? 2 : 1); m++) {
            put(f + m * PS + pt->off, pt->value, pt->size);
            if (pt->in_metas)
                meta_seal(f, (size_t)m * PS);
        }
        EXPECT_BAD(pt->name, f, TINY_DATA, pt->needle);
    }

    /* The root page as a branch page. */
    FRESH();
    elem self[1] = { { "a", 0, NULL, 0, 3 } };
    elem shared[2] = { { "a", 0, NULL, 0, 4 }, { "b", 0, NULL, 0, 4 } };
    node_write(f + ROOT, 3, BRANCH, self, 1);
    EXPECT_BAD("cycle", f, TINY_DATA, "page 3 (file offset 12288), referenced at file "
               "offset 12312, is reached a second time");
    node_write(f + ROOT, 3, BRANCH, shared, 2);
    EXPECT_BAD("shared-page", f, TINY_DATA, "page 4 (file offset 16384), referenced at "
               "file offset 12328, is reached a second time");
    elem unsorted[2] = { { "b", 0, NULL, 0, 4 }, { "a", 0, NULL, 0, 2 } };
    node_write(f + ROOT, 3, BRANCH, unsorted, 2);
    EXPECT_BAD("branch-unsorted", f, TINY_DATA, "branch key \"a\" is not above");
    /* Element 1's key "b" is the last byte of element 0's "ab". */
    elem overlapping[2] = { { "ab", 0, NULL, 0, 4 }, { "b", 0, NULL, 0, 2 } };
    node_write(f + ROOT, 3, BRANCH, overlapping, 2);
    put(f + ROOT + 32, 49 - 32, 4);
    EXPECT_BAD("branch-overlap", f, TINY_DATA, "page 3, element 1 of 2 (file offset 12320): "
               "its data at page offset 49 overlaps the element before it (which ends at "
               "page offset 50)");
#undef FRESH
    free(f);
out:
    free(tiny);
}

/* ---- files made from scratch ---- */

/* Records the walk as text: "B path" and "K path key=value" lines. */
typedef struct recorder {
    char log[512];
} recorder;

static void record_path(recorder *r, const bk_slice *path, size_t depth)
{
    for (size_t i = 0; i < depth; i++) {
        size_t used = strlen(r->log);
        snprintf(r->log + used, sizeof r->log - used, "/%.*s", (int)path[i].len,
                 (const char *)path[i].data);
    }
}

static int record_bucket(void *ctx, const bk_slice *path, size_t depth)
{
    recorder *r = ctx;
    strncat(r->log, "B", sizeof r->log - strlen(r->log) - 1);
    record_path(r, path, depth);
    strncat(r->log, ";", sizeof r->log - strlen(r->log) - 1);
    return 0;
}

static int record_kv(void *ctx, const bk_slice *path, size_t depth, bk_slice key,
                     bk_slice value)
{
    recorder *r = ctx;
    strncat(r->log, "K", sizeof r->log - strlen(r->log) - 1);
    record_path(r, path, depth);
    size_t used = strlen(r->log);
    snprintf(r->log + used, sizeof r->log - used, " %.*s=%zu;", (int)key.len,
             (const char *)key.data, value.len);
    return 0;
}

static int walk_log(const char *path, char *log, size_t size)
{
    bk_error err;
    bk_bolt *b;
    recorder r = { "" };
    int rc = bk_bolt_open(path, &b, &err);
    if (!rc) {
        rc = bk_bolt_walk(b, record_bucket, record_kv, &r, &err);
        bk_bolt_close(b);
    }
    snprintf(log, size, "%s", rc ? err.msg : r.log);
    return rc;
}

#define EXPECT_WALK(path, data, len, want) expect_walk(path, data, len, want, __LINE__)

/* Writes the file at path; its walk must record want. */
static void expect_walk(const char *path, const void *data, size_t len, const char *want,
                        int line)
{
    char log[512], what[1200];
    write_all(path, data, len);
    int rc = walk_log(path, log, sizeof log);
    snprintf(what, sizeof what, "walk of %s: \"%s\" (want \"%s\")", path, log, want);
    t_check(rc == BK_OK && !strcmp(log, want), what, __FILE__, line);
}

/* A file of `pages` pages whose metas name page 2 as the root. */
static unsigned char *scratch(uint64_t pages)
{
    unsigned char *f = calloc(pages, PS);
    if (!f)
        exit(2);
    meta_write(f, PS, 0, 2, pages, 2);
    meta_write(f, PS, 1, 2, pages, 1);
    return f;
}

/* A bucket "big" in pages 3..7 (a branch, a leaf with two overflow pages and
 * a leaf) and an inline bucket "small". */
static void test_scratch_tree(void)
{
    bk_error err;
    unsigned char *f = scratch(8), hdr[16] = { 0 }, big[5000], small[128];
    memset(big, 'x', sizeof big);
    put(hdr, 3, 8);
    elem sk[1] = { { "k", 0, "v", 1, 0 } };
    elem top[2] = { { "big", 1, hdr, 16, 0 },
                    { "small", 1, small, inline_bucket(small, sk, 1), 0 } };
    node_write(f + 2 * PS, 2, LEAF, top, 2);
    elem children[2] = { { "a", 0, NULL, 0, 4 }, { "m", 0, NULL, 0, 7 } };
    node_write(f + 3 * PS, 3, BRANCH, children, 2);
    elem left[2] = { { "a", 0, "1", 1, 0 }, { "b", 0, big, sizeof big, 0 } };
    node_write(f + 4 * PS, 4, LEAF, left, 2);
    put(f + 4 * PS + 12, 2, 4);   /* overflow: pages 5 and 6 */
    elem right[2] = { { "m", 0, "2", 1, 0 }, { "n", 0, "", 0, 0 } };
    node_write(f + 7 * PS, 7, LEAF, right, 2);
    const char *path = tmp_path("tree.db");
    EXPECT_WALK(path, f, 8 * PS,
                "B/big;K/big a=1;K/big b=5000;K/big m=1;K/big n=0;B/small;K/small k=1;");

    bk_config cfg;
    cfg_for(&cfg, tmp_path("tree.imported"));
    bk_bolt_import_stats st;
    if (CHECK_OK(bk_bolt_import(path, &cfg, &st, &err)))
        CHECK(st.buckets == 2 && st.keys == 5 && st.bytes == 5 + 5000 + 3);

    /* A branch key between the children's: the order is checked across pages. */
    node_write(f + 7 * PS, 7, LEAF, left, 1);
    write_all(path, f, 8 * PS);
    char log[512];
    CHECK_CODE(walk_log(path, log, sizeof log), BK_EFORMAT);
    CHECK(strstr(log, "page 7, element 0 of 1 (file offset 28688): key \"a\" is not above "
                  "the key before it in its bucket, \"b\""));
    free(f);
}

static void test_scratch_nested(void)
{
    unsigned char *f = scratch(3), inner[128], outer[256];
    elem in[1] = { { "k", 0, "v", 1, 0 } };
    elem out[2] = { { "b", 1, inner, inline_bucket(inner, in, 1), 0 }, { "z", 0, "1", 1, 0 } };
    elem top[1] = { { "a", 1, outer, inline_bucket(outer, out, 2), 0 } };
    node_write(f + 2 * PS, 2, LEAF, top, 1);
    const char *path = tmp_path("nested.db");
    EXPECT_WALK(path, f, 3 * PS, "B/a;B/a/b;K/a/b k=1;K/a z=1;");
    EXPECT_REFUSED(path, BK_EFORMAT, "bucket \"a\" holds a nested bucket \"b\"");

    /* A plain key at the top level: walked with an empty path, not imported. */
    elem plain[1] = { { "x", 0, "y", 1, 0 } };
    node_write(f + 2 * PS, 2, LEAF, plain, 1);
    EXPECT_WALK(path, f, 3 * PS, "K x=1;");
    EXPECT_REFUSED(path, BK_EFORMAT, "the top-level key \"x\" is not a bucket");

    /* A key the backend cannot hold: the import fails half-way, cleanly. */
    char long_key[600];
    unsigned char value[700];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    elem lk[2] = { { "a", 0, "1", 1, 0 }, { long_key, 0, "", 0, 0 } };
    elem key_bucket[1] = { { "key", 1, value, inline_bucket(value, lk, 2), 0 } };
    node_write(f + 2 * PS, 2, LEAF, key_bucket, 1);
    write_all(path, f, 3 * PS);
    EXPECT_REFUSED(path, BK_EARG, "nested.db: bucket \"key\", key \"kkkkkkkkkk");
    free(f);
}

/* Both metas name page id as the freelist. */
static void set_freelist(unsigned char *f, uint64_t id)
{
    for (int m = 0; m < 2; m++) {
        put(f + m * PS + META(32), id, 8);
        meta_seal(f, (size_t)m * PS);
    }
}

static void test_scratch_freelist(void)
{
    unsigned char *f = scratch(4), empty[32];
    elem top[1] = { { "a", 1, empty, inline_bucket(empty, NULL, 0), 0 } };
    node_write(f + 2 * PS, 2, LEAF, top, 1);
    put(f + 3 * PS, 3, 8);
    put(f + 3 * PS + 8, 0x10, 2);
    set_freelist(f, 3);
    EXPECT_WALK(tmp_path("freelist.db"), f, 4 * PS, "B/a;");
    set_freelist(f, 2);   /* the root leaf */
    EXPECT_BAD("freelist-type", f, 4 * PS, "meta 0's freelist page 2 (file offset 8192) has "
               "flags 0x02, not a freelist page's 0x10");
    free(f);
}

/* A chain of one-child branch pages deeper than any real tree. */
static void test_scratch_deep(void)
{
    enum { DEPTH = 105 };
    unsigned char *f = scratch(DEPTH + 3);
    for (uint64_t id = 2; id < DEPTH + 2; id++) {
        elem child[1] = { { "a", 0, NULL, 0, id + 1 } };
        node_write(f + id * PS, id, BRANCH, child, 1);
    }
    elem leaf[1] = { { "a", 0, "1", 1, 0 } };
    node_write(f + (DEPTH + 2) * (size_t)PS, DEPTH + 2, LEAF, leaf, 1);
    EXPECT_BAD("deep", f, (DEPTH + 3) * (size_t)PS, "page 103 (file offset 421888) is more "
               "than 100 pages below the top-level root");
    free(f);
}

/* Issue 9's attack: a 3 MB file whose bucket has one leaf page of 65535
 * elements, element i's key the i + 1 bytes (all 1, so the keys ascend)
 * before a 2 MiB value they all share. Read as it says, its walk delivers
 * 137 GB and its import writes as much. */
static void test_scratch_overlap(void)
{
    enum { N = 65535 };
    const size_t keys_end = 16 + (size_t)N * 16 + N, value = (size_t)2 << 20;
    const uint64_t leaf_pages = (keys_end + value + PS - 1) / PS;
    unsigned char *f = scratch(3 + leaf_pages), root[16] = { 0 };
    put(root, 3, 8);
    elem top[1] = { { "b", 1, root, sizeof root, 0 } };
    node_write(f + 2 * PS, 2, LEAF, top, 1);
    unsigned char *p = f + 3 * PS;
    put(p, 3, 8);
    put(p + 8, 0x02, 2);
    put(p + 10, N, 2);
    put(p + 12, leaf_pages - 1, 4);   /* overflow */
    for (size_t i = 0; i < N; i++) {
        unsigned char *el = p + 16 + i * 16;
        size_t key = keys_end - (i + 1);
        put(el + 4, key - (size_t)(el - p), 4);
        put(el + 8, i + 1, 4);
        put(el + 12, leaf_pages * PS - keys_end, 4);
        p[key] = 1;
    }
    EXPECT_BAD("overlap-amplified", f, (3 + leaf_pages) * PS, "page 3, element 1 of 65535 "
               "(file offset 12320): its data at page offset 1114109 overlaps the element "
               "before it (which ends at page offset 3211264)");
    free(f);
}

static void test_misc(void)
{
    bk_error err;
    bk_bolt *b;
    CHECK_CODE(bk_bolt_open("/nonexistent/bolt.db", &b, &err), BK_EIO);
    CHECK(strstr(err.msg, "No such file"));
    const char *dir = tmp_path("a-directory");
    CHECK(mkdir(dir, 0700) == 0);
    CHECK_CODE(bk_bolt_open(dir, &b, &err), BK_EFORMAT);
    CHECK(strstr(err.msg, "not a regular file"));
    bk_config cfg;
    cfg_for(&cfg, tmp_path("ro.imported"));
    cfg.readonly = 1;
    CHECK_CODE(bk_bolt_import(dir, &cfg, NULL, &err), BK_EARG);

    /* A writer's lock, as a running etcd (bbolt) holds on its db. */
    const char *locked = tmp_path("locked.db");
    write_all(locked, "x", 1);
    int fd = open(locked, O_RDONLY);
    if (CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0)) {
        CHECK_CODE(bk_bolt_open(locked, &b, &err), BK_EBUSY);
        CHECK(strstr(err.msg, "open for writing"));
    }
    if (fd >= 0)
        close(fd);
}

/* ---- export ---- */

static uint64_t get(const unsigned char *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = x << 8 | p[i];
    return x;
}

/* What a page-by-page check of an exported file found: tx.Check()'s rules
 * (every page below the high-water mark reachable from the root or on the
 * freelist, exactly once) and what the layout holds. */
typedef struct layout {
    const unsigned char *f;
    size_t size;
    uint64_t high_water, root, freelist;
    unsigned char *seen;       /* times each page was reached or freed */
    uint64_t leaf_pages, branch_pages, overflow_pages, inline_buckets, free_pages;
    uint64_t full_pages;       /* leaf and branch pages that are not a level's last */
    uint64_t page_bytes;       /* used by those pages' headers, elements and data */
    char why[256];             /* the first fault; "" if none */
} layout;

static void fault(layout *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fault(layout *l, const char *fmt, ...)
{
    if (l->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->why, sizeof l->why, fmt, ap);
    va_end(ap);
}

static void reach(layout *l, uint64_t id, uint64_t pages)
{
    for (uint64_t p = id; p < id + pages; p++) {
        if (p >= l->high_water)
            fault(l, "page %llu past the high-water mark", (unsigned long long)p);
        else if (l->seen[p]++)
            fault(l, "page %llu reached twice", (unsigned long long)p);
    }
}

/* Checks the tree from page id down, nested buckets included. */
static void layout_tree(layout *l, uint64_t id, int depth)
{
    if (id < 3 || id >= l->high_water || depth > 64) {
        fault(l, "page id %llu out of place", (unsigned long long)id);
        return;
    }
    const unsigned char *p = l->f + id * PS;
    uint64_t flags = get(p + 8, 2), count = get(p + 10, 2), overflow = get(p + 12, 4);
    if (get(p, 8) != id || (flags != 1 && flags != 2)) {
        fault(l, "page %llu: id %llu, flags %llu", (unsigned long long)id,
              (unsigned long long)get(p, 8), (unsigned long long)flags);
        return;
    }
    reach(l, id, overflow + 1);
    l->overflow_pages += overflow;
    *(flags == 1 ? &l->branch_pages : &l->leaf_pages) += 1;
    uint64_t used = 16 + count * 16;
    for (uint64_t i = 0; i < count && !l->why[0]; i++) {
        const unsigned char *e = p + 16 + i * 16;
        if (flags == 1) {
            used += get(e + 4, 4);
            layout_tree(l, get(e + 8, 8), depth + 1);
            continue;
        }
        uint64_t klen = get(e + 8, 4), vlen = get(e + 12, 4);
        used += klen + vlen;
        if (get(e, 4) & 1) {   /* a bucket: its own tree, or inline */
            const unsigned char *v = e + get(e + 4, 4) + klen;
            if (get(v, 8))
                layout_tree(l, get(v, 8), depth + 1);
            else
                l->inline_buckets++;
        }
    }
    if (used > (overflow + 1) * PS)
        fault(l, "page %llu: %llu bytes in %llu pages", (unsigned long long)id,
              (unsigned long long)used, (unsigned long long)overflow + 1);
    l->page_bytes += used;
}

/* Reads the file at path and checks it; 1 if it passes. */
static int layout_check(const char *path, int trailer, layout *l)
{
    memset(l, 0, sizeof *l);
    unsigned char *f = read_all(path, &l->size);
    l->f = f;
    if (!f) {
        fault(l, "cannot read %s", path);
        return 0;
    }
    l->high_water = get(f + 16 + 40, 8);
    l->root = get(f + 16 + 16, 8);
    l->freelist = get(f + 16 + 32, 8);
    if (l->size != l->high_water * PS + (trailer ? BK_SHA256_SIZE : 0) ||
        !(l->seen = calloc(l->high_water, 1))) {
        fault(l, "%zu bytes for %llu pages", l->size, (unsigned long long)l->high_water);
        free(f);
        return 0;
    }
    for (uint64_t m = 0; m < 2; m++) {   /* both metas: the same state */
        const unsigned char *p = f + m * PS;
        unsigned char copy[16 + 64];
        memcpy(copy, p, sizeof copy);
        meta_seal(copy, 0);
        if (get(p, 8) != m || get(p + 8, 2) != 4 || memcmp(copy, p, sizeof copy) ||
            get(p + 16, 4) != 0xED0CDAEDu || get(p + 20, 4) != 2 || get(p + 24, 4) != PS ||
            get(p + 32, 8) != l->root || get(p + 48, 8) != l->freelist ||
            get(p + 56, 8) != l->high_water)
            fault(l, "meta %llu differs or is damaged", (unsigned long long)m);
    }
    reach(l, 0, 2);
    const unsigned char *fl = f + l->freelist * PS;
    if (l->freelist >= l->high_water || get(fl + 8, 2) != 0x10) {
        fault(l, "no freelist page at %llu", (unsigned long long)l->freelist);
    } else {
        uint64_t n = get(fl + 10, 2);
        reach(l, l->freelist, get(fl + 12, 4) + 1);
        for (uint64_t i = 0; i < n; i++, l->free_pages++)
            reach(l, get(fl + 16 + i * 8, 8), 1);
    }
    if (!l->why[0])
        layout_tree(l, l->root, 0);
    for (uint64_t p = 0; p < l->high_water && !l->why[0]; p++)
        if (l->seen[p] != 1)
            fault(l, "page %llu: unreachable unfreed", (unsigned long long)p);
    free(l->seen);
    free(f);
    l->f = NULL;
    return !l->why[0];
}

/* Every key and value the walk of the export delivers, looked up in the
 * source through a view: the same bytes, and as many as the source has. */
typedef struct compare {
    bk_view *view;
    bk_result res;
    uint64_t buckets, keys, mismatches;
} compare;

static int compare_bucket(void *ctx, const bk_slice *path, size_t depth)
{
    compare *c = ctx;
    (void)path;
    c->buckets++;
    return depth == 1 ? 0 : -1;   /* ours are top-level */
}

static int compare_kv(void *ctx, const bk_slice *path, size_t depth, bk_slice key,
                      bk_slice value)
{
    compare *c = ctx;
    bk_error err;
    c->keys++;
    bk_result_clear(&c->res);
    if (depth != 1 || bk_view_range(c->view, path[0], key, NULL, 0, &c->res, &err) ||
        c->res.count != 1 || bk_result_value(&c->res, 0).len != value.len ||
        memcmp(bk_result_value(&c->res, 0).data, value.data, value.len))
        c->mismatches++;
    return 0;
}

/* The source's totals, through the core's own numbers. */
static void source_counts(bk_backend *be, uint64_t *buckets, uint64_t *keys)
{
    bk_error err;
    bk_bucket_stat stats[BK_MAX_BUCKETS];
    size_t n = 0;
    CHECK_OK(bk_bucket_stats(be, stats, BK_MAX_BUCKETS, &n, &err));
    *buckets = n;
    *keys = 0;
    for (size_t i = 0; i < n; i++)
        *keys += stats[i].entries;
}

/* Exports be to path and checks the file: the layout, the reader's walk
 * against the source key by key, the hash and the trailer. */
static void check_export(bk_backend *be, const char *path, int trailer, layout *l)
{
    bk_error err;
    bk_bolt_export_opts opts = { trailer, NULL, NULL };
    bk_bolt_export_stats st;
    uint32_t hash;
    uint64_t buckets, keys;
    if (!CHECK_OK(bk_bolt_export(be, path, &opts, &st, &err)))
        return;
    CHECK_OK(bk_hash(be, NULL, 0, &hash, &err));
    CHECK(st.hash == hash);
    source_counts(be, &buckets, &keys);
    CHECK(st.buckets == buckets && st.keys == keys);
    if (!CHECK(layout_check(path, trailer, l)))
        fprintf(stderr, "%s: %s\n", path, l->why);
    CHECK(st.high_water == l->high_water && st.file_size == l->size);

    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    bk_bolt *b;
    if (!CHECK_OK(bk_bolt_open(path, &b, &err)))
        return;
    bk_bolt_info info;
    bk_bolt_info_get(b, &info);
    CHECK(info.sha256_trailer == trailer && info.page_size == PS);
    status s = { 0 };
    CHECK_OK(bk_bolt_walk(b, status_bucket, status_kv, &s, &err));
    CHECK(s.hash == hash && s.buckets == buckets && s.keys == keys && s.bytes == st.bytes);
    compare c = { NULL, { 0 }, 0, 0, 0 };
    bk_result_init(&c.res);
    if (CHECK_OK(bk_view_open(be, &c.view, &err))) {
        CHECK_OK(bk_bolt_walk(b, compare_bucket, compare_kv, &c, &err));
        CHECK(c.buckets == buckets && c.keys == keys && c.mismatches == 0);
        bk_view_close(c.view);
    }
    bk_result_free(&c.res);
    bk_bolt_close(b);
}

static bk_backend *export_source(const char *name)
{
    bk_error err;
    bk_config cfg;
    bk_backend *be = NULL;
    cfg_for(&cfg, tmp_path(name));
    CHECK_OK(bk_open(&cfg, &be, &err));
    return be;
}

static void put_str(bk_backend *be, const char *bucket, const void *key, size_t klen,
                    const void *value, size_t vlen)
{
    bk_error err;
    bk_slice b = { bucket, strlen(bucket) }, k = { key, klen }, v = { value, vlen };
    CHECK_OK(bk_create_bucket(be, b, &err));
    CHECK_OK(bk_put(be, b, k, v, &err));
}

/* n 8-byte keys with 8-byte values into bucket "key" (a branch page holds
 * 170 such keys, a leaf 127 entries). */
static void put_numbered(bk_backend *be, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char k[8], v[8];
        put(k, (uint64_t)i * 2654435761u, 8);
        put(v, (uint64_t)i, 8);
        put_str(be, "key", k, 8, v, 8);
    }
}

/* Every shape at once: a three-level tree, overflow values, keys at the
 * size limit, an empty bucket, small (inline) buckets, binary names. */
static void test_export_shapes(void)
{
    bk_error err;
    bk_backend *be = export_source("shapes.src");
    if (!be)
        return;
    size_t maxkey = bk_max_key_size(be);
    char key[512], *big = malloc(300000);
    if (!CHECK(big && maxkey < sizeof key))
        return;
    for (size_t i = 0; i < 300000; i++)
        big[i] = (char)(i * 7 + 3);
    CHECK_OK(bk_lock(be, &err));
    put_numbered(be, 30000);
    for (int i = 0; i < 40; i++) {   /* overflow values, and one beside the big ones */
        snprintf(key, sizeof key, "big%02d", i);
        put_str(be, "big", key, strlen(key), big + i, (size_t)(i % 5) * 60000 + 5000 * (i % 3));
    }
    for (int i = 0; i < 20; i++) {
        memset(key, 'a' + i, maxkey);
        put_str(be, "maxkeys", key, maxkey, big, (size_t)i * 200);
    }
    bk_slice empty = { "empty", 5 }, binary = { "\0\1\2bin\377", 7 };
    CHECK_OK(bk_create_bucket(be, empty, &err));
    CHECK_OK(bk_create_bucket(be, binary, &err));
    bk_slice one = { "\0", 1 }, v1 = { "", 0 };
    CHECK_OK(bk_put(be, binary, one, v1, &err));
    put_str(be, "meta", "consistent_index", 16, "\0\0\0\0\0\0\0\7", 8);
    /* bbolt inlines a leaf of up to a quarter page: header, element, key, value. */
    put_str(be, "quarter", "k", 1, big, PS / 4 - 16 - 16 - 1);
    put_str(be, "past-quarter", "k", 1, big, PS / 4 - 16 - 16);
    CHECK_OK(bk_unlock(be, &err));
    free(big);

    layout l;
    check_export(be, tmp_path("shapes.db"), 1, &l);
    CHECK(l.overflow_pages > 0 && l.branch_pages >= 2 && l.free_pages == 0);
    CHECK(l.inline_buckets == 4);   /* empty, binary, meta, quarter */
    check_export(be, tmp_path("shapes-no-trailer.db"), 0, &l);
    bk_free(be);
}

/* Pages filled as `bbolt compact` fills them: the "key" bucket of 30000
 * 16-byte entries (32 bytes with their element) in full pages, so the file
 * is no larger than its data needs. */
static void test_export_fill(void)
{
    bk_error err;
    bk_backend *be = export_source("fill.src");
    if (!be)
        return;
    CHECK_OK(bk_lock(be, &err));
    put_numbered(be, 30000);
    CHECK_OK(bk_unlock(be, &err));
    layout l;
    check_export(be, tmp_path("fill.db"), 0, &l);
    /* 127 elements (16 + 127 * 32 = 4080 bytes) a leaf: 237 leaves, 2 branches
     * and a root branch, plus the top-level leaf, the metas and the freelist. */
    CHECK(l.leaf_pages == 30000 / 127 + 1 + 1 && l.branch_pages == 3);
    CHECK(l.high_water == 3 + l.leaf_pages + l.branch_pages);
    bk_free(be);
}

static void test_export_empty(void)
{
    bk_backend *be = export_source("empty.src");
    if (!be)
        return;
    layout l;
    check_export(be, tmp_path("empty.db"), 1, &l);
    CHECK(l.high_water == 4 && l.leaf_pages == 1);   /* metas, freelist, empty root */
    bk_free(be);
}

/* 600 buckets: the top-level tree spans pages, under a branch. */
static void test_export_many_buckets(void)
{
    bk_error err;
    bk_backend *be = export_source("many.src");
    if (!be)
        return;
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < 600; i++) {
        char name[32];
        snprintf(name, sizeof name, "bucket-%04d", i);
        if (i % 3)
            put_str(be, name, name, strlen(name), "v", 1);
        else {
            bk_slice b = { name, strlen(name) };
            CHECK_OK(bk_create_bucket(be, b, &err));
        }
    }
    CHECK_OK(bk_unlock(be, &err));
    layout l;
    check_export(be, tmp_path("many.db"), 1, &l);
    CHECK(l.inline_buckets == 600 && l.branch_pages == 1);
    bk_free(be);
}

/* The names in dir, one a line, sorted: what an export left behind. */
static void dir_list(const char *dir, char *out, size_t size)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.')
            snprintf(out + strlen(out), size - strlen(out), "%s\n", names[i]->d_name);
        free(names[i]);
    }
    if (n >= 0)
        free(names);
}

typedef struct progress_log {
    bk_backend *be;
    uint64_t calls, last_done, total;
    int monotonic;
    int stop_at;               /* return 7 at this call (0: never) */
    int write_at;              /* a section's writes at this call */
} progress_log;

static int log_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_log *p = ctx;
    bk_error err;
    p->monotonic &= done >= p->last_done && done <= total && (!p->total || total == p->total);
    p->last_done = done;
    p->total = total;
    if (++p->calls == (uint64_t)p->write_at) {   /* writers go on */
        bk_slice b = { "key", 3 }, k = { "written-during-export", 21 }, v = { "x", 1 };
        CHECK_OK(bk_lock(p->be, &err));
        CHECK_OK(bk_put(p->be, b, k, v, &err));
        CHECK_OK(bk_unlock(p->be, &err));
        CHECK_OK(bk_force_commit(p->be, &err));
    }
    return p->calls == (uint64_t)p->stop_at ? 7 : 0;
}

/* Progress, a stop midway (nothing left behind), a destination that
 * exists, writes during an export, a locked section, a path as source. */
static void test_export_lifecycle(void)
{
    bk_error err;
    const char *dir = tmp_path("lifecycle");
    char src[PATH_MAX], dst[PATH_MAX], before[1024], after[1024];
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(src, sizeof src, "%s/src.db", dir);
    snprintf(dst, sizeof dst, "%s/out.db", dir);
    bk_config cfg;
    cfg_for(&cfg, src);
    bk_backend *be;
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    char *value = calloc(1, 4000);
    CHECK_OK(bk_lock(be, &err));
    for (int i = 0; i < 8000; i++) {   /* 32 MB: four steps of 8 MiB */
        char k[16];
        snprintf(k, sizeof k, "%08d", i);
        put_str(be, "key", k, 8, value, 4000);
    }
    CHECK_OK(bk_unlock(be, &err));
    free(value);
    CHECK_OK(bk_force_commit(be, &err));
    dir_list(dir, before, sizeof before);

    progress_log p = { be, 0, 0, 0, 1, 2, 0 };
    bk_bolt_export_opts opts = { 1, log_progress, &p };
    bk_bolt_export_stats st;
    CHECK(bk_bolt_export(be, dst, &opts, &st, &err) == 7);
    dir_list(dir, after, sizeof after);
    CHECK(!strcmp(before, after));   /* no dst, no temporary directory */

    uint32_t hash;
    CHECK_OK(bk_hash(be, NULL, 0, &hash, &err));
    p = (progress_log){ be, 0, 0, 0, 1, 0, 2 };
    CHECK_OK(bk_bolt_export(be, dst, &opts, &st, &err));
    CHECK(p.calls >= 4 && p.monotonic && p.last_done == p.total && p.total == st.file_size);
    CHECK(st.hash == hash && st.keys == 8000);   /* as of the start: the put came later */
    CHECK_OK(bk_hash(be, NULL, 0, &hash, &err));
    CHECK(st.hash != hash);

    CHECK_CODE(bk_bolt_export(be, dst, NULL, NULL, &err), BK_EARG);
    CHECK(strstr(err.msg, "exists"));
    CHECK_OK(bk_lock(be, &err));
    CHECK_CODE(bk_bolt_export(be, tmp_path("in-section.db"), NULL, NULL, &err), BK_ELOCKED);
    CHECK_OK(bk_unlock(be, &err));
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);

    bk_bolt_export_stats from_path;
    CHECK_OK(bk_bolt_export_path(src, tmp_path("from-path.db"), NULL, &from_path, &err));
    CHECK(from_path.hash == hash && from_path.keys == 8001);
    CHECK_CODE(bk_bolt_export_path(tmp_path("no-such.db"), tmp_path("x.db"), NULL, NULL, &err),
               BK_EIO);
}

int main(void)
{
    test_sha256();
    test_misc();
    test_scratch_tree();
    test_scratch_nested();
    test_scratch_freelist();
    test_scratch_deep();
    test_scratch_overlap();
    test_export_shapes();
    test_export_fill();
    test_export_empty();
    test_export_many_buckets();
    test_export_lifecycle();
    test_fixture("tiny");
    test_fixture("mixed");
    test_hostile_tiny();
    return t_done();
}
