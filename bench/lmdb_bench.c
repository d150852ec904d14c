/*
 * lmdb_bench.c: the plain-LMDB side of the benchmark suite. The same
 * workloads as the Lua side, on the same data, straight on LMDB in C.
 *
 *   lmdb_bench WORKLOAD DIR N
 *   lmdb_bench w3b-file|w6-file|w7-file|w8-file DIR N SRC
 *
 * WORKLOAD is w1, w2, w3, w3b, w4, w6, w7 or w8; DIR an existing empty
 * directory, whose files made here are removed at the end; N the number of
 * keys (>= 1). The *-file workloads do W3b, W6, W7 and W8 on the database
 * file SRC that another program built (the Lua side's, so that both sides
 * work on the very same file): w6-file hashes it opened read-only (as the
 * Lua side does: every bucket, its name then its keys and values), w7-file
 * copies it into DIR, w8-file rewrites it into DIR as w8 rewrites its own,
 * and w3b-file looks its keys up, by LMDB and then through the engine's C
 * API (csrc/core, this program's one use of it besides CRC-32C), to show
 * what the engine adds without Lua.
 * Prints one line of space-separated key=value pairs, always with
 * seconds=<wall clock of the timed part>. Any error: a message on stderr and
 * exit status 1.
 *
 * Data (bit-identical to the Lua side): splitmix64 outputs written
 * little-endian. K(i): 64 bytes, 8 outputs of one generator seeded 1, keys
 * drawn in order. V: 128 bytes, 16 outputs of a generator seeded 2, the value
 * of every put. S(i): 8 bytes, i big-endian. R(k): output k of a generator
 * seeded 3, mod N.
 */
#include "core/backend.h"

#include <lmdb.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN    64
#define VAL_LEN    128
#define SEQ_LEN    8
#define TXN_OPS    10000            /* puts (or deletes) per write txn */
#define SCAN_CHUNK 1000             /* entries per cursor in w4 */
#define MAP_SIZE   ((size_t)16 << 30)
#define MAX_DBS    16
#define DB_NAME    "test"
#define COPY_BUF   (1u << 20)

/* ---- errors and the files we own ---------------------------------------- */

enum { F_DATA, F_DATA_LOCK, F_COPY, F_COPY_LOCK, F_FRESH, F_FRESH_LOCK, F_COUNT };
static const char *const file_names[F_COUNT] = {
    "data.db", "data.db-lock", "copy.db", "copy.db-lock", "fresh.db", "fresh.db-lock"
};
static char paths[F_COUNT][PATH_MAX];
static const char *src_path;   /* SRC, for the workloads that take one */
static int own_files;   /* set once we know none of them existed before */

/* Remove our files; strict: a failure other than "not there" is an error. */
static int remove_files(int strict)
{
    int ok = 1;
    if (!own_files)
        return 1;
    for (int i = 0; i < F_COUNT; i++)
        if (unlink(paths[i]) < 0 && errno != ENOENT) {
            if (strict)
                fprintf(stderr, "lmdb_bench: unlink %s: %s\n", paths[i], strerror(errno));
            ok = 0;
        }
    return ok;
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("lmdb_bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    remove_files(0);
    exit(1);
}

static void mdb_check(int rc, const char *what)
{
    if (rc)
        die("%s: %s", what, mdb_strerror(rc));
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static double now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        die("clock_gettime: %s", strerror(errno));
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The one output line, built up and printed at the very end. */
static char result[1024];
static size_t result_len;

__attribute__((format(printf, 1, 2)))
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(result + result_len, sizeof result - result_len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof result - result_len)
        die("output line too long");
    result_len += (size_t)n;
}

/* ---- data --------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static void put_le64(unsigned char *p, uint64_t x)
{
    for (int b = 0; b < 8; b++)
        p[b] = (unsigned char)(x >> (8 * b));
}

static void put_be64(unsigned char *p, uint64_t x)
{
    for (int b = 0; b < 8; b++)
        p[b] = (unsigned char)(x >> (8 * (7 - b)));
}

/* K(0..n-1), KEY_LEN bytes each, back to back. */
static unsigned char *random_keys(size_t n)
{
    unsigned char *keys = xmalloc(n * KEY_LEN);
    uint64_t state = 1;
    for (size_t i = 0; i < n * (KEY_LEN / 8); i++)
        put_le64(keys + 8 * i, splitmix64(&state));
    return keys;
}

/* S(0..n-1), SEQ_LEN bytes each, back to back. */
static unsigned char *seq_keys(size_t n)
{
    unsigned char *keys = xmalloc(n * SEQ_LEN);
    for (size_t i = 0; i < n; i++)
        put_be64(keys + SEQ_LEN * i, (uint64_t)i);
    return keys;
}

static void make_value(unsigned char v[VAL_LEN])
{
    uint64_t state = 2;
    for (int i = 0; i < VAL_LEN / 8; i++)
        put_le64(v + 8 * i, splitmix64(&state));
}

static MDB_val mval(const void *p, size_t len)
{
    MDB_val v;
    v.mv_size = len;
    v.mv_data = (void *)(uintptr_t)p;
    return v;
}

/* ---- LMDB helpers ------------------------------------------------------- */

static MDB_env *env_open_flags(const char *path, unsigned flags)
{
    MDB_env *env;
    mdb_check(mdb_env_create(&env), "mdb_env_create");
    mdb_check(mdb_env_set_mapsize(env, MAP_SIZE), "mdb_env_set_mapsize");
    mdb_check(mdb_env_set_maxdbs(env, MAX_DBS), "mdb_env_set_maxdbs");
    mdb_check(mdb_env_open(env, path, MDB_NOSUBDIR | flags, 0644), "mdb_env_open");
    return env;
}

static MDB_env *env_open(const char *path)
{
    return env_open_flags(path, 0);
}

static MDB_dbi db_create(MDB_env *env)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    mdb_check(mdb_dbi_open(txn, DB_NAME, MDB_CREATE, &dbi), "mdb_dbi_open");
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    return dbi;
}

/* The file size LMDB uses: (last page + 1) * page size. */
static uint64_t env_size(MDB_env *env)
{
    MDB_envinfo info;
    MDB_stat st;
    mdb_check(mdb_env_info(env, &info), "mdb_env_info");
    mdb_check(mdb_env_stat(env, &st), "mdb_env_stat");
    return ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
}

/* Put keys[0..n-1] (klen bytes each) with val, TXN_OPS puts per committed
 * write txn. Returns the seconds from the first txn to the last commit. */
static double load(MDB_env *env, MDB_dbi dbi, const unsigned char *keys, size_t klen,
                   size_t n, const unsigned char *val, unsigned flags)
{
    MDB_txn *txn = NULL;
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        MDB_val k = mval(keys + i * klen, klen), v = mval(val, VAL_LEN);
        if (!txn)
            mdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        mdb_check(mdb_put(txn, dbi, &k, &v, flags), "mdb_put");
        if ((i + 1) % TXN_OPS == 0 || i + 1 == n) {
            mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
            txn = NULL;
        }
    }
    return now() - t0;
}

/* The W1 database: K(0..n-1) with V in generation order. */
static double build_w1(MDB_env **env, MDB_dbi *dbi, const unsigned char *keys, size_t n,
                       const unsigned char *val)
{
    *env = env_open(paths[F_DATA]);
    *dbi = db_create(*env);
    return load(*env, *dbi, keys, KEY_LEN, n, val, 0);
}

/* ---- workloads ---------------------------------------------------------- */

static void w1(size_t n, const unsigned char *val)
{
    unsigned char *keys = random_keys(n);
    MDB_env *env;
    MDB_dbi dbi;
    double secs = build_w1(&env, &dbi, keys, n, val);
    out(" seconds=%.6f size=%" PRIu64 " commits=%zu", secs, env_size(env), (n + TXN_OPS - 1) / TXN_OPS);
    mdb_env_close(env);
    free(keys);
}

static void w2(size_t n, const unsigned char *val)
{
    unsigned char *keys = seq_keys(n);
    MDB_env *env = env_open(paths[F_DATA]);
    MDB_dbi dbi = db_create(env);
    double secs = load(env, dbi, keys, SEQ_LEN, n, val, MDB_APPEND);
    out(" seconds=%.6f size=%" PRIu64, secs, env_size(env));
    mdb_env_close(env);
    free(keys);
}

/* R(0..n-1): the order of the lookups. */
static size_t *lookup_order(size_t n)
{
    size_t *order = xmalloc(n * sizeof *order);
    uint64_t state = 3;
    for (size_t k = 0; k < n; k++)
        order[k] = (size_t)(splitmix64(&state) % n);
    return order;
}

/* The random gets of keys in order, in one read txn, or (per_lookup) each
 * in a read txn of its own: begin, get, abort, as a server taking one per
 * request would. The seconds; *check sums the values' first bytes. */
static double lmdb_lookups(MDB_env *env, MDB_dbi dbi, const unsigned char *keys,
                           const size_t *order, size_t n, int per_lookup, uint64_t *check)
{
    MDB_txn *txn;
    *check = 0;
    if (!per_lookup)
        mdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    double t0 = now();
    for (size_t k = 0; k < n; k++) {
        MDB_val key = mval(keys + order[k] * KEY_LEN, KEY_LEN), v;
        if (per_lookup)
            mdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
        mdb_check(mdb_get(txn, dbi, &key, &v), "mdb_get");
        if (v.mv_size < 1)
            die("mdb_get: empty value");
        *check += ((const unsigned char *)v.mv_data)[0];
        if (per_lookup)
            mdb_txn_abort(txn);
    }
    double secs = now() - t0;
    if (!per_lookup)
        mdb_txn_abort(txn);
    return secs;
}

static void gets(size_t n, const unsigned char *val, int per_lookup)
{
    unsigned char *keys = random_keys(n);
    size_t *order = lookup_order(n);
    uint64_t check;
    MDB_env *env;
    MDB_dbi dbi;
    build_w1(&env, &dbi, keys, n, val);
    double secs = lmdb_lookups(env, dbi, keys, order, n, per_lookup, &check);
    /* What the gets spent fetching their keys: no engine can save that. */
    uint64_t key_check = 0;
    double t0 = now();
    for (size_t k = 0; k < n; k++)
        key_check += keys[order[k] * KEY_LEN + KEY_LEN - 1];
    double key_secs = now() - t0;
    out(" seconds=%.6f gets=%zu check=%" PRIu64 " keys_seconds=%.6f key_check=%" PRIu64,
        secs, n, check, key_secs, key_check);
    mdb_env_close(env);
    free(order);
    free(keys);
}

static void w3(size_t n, const unsigned char *val)
{
    gets(n, val, 0);
}

static void w3b(size_t n, const unsigned char *val)
{
    gets(n, val, 1);
}

/* A growable byte buffer for w4's copies. */
typedef struct { unsigned char *p; size_t len, cap; } buffer;

static size_t buf_add(buffer *b, const MDB_val *v)
{
    if (v->mv_size > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (v->mv_size > cap - b->len)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p)
            die("out of memory (%zu bytes)", cap);
        b->p = p;
        b->cap = cap;
    }
    size_t at = b->len;
    memcpy(b->p + at, v->mv_data, v->mv_size);
    b->len += v->mv_size;
    return at;
}

static void w4(size_t n, const unsigned char *val)
{
    unsigned char *keys = random_keys(n);
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    buffer buf = { NULL, 0, 0 };
    size_t count = 0, last_at = 0, last_len = 0;
    build_w1(&env, &dbi, keys, n, val);
    mdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    double t0 = now();
    for (int first = 1;; first = 0) {
        MDB_cursor *c;
        MDB_val k, v;
        size_t got = 0;
        int rc;
        mdb_check(mdb_cursor_open(txn, dbi, &c), "mdb_cursor_open");
        if (first) {
            rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        } else {
            k = mval(buf.p + last_at, last_len);
            rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            if (rc == 0)
                rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        buf.len = 0;    /* the previous chunk's last key is no longer needed */
        while (rc == 0) {
            last_at = buf_add(&buf, &k);
            last_len = k.mv_size;
            buf_add(&buf, &v);
            if (++got == SCAN_CHUNK)
                break;
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        if (rc != 0 && rc != MDB_NOTFOUND)
            mdb_check(rc, "mdb_cursor_get");
        mdb_cursor_close(c);
        count += got;
        if (got < SCAN_CHUNK)
            break;
    }
    double secs = now() - t0;
    mdb_txn_abort(txn);
    out(" seconds=%.6f keys=%zu", secs, count);
    free(buf.p);
    mdb_env_close(env);
    free(keys);
}

/* A bucket's name from its LMDB database name, as the module stores it
 * (csrc/core/bucket.c: 0x00 escaped as 01 01, 0x01 as 01 02). Returns its
 * length, or 0 for a name the module could not have made. */
static size_t bucket_name(const MDB_val *dbname, unsigned char *out, size_t cap)
{
    const unsigned char *p = dbname->mv_data;
    size_t n = 0;
    for (size_t i = 0; i < dbname->mv_size; i++, n++) {
        if (n == cap || p[i] == 0)
            return 0;
        if (p[i] == 1) {
            if (++i == dbname->mv_size || (p[i] != 1 && p[i] != 2))
                return 0;
            out[n] = (unsigned char)(p[i] - 1);
        } else {
            out[n] = p[i];
        }
    }
    return n;
}

/* etcd's hash as the module computes it (csrc/core/hash.c, no keys
 * ignored): CRC-32C over each bucket's name, in the order of the main
 * database, then over each of its keys and values. Counts the keys. */
static uint32_t hash_env(MDB_env *env, size_t *count)
{
    MDB_txn *txn;
    MDB_cursor *names;
    MDB_val name, nv;
    MDB_dbi main_dbi;
    uint32_t crc = 0;
    int rc;
    mdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    mdb_check(mdb_dbi_open(txn, NULL, 0, &main_dbi), "mdb_dbi_open");
    mdb_check(mdb_cursor_open(txn, main_dbi, &names), "mdb_cursor_open");
    *count = 0;
    for (rc = mdb_cursor_get(names, &name, &nv, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(names, &name, &nv, MDB_NEXT)) {
        char cname[512];
        unsigned char bname[512];
        size_t blen = bucket_name(&name, bname, sizeof bname);
        MDB_dbi dbi;
        MDB_cursor *c;
        MDB_val k, v;
        if (!blen)
            continue;
        if (name.mv_size >= sizeof cname)
            die("a database name of %zu bytes in the main db", name.mv_size);
        memcpy(cname, name.mv_data, name.mv_size);   /* no NUL in it: bucket_name */
        cname[name.mv_size] = 0;
        mdb_check(mdb_dbi_open(txn, cname, 0, &dbi), "mdb_dbi_open");
        crc = bk_crc32c(crc, bname, blen);
        mdb_check(mdb_cursor_open(txn, dbi, &c), "mdb_cursor_open");
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            crc = bk_crc32c(crc, k.mv_data, k.mv_size);
            crc = bk_crc32c(crc, v.mv_data, v.mv_size);
            ++*count;
        }
        if (rc != MDB_NOTFOUND)
            mdb_check(rc, "mdb_cursor_get");
        mdb_cursor_close(c);
    }
    if (rc != MDB_NOTFOUND)
        mdb_check(rc, "mdb_cursor_get");
    mdb_cursor_close(names);
    mdb_txn_abort(txn);
    return crc;
}

/* Hashes env 1 + HASH_TIMED times: the first pass after other work costs
 * more on some VMs (the mapped pages made accessible again: bench/README.md);
 * the others, on a warm mapping, are timed and the fastest kept, as the Lua
 * side does: a 0.1 s pass moves by more than the ratio's margin with whatever
 * else the machine runs (first_seconds: the first). */
#define HASH_TIMED 5
static void hash_warm(MDB_env *env)
{
    size_t count;
    double t0 = now();
    uint32_t first = hash_env(env, &count);
    double t1 = now(), best = 0;
    for (int i = 0; i < HASH_TIMED; i++) {
        double ts = now();
        if (hash_env(env, &count) != first)
            die("two hashes of the same data differ");
        double secs = now() - ts;
        if (i == 0 || secs < best)
            best = secs;
    }
    out(" seconds=%.6f hash=%u keys=%zu first_seconds=%.6f", best, (unsigned)first, count, t1 - t0);
}

static void w6(size_t n, const unsigned char *val)
{
    unsigned char *keys = random_keys(n);
    MDB_env *env;
    MDB_dbi dbi;
    build_w1(&env, &dbi, keys, n, val);
    hash_warm(env);
    mdb_env_close(env);
    free(keys);
}

/* The hash of SRC, opened read-only beside the program that has it open. */
static void w6_file(size_t n, const unsigned char *val)
{
    (void)n;
    (void)val;
    MDB_env *env = env_open_flags(src_path, MDB_RDONLY);
    hash_warm(env);
    mdb_env_close(env);
}

/* Copy from in to out with read/write, from the current offsets to EOF. */
static uint64_t copy_rw(int in, int outfd)
{
    unsigned char *b = xmalloc(COPY_BUF);
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(in, b, COPY_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read: %s", strerror(errno));
        if (r == 0)
            break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(outfd, b + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                die("write %s: %s", paths[F_COPY], strerror(errno));
            off += w;
        }
        total += (uint64_t)r;
    }
    free(b);
    return total;
}

/* A plain copy of the file src to dst, fsync'd: copy_file_range (read and
 * write where the kernel cannot). Returns the seconds it took. */
static double copy_file(const char *src, const char *dst, uint64_t *bytes)
{
    struct stat st;
    uint64_t total = 0;
    double t0 = now();
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        die("open %s: %s", src, strerror(errno));
    if (fstat(in, &st) < 0)
        die("fstat %s: %s", src, strerror(errno));
    int outfd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (outfd < 0)
        die("open %s: %s", dst, strerror(errno));
    for (;;) {
        ssize_t r = copy_file_range(in, NULL, outfd, NULL, (size_t)1 << 30, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == ENOSYS || errno == EXDEV || errno == EOPNOTSUPP ||
                      errno == EINVAL || errno == EPERM)) {
            total += copy_rw(in, outfd);   /* offsets are where the copy stopped */
            break;
        }
        if (r < 0)
            die("copy_file_range %s: %s", dst, strerror(errno));
        if (r == 0)
            break;
        total += (uint64_t)r;
    }
    if (fsync(outfd) < 0)
        die("fsync %s: %s", dst, strerror(errno));
    if (close(outfd) < 0)
        die("close %s: %s", dst, strerror(errno));
    if (close(in) < 0)
        die("close %s: %s", src, strerror(errno));
    double secs = now() - t0;
    if (total != (uint64_t)st.st_size)
        die("copied %" PRIu64 " bytes of %" PRIu64, total, (uint64_t)st.st_size);
    *bytes = total;
    return secs;
}

static void w7(size_t n, const unsigned char *val)
{
    unsigned char *keys = random_keys(n);
    MDB_env *env;
    MDB_dbi dbi;
    uint64_t bytes;
    build_w1(&env, &dbi, keys, n, val);
    mdb_env_close(env);
    free(keys);
    double secs = copy_file(paths[F_DATA], paths[F_COPY], &bytes);
    out(" seconds=%.6f bytes=%" PRIu64, secs, bytes);
}

/* A plain copy of SRC, fsync'd. */
static void w7_file(size_t n, const unsigned char *val)
{
    (void)n;
    (void)val;
    uint64_t bytes;
    double secs = copy_file(src_path, paths[F_COPY], &bytes);
    out(" seconds=%.6f bytes=%" PRIu64, secs, bytes);
}

/* W3b's lookups through the engine's C API, a view a lookup (open, range of
 * the key alone, close), as the Lua side's loop through the module makes
 * them. The seconds; *check as lmdb_lookups'. */
static double core_lookups(bk_backend *be, const unsigned char *keys, const size_t *order,
                           size_t n, uint64_t *check)
{
    bk_slice bucket = { DB_NAME, strlen(DB_NAME) };
    bk_result r;
    bk_error err;
    bk_view *v;
    bk_result_init(&r);
    *check = 0;
    double t0 = now();
    for (size_t k = 0; k < n; k++) {
        bk_slice key = { keys + order[k] * KEY_LEN, KEY_LEN };
        if (bk_view_open(be, &v, &err) || bk_view_range(v, bucket, key, NULL, 0, &r, &err))
            die("a lookup through the engine: %s", err.msg);
        if (r.count != 1)
            die("a lookup through the engine found %zu values", r.count);
        bk_slice value = bk_result_value(&r, 0);
        if (value.len < 1)
            die("a lookup through the engine: empty value");
        *check += ((const unsigned char *)value.data)[0];
        bk_view_close(v);
    }
    double secs = now() - t0;
    bk_result_free(&r);
    return secs;
}

/* W3b on SRC, the Lua side's file, the same bytes and layout: plain LMDB's
 * lookups (a read txn each, as w3b) and the engine's through its C API, on
 * a copy of SRC (the engine as the Lua side's writer uses it, which SRC's
 * flock keeps to that program), and on SRC itself opened read-only beside
 * that program (whose views also check for a writer's defrag, a stat of the
 * path each). Each timed after an untimed pass: the first pass through a new
 * map pays its page faults. What the engine adds to a view per lookup,
 * without Lua. */
static void w3b_file(size_t n, const unsigned char *val)
{
    (void)val;
    unsigned char *keys = random_keys(n);
    size_t *order = lookup_order(n);
    uint64_t bytes, check, core_check;
    copy_file(src_path, paths[F_COPY], &bytes);
    MDB_env *env = env_open_flags(paths[F_COPY], MDB_RDONLY);
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    mdb_check(mdb_dbi_open(txn, DB_NAME, 0, &dbi), "mdb_dbi_open");
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    lmdb_lookups(env, dbi, keys, order, n, 1, &check);
    double secs = lmdb_lookups(env, dbi, keys, order, n, 1, &check);
    mdb_env_close(env);   /* not open twice in one process, as LMDB asks */
    double core[2];
    for (int readonly = 0; readonly <= 1; readonly++) {
        bk_config cfg;
        bk_backend *be;
        bk_error err;
        bk_config_default(&cfg);
        cfg.path = readonly ? src_path : paths[F_COPY];
        cfg.readonly = readonly;
        if (bk_open(&cfg, &be, &err))
            die("%s: %s", cfg.path, err.msg);
        core_lookups(be, keys, order, n, &core_check);
        core[readonly] = core_lookups(be, keys, order, n, &core_check);
        if (bk_close(be, 0, &err))
            die("%s: %s", cfg.path, err.msg);
        bk_free(be);
        if (core_check != check)
            die("the engine read other values than LMDB");
    }
    out(" seconds=%.6f core_seconds=%.6f core_readonly_seconds=%.6f check=%" PRIu64,
        secs, core[0], core[1], check);
    free(order);
    free(keys);
}

/* Every bucket of env rewritten into a fresh file (F_FRESH) in key order
 * with MDB_APPEND, the best rewrite: no per-txn sync, one sync at the end,
 * as defrag does. Prints the seconds it took and the sizes. */
static void rewrite(MDB_env *env)
{
    MDB_env *fresh;
    MDB_dbi main_dbi;
    MDB_txn *rtxn, *wtxn;
    MDB_cursor *names;
    MDB_val name, nv;
    size_t puts = 0;
    int rc;
    uint64_t before = env_size(env);

    double t0 = now();
    fresh = env_open_flags(paths[F_FRESH], MDB_NOSYNC | MDB_NOLOCK);
    mdb_check(mdb_txn_begin(env, NULL, MDB_RDONLY, &rtxn), "mdb_txn_begin");
    mdb_check(mdb_txn_begin(fresh, NULL, 0, &wtxn), "mdb_txn_begin");
    mdb_check(mdb_dbi_open(rtxn, NULL, 0, &main_dbi), "mdb_dbi_open");
    mdb_check(mdb_cursor_open(rtxn, main_dbi, &names), "mdb_cursor_open");
    for (rc = mdb_cursor_get(names, &name, &nv, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(names, &name, &nv, MDB_NEXT)) {
        char cname[512];
        MDB_dbi sdbi, ddbi;
        MDB_cursor *c;
        MDB_val k, v;
        if (name.mv_size >= sizeof cname || memchr(name.mv_data, 0, name.mv_size))
            die("unexpected database name in the main db");
        memcpy(cname, name.mv_data, name.mv_size);
        cname[name.mv_size] = 0;
        mdb_check(mdb_dbi_open(rtxn, cname, 0, &sdbi), "mdb_dbi_open");
        mdb_check(mdb_dbi_open(wtxn, cname, MDB_CREATE, &ddbi), "mdb_dbi_open");
        mdb_check(mdb_cursor_open(rtxn, sdbi, &c), "mdb_cursor_open");
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            mdb_check(mdb_put(wtxn, ddbi, &k, &v, MDB_APPEND), "mdb_put");
            if (++puts % TXN_OPS == 0) {
                mdb_check(mdb_txn_commit(wtxn), "mdb_txn_commit");
                mdb_check(mdb_txn_begin(fresh, NULL, 0, &wtxn), "mdb_txn_begin");
            }
        }
        if (rc != MDB_NOTFOUND)
            mdb_check(rc, "mdb_cursor_get");
        mdb_cursor_close(c);
    }
    if (rc != MDB_NOTFOUND)
        mdb_check(rc, "mdb_cursor_get");
    mdb_cursor_close(names);
    mdb_check(mdb_txn_commit(wtxn), "mdb_txn_commit");
    mdb_txn_abort(rtxn);
    mdb_check(mdb_env_sync(fresh, 1), "mdb_env_sync");
    double secs = now() - t0;

    uint64_t after = env_size(fresh);
    out(" seconds=%.6f size_before=%" PRIu64 " size_after=%" PRIu64 " keys=%zu",
        secs, before, after, puts);
    mdb_env_close(fresh);
}

static void w8(size_t n, const unsigned char *val)
{
    unsigned char *keys = random_keys(n);
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn = NULL;
    size_t deletes = 0;
    build_w1(&env, &dbi, keys, n, val);
    for (size_t i = 0; i < n; i += 2) {
        MDB_val k = mval(keys + i * KEY_LEN, KEY_LEN);
        if (!txn)
            mdb_check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        mdb_check(mdb_del(txn, dbi, &k, NULL), "mdb_del");
        if (++deletes % TXN_OPS == 0 || i + 2 >= n) {
            mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
            txn = NULL;
        }
    }
    free(keys);
    rewrite(env);
    mdb_env_close(env);
}

/* W8 on SRC, the Lua side's file after its deletes, right before its
 * defrag: the same rewrite, opened read-only beside that program. */
static void w8_file(size_t n, const unsigned char *val)
{
    (void)n;
    (void)val;
    MDB_env *env = env_open_flags(src_path, MDB_RDONLY);
    rewrite(env);
    mdb_env_close(env);
}

/* ---- main --------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(size_t n, const unsigned char *val);
    int takes_src;
} workloads[] = {
    { "w1", w1, 0 }, { "w2", w2, 0 }, { "w3", w3, 0 }, { "w3b", w3b, 0 }, { "w4", w4, 0 },
    { "w6", w6, 0 }, { "w7", w7, 0 }, { "w8", w8, 0 },
    { "w3b-file", w3b_file, 1 }, { "w6-file", w6_file, 1 }, { "w7-file", w7_file, 1 },
    { "w8-file", w8_file, 1 },
};

int main(int argc, char **argv)
{
    size_t w, nw = sizeof workloads / sizeof workloads[0];
    struct stat st;
    char *end;
    unsigned char val[VAL_LEN];

#define USAGE "usage: lmdb_bench WORKLOAD DIR N, or lmdb_bench w3b-file|w6-file|w7-file|w8-file DIR N SRC " \
              "(WORKLOAD: w1 w2 w3 w3b w4 w6 w7 w8)"
    if (argc < 4)
        die(USAGE);
    for (w = 0; w < nw && strcmp(argv[1], workloads[w].name); w++)
        ;
    if (w == nw)
        die("unknown workload '%s'; " USAGE, argv[1]);
    if (argc != 4 + workloads[w].takes_src)
        die(USAGE);
    if (workloads[w].takes_src)
        src_path = argv[4];
    errno = 0;
    unsigned long long n = strtoull(argv[3], &end, 10);
    if (errno || end == argv[3] || *end || argv[3][0] == '-' || n < 1 ||
        n > SIZE_MAX / (KEY_LEN + sizeof(size_t)))
        die("bad N '%s': an integer >= 1", argv[3]);
    if (stat(argv[2], &st) < 0)
        die("%s: %s", argv[2], strerror(errno));
    if (!S_ISDIR(st.st_mode))
        die("%s: not a directory", argv[2]);
    for (int i = 0; i < F_COUNT; i++) {
        int len = snprintf(paths[i], sizeof paths[i], "%s/%s", argv[2], file_names[i]);
        if (len < 0 || (size_t)len >= sizeof paths[i])
            die("%s: path too long", argv[2]);
        if (lstat(paths[i], &st) == 0)
            die("%s already exists: DIR must be an empty directory", paths[i]);
        if (errno != ENOENT)
            die("%s: %s", paths[i], strerror(errno));
    }
    own_files = 1;

    make_value(val);
    out("workload=%s n=%llu", workloads[w].name, n);
    workloads[w].run((size_t)n, val);

    if (!remove_files(1))
        die("could not remove the files in %s", argv[2]);
    own_files = 0;
    if (printf("%s\n", result) < 0 || fflush(stdout) != 0)
        die("writing the result: %s", strerror(errno));
    return 0;
}
