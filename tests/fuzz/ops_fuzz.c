/*
 * ops_fuzz.c: a libFuzzer target. Each input is a sequence of operations on
 * one backend; every error code and every read is checked against a small
 * model kept here, and any difference aborts after printing it.
 *
 * Input format (bytes past the end read as 0, so every input decodes):
 *   header: h0 h1
 *     batch_limit    = 1 + (h0 & 15)
 *     mmap_size      = {32 KiB, 64 KiB, 1 MiB, 16 MiB}[(h0 >> 4) & 3]   (small maps grow)
 *     batch_interval = {0.001, 0.005, 0.05, 1000}[h1 & 3] s   (1000: only limits commit)
 *   then at most 200 ops, each an opcode byte (taken % 18) and its arguments:
 *     0 lock              1 unlock
 *     2 put B K V         3 delete B K
 *     4 create_bucket B   5 delete_bucket B
 *     6 tx_range R        (bk_tx_range)
 *     7 view_open S       8 view_range S R     9 view_close S
 *     10 commit F         (F & 15) == 15: commit and stop
 *     11 force_commit
 *     12 hash F [B K]     F & 1: with the pair B K ignored
 *     13 reopen F         bk_close + bk_open; F & 1: the hash must not change
 *     14 snapshot_open    15 snapshot_write (to a file, opened and checked)
 *     16 defrag           17 rollback
 *     18 export F         (bk_bolt_export, F & 1: without the trailer; read back
 *                          through bk_bolt_import, the bbolt reader)
 *   B, a bucket: one byte b; (b & 7) == 7 is the empty name (invalid), else
 *     {"\0\1\xff", "a", "key"}[(b & 7) % 3].
 *   K, a key: one byte t, then
 *     t < 0xf0: 1 + (t & 3) bytes, byte i = "\0ab\xff"[(t >> (2 + 2i)) & 3];
 *     0xf0..0xfc: a byte n, then n % 41 bytes as they are (n % 41 == 0: empty);
 *     0xfd: a byte c: bk_max_key_size bytes c (the longest valid key);
 *     0xfe, 0xff: a byte n: bk_max_key_size + 1 + n % 64 bytes 'z' (too long).
 *   V, a value: a byte n; n < 0xff: n % 41 bytes; 0xff: a byte c, and the value is
 *     60000 + 300 * c bytes, byte i = c + i (mod 256): memtable blocks of their own
 *     past 64 KiB, LMDB overflow pages.
 *   S, a view slot: a byte, & 1.
 *   R, a range: B, a mode byte m, its keys, a limit byte l (limit (l % 7) - 1):
 *     m & 3: 0 the key K alone; 1 [K1, K2); 2 ["", K); 3 [K, 0xff x (max + 1)).
 *
 * The model is what a reader must see (buffered or committed makes no
 * difference): `cur` is the batch tx's state, `pub` what readers see while
 * the lock is held (as of lock: nothing commits an open section, and
 * rollback returns to it); each view and the snapshot keep a copy as of
 * their opening.
 */
#include "core/backend.h"
#include "bolt/bolt.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_OPS 200
#define NBUCKETS 3
#define NVIEWS 2
#define KEYMAX 512     /* model keys; LMDB's limit is below it */
#define KEYBUF 640     /* the longest key built: the limit + 64 */
#define VALMAX 40
#define BIGMAX (60000 + 300 * 255)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    OP_LOCK, OP_UNLOCK, OP_PUT, OP_DELETE, OP_CREATE, OP_DROP, OP_TX_RANGE,
    OP_VIEW_OPEN, OP_VIEW_RANGE, OP_VIEW_CLOSE, OP_COMMIT, OP_FORCE_COMMIT,
    OP_HASH, OP_REOPEN, OP_SNAP_OPEN, OP_SNAP_WRITE, OP_DEFRAG, OP_ROLLBACK, OP_EXPORT, NOPS
};

/* In byte order: hash walks buckets in the order of their names. */
static const bk_slice NAMES[NBUCKETS] = { { "\0\1\xff", 3 }, { "a", 1 }, { "key", 3 } };

/* A value longer than VALMAX is a big one: v holds its first bytes. */
typedef struct {
    uint8_t k[KEYMAX], v[VALMAX];
    size_t klen, vlen;
} entry;

typedef struct {
    int exists;
    size_t n;
    entry e[MAX_OPS];   /* sorted; each op adds at most one */
} mbucket;

typedef struct {
    mbucket b[NBUCKETS];
} model;

typedef struct {
    bk_view *v;
    int dead;           /* the code its reads must give; 0 while usable */
    model m;
} mview;

/* One input's state; static because the models are ~2 MB. */
static struct {
    bk_backend *be;
    bk_config cfg;
    bk_error err;
    size_t maxkey;
    int step, locked, stopped;
    model cur, pub;
    mview views[NVIEWS];
    bk_snapshot *snap;
    int snap_dead;
    model snap_m;
} st;

/* ---- files ---- */

static char dir[256], dbpath[300], snappath[300], boltpath[300];

/* A database is its file and its lock file. */
static void remove_db(const char *path)
{
    char lock[320];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(path);
    unlink(lock);
}

static void remove_dir(void)
{
    remove_db(dbpath);
    remove_db(snappath);
    unlink(boltpath);
    rmdir(dir);
}

/* A failed check: abort() skips atexit, so remove the files first. */
static void die(void)
{
    remove_dir();
    abort();
}

/* ---- the model ---- */

/* A big value: byte i is c + i. One buffer: one such value is used at a time. */
static bk_slice big_value(uint8_t c, size_t len)
{
    static uint8_t big[BIGMAX];
    for (size_t i = 0; i < len; i++)
        big[i] = (uint8_t)(c + i);
    bk_slice v = { big, len };
    return v;
}

static bk_slice value_of(const entry *e)
{
    bk_slice v = { e->v, e->vlen };
    return e->vlen > VALMAX ? big_value(e->v[0], e->vlen) : v;
}

static int keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static size_t lower_bound(const mbucket *b, bk_slice k)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keycmp(b->e[mid].k, b->e[mid].klen, k.data, k.len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int found(const mbucket *b, size_t i, bk_slice k)
{
    return i < b->n && !keycmp(b->e[i].k, b->e[i].klen, k.data, k.len);
}

static void model_put(mbucket *b, bk_slice k, bk_slice v)
{
    size_t i = lower_bound(b, k);
    if (!found(b, i, k)) {
        memmove(&b->e[i + 1], &b->e[i], (b->n - i) * sizeof b->e[0]);
        b->n++;
        memcpy(b->e[i].k, k.data, k.len);
        b->e[i].klen = k.len;
    }
    memcpy(b->e[i].v, v.data, v.len < VALMAX ? v.len : VALMAX);
    b->e[i].vlen = v.len;
}

static void model_del(mbucket *b, bk_slice k)
{
    size_t i = lower_bound(b, k);
    if (found(b, i, k)) {
        memmove(&b->e[i], &b->e[i + 1], (b->n - i - 1) * sizeof b->e[0]);
        b->n--;
    }
}

static void model_copy(model *dst, const model *src)
{
    for (int i = 0; i < NBUCKETS; i++) {
        dst->b[i].exists = src->b[i].exists;
        dst->b[i].n = src->b[i].n;
        memcpy(dst->b[i].e, src->b[i].e, src->b[i].n * sizeof src->b[i].e[0]);
    }
}

/* What a reader opened now sees. */
static const model *published(void)
{
    return st.locked ? &st.pub : &st.cur;
}

/* etcd's Hash over m, skipping key ik of bucket ib (ib < 0: nothing). */
static uint32_t model_hash(const model *m, int ib, bk_slice ik)
{
    uint32_t crc = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        const mbucket *b = &m->b[i];
        if (!b->exists)
            continue;
        crc = bk_crc32c(crc, NAMES[i].data, NAMES[i].len);
        for (size_t j = 0; j < b->n; j++) {
            if (i == ib && !keycmp(b->e[j].k, b->e[j].klen, ik.data, ik.len))
                continue;
            bk_slice v = value_of(&b->e[j]);
            crc = bk_crc32c(crc, b->e[j].k, b->e[j].klen);
            crc = bk_crc32c(crc, v.data, v.len);
        }
    }
    return crc;
}

/* ---- checks: any difference prints and aborts ---- */

static void hex(const char *label, const void *p, size_t n)
{
    fprintf(stderr, "%s", label);
    for (size_t i = 0; i < n && i < 48; i++)
        fprintf(stderr, "%02x", ((const uint8_t *)p)[i]);
    if (n > 48)
        fprintf(stderr, "...(%zu bytes)", n);
}

static void expect(int got, int want, const char *what)
{
    if (got == want)
        return;
    fprintf(stderr, "ops_fuzz: op %d %s: got code %d, want %d (%s)\n", st.step, what,
            got, want, got ? st.err.msg : "no error");
    die();
}

/* A read's result against bucket bi of m: the key `from` alone (to NULL)
 * or [from, to), the first `limit` of them when limit > 0. */
static void check_range(const char *what, const model *m, int bi, bk_slice from,
                        const bk_slice *to, int64_t limit, const bk_result *r)
{
    const mbucket *b = &m->b[bi];
    size_t lo = 0, hi = 0;
    if (b->exists) {
        lo = lower_bound(b, from);
        hi = !to ? lo + found(b, lo, from) : lower_bound(b, *to);
        if (hi < lo)
            hi = lo;
        if (to && limit > 0 && hi - lo > (uint64_t)limit)
            hi = lo + (size_t)limit;
    }
    int ok = r->count == hi - lo;
    for (size_t i = 0; ok && i < r->count; i++) {
        bk_slice k = bk_result_key(r, i), v = bk_result_value(r, i);
        const entry *e = &b->e[lo + i];
        bk_slice want = value_of(e);
        ok = !keycmp(k.data, k.len, e->k, e->klen) && !keycmp(v.data, v.len, want.data, want.len);
    }
    if (ok)
        return;
    fprintf(stderr, "ops_fuzz: op %d %s: bucket %d", st.step, what, bi);
    hex(" from=", from.data, from.len);
    if (to)
        hex(" to=", to->data, to->len);
    fprintf(stderr, " limit=%lld\n  got:", (long long)limit);
    for (size_t i = 0; i < r->count; i++) {
        bk_slice k = bk_result_key(r, i), v = bk_result_value(r, i);
        hex(" ", k.data, k.len);
        hex("=", v.data, v.len);
    }
    fprintf(stderr, "\n  want:");
    for (size_t i = lo; i < hi; i++) {
        bk_slice v = value_of(&b->e[i]);
        hex(" ", b->e[i].k, b->e[i].klen);
        hex("=", v.data, v.len);
    }
    fprintf(stderr, "\n");
    die();
}

static const bk_slice NO_KEY = { "", 0 };

/* Every bucket of be, whole, through a new view, against m. */
static void check_all(bk_backend *be, const model *m, const char *what)
{
    uint8_t top[KEYBUF];
    bk_slice to = { top, st.maxkey + 1 };
    bk_result r;
    bk_view *v;
    memset(top, 0xff, to.len);
    expect(bk_view_open(be, &v, &st.err), BK_OK, what);
    bk_result_init(&r);
    for (int i = 0; i < NBUCKETS; i++) {
        expect(bk_view_range(v, NAMES[i], NO_KEY, &to, 0, &r, &st.err), BK_OK, what);
        check_range(what, m, i, NO_KEY, &to, 0, &r);
    }
    bk_result_free(&r);
    bk_view_close(v);
}

/* be's hash, checked against m's; ign: an ignored (bucket ib, key) pair, or NULL. */
static uint32_t check_hash(bk_backend *be, const model *m, const bk_slice *ign, int ib,
                           const char *what)
{
    uint32_t h, want = model_hash(m, ib, ign ? ign[1] : NO_KEY);
    expect(bk_hash(be, ign, ign ? 1 : 0, &h, &st.err), BK_OK, what);
    if (h != want) {
        fprintf(stderr, "ops_fuzz: op %d %s: hash %08x, model's %08x\n", st.step, what,
                (unsigned)h, (unsigned)want);
        die();
    }
    return h;
}

/* After a commit of everything written: the section is published too. */
static void all_committed(const char *what)
{
    if (bk_pending(st.be)) {
        fprintf(stderr, "ops_fuzz: op %d %s: %llu writes pending after it\n", st.step,
                what, (unsigned long long)bk_pending(st.be));
        die();
    }
}

/* ---- decoding ---- */

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static uint8_t next(input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static int read_bucket(input *in, bk_slice *name)
{
    unsigned b = next(in) & 7u;
    if (b == 7) {
        *name = NO_KEY;
        return -1;
    }
    *name = NAMES[b % 3];
    return (int)(b % 3);
}

static bk_slice read_key(input *in, uint8_t *buf)
{
    static const uint8_t alpha[4] = { 0x00, 'a', 'b', 0xff };
    unsigned t = next(in);
    size_t len;
    if (t < 0xf0) {
        len = 1 + (t & 3);
        for (size_t i = 0; i < len; i++)
            buf[i] = alpha[(t >> (2 + 2 * i)) & 3];
    } else if (t <= 0xfc) {
        len = next(in) % 41u;
        for (size_t i = 0; i < len; i++)
            buf[i] = next(in);
    } else if (t == 0xfd) {
        len = st.maxkey;
        memset(buf, next(in), len);
    } else {
        len = st.maxkey + 1 + next(in) % 64u;
        memset(buf, 'z', len);
    }
    bk_slice k = { buf, len };
    return k;
}

static bk_slice read_value(input *in, uint8_t *buf)
{
    unsigned n = next(in);
    if (n == 0xff) {
        uint8_t c = next(in);
        return big_value(c, 60000 + 300 * (size_t)c);
    }
    bk_slice v = { buf, n % 41u };
    for (size_t i = 0; i < v.len; i++)
        buf[i] = next(in);
    return v;
}

static int key_ok(bk_slice k)
{
    return k.len >= 1 && k.len <= st.maxkey;
}

/* The code a batch-tx call gives before it looks at its arguments. */
static int tx_code(void)
{
    return st.stopped ? BK_ESTOPPED : !st.locked ? BK_ENOTLOCKED : BK_OK;
}

/* What a call that commits first must return: none runs in an open section. */
static int commit_code(void)
{
    return st.locked ? BK_ELOCKED : BK_OK;
}

/* ---- ops ---- */

/* Decodes R and reads it through the batch tx (slot < 0) or a view. */
static void op_read(input *in, int slot)
{
    uint8_t fb[KEYBUF], tb[KEYBUF];
    bk_slice name, from = { fb, 0 }, to = { tb, st.maxkey + 1 };
    int bi = read_bucket(in, &name), mode = next(in) & 3;
    if (mode != 2)
        from = read_key(in, fb);
    if (mode == 1 || mode == 2)
        to = read_key(in, tb);
    else if (mode == 3)
        memset(tb, 0xff, to.len);
    int64_t limit = (int64_t)(next(in) % 7) - 1;
    const bk_slice *top = mode ? &to : NULL;
    int want = bi < 0 || (!top && !key_ok(from)) ? BK_EARG : BK_OK;
    mview *v = slot < 0 ? NULL : &st.views[slot];
    const model *m = v ? &v->m : &st.cur;
    bk_result r;
    int rc;
    if (v && !v->v)
        return;
    if (!v && tx_code())
        want = tx_code();
    else if (v && v->dead)
        want = v->dead;
    bk_result_init(&r);
    rc = v ? bk_view_range(v->v, name, from, top, limit, &r, &st.err)
           : bk_tx_range(st.be, name, from, top, limit, &r, &st.err);
    expect(rc, want, slot < 0 ? "tx_range" : "view_range");
    if (rc == BK_OK)
        check_range(slot < 0 ? "tx_range" : "view_range", m, bi, from, top, limit, &r);
    bk_result_free(&r);
}

static void op_write(input *in, int op)
{
    uint8_t kb[KEYBUF], vb[VALMAX];
    bk_slice name, key = NO_KEY, val = NO_KEY;
    int bi = read_bucket(in, &name), want = tx_code(), rc;
    if (op == OP_PUT || op == OP_DELETE) {
        key = read_key(in, kb);
        if (op == OP_PUT)
            val = read_value(in, vb);
        if (!want)
            want = bi < 0 || !key_ok(key) ? BK_EARG
                 : !st.cur.b[bi].exists ? BK_ENOBUCKET : BK_OK;
    } else if (!want && bi < 0) {
        want = BK_EARG;
    }
    switch (op) {
    case OP_PUT:
        rc = bk_put(st.be, name, key, val, &st.err);
        break;
    case OP_DELETE:
        rc = bk_delete(st.be, name, key, &st.err);
        break;
    case OP_CREATE:
        rc = bk_create_bucket(st.be, name, &st.err);
        break;
    default:
        rc = bk_delete_bucket(st.be, name, &st.err);
        break;
    }
    expect(rc, want, "write");
    if (rc)
        return;
    mbucket *b = &st.cur.b[bi];
    if (op == OP_PUT)
        model_put(b, key, val);
    else if (op == OP_DELETE)
        model_del(b, key);
    else if (op == OP_CREATE)
        b->exists = 1;
    else
        b->exists = 0, b->n = 0;
}

static void op_hash(input *in)
{
    uint8_t kb[KEYBUF];
    bk_slice ign[2];
    int with = next(in) & 1, ib = -1;
    if (with) {
        ib = read_bucket(in, &ign[0]);
        ign[1] = read_key(in, kb);
    }
    if (commit_code()) {
        uint32_t h;
        expect(bk_hash(st.be, NULL, 0, &h, &st.err), commit_code(), "hash in a section");
        return;
    }
    check_hash(st.be, &st.cur, with ? ign : NULL, ib, "hash");
    all_committed("hash");
}

static void open_be(void)
{
    expect(bk_open(&st.cfg, &st.be, &st.err), BK_OK, "open");
    st.maxkey = bk_max_key_size(st.be);
    if (st.maxkey >= KEYMAX || st.maxkey + 64 >= KEYBUF) {
        fprintf(stderr, "ops_fuzz: max key size %zu is above what the harness holds\n",
                st.maxkey);
        die();
    }
}

/* Close cleanly: an open section is rolled back, everything else is
 * committed, views and the snapshot die. */
static void close_be(void)
{
    if (st.locked)
        model_copy(&st.cur, &st.pub);
    expect(bk_close(st.be, 0, &st.err), BK_OK, "close");
    bk_free(st.be);
    st.be = NULL;
    st.locked = st.stopped = 0;
    for (int i = 0; i < NVIEWS; i++)
        st.views[i].dead = BK_ECLOSED;
    st.snap_dead = BK_ECLOSED;
}

static void op_reopen(input *in)
{
    int with_hash = (next(in) & 1) && !st.locked;
    uint32_t before = with_hash ? check_hash(st.be, &st.cur, NULL, -1, "hash before reopen") : 0;
    close_be();
    open_be();
    check_all(st.be, &st.cur, "reopen");
    if (with_hash && check_hash(st.be, &st.cur, NULL, -1, "hash after reopen") != before) {
        fprintf(stderr, "ops_fuzz: op %d: hash changed across reopen\n", st.step);
        die();
    }
}

static void op_snap_open(void)
{
    if (commit_code()) {
        bk_snapshot *s = NULL;
        expect(bk_snapshot_open(st.be, &s, &st.err), commit_code(), "snapshot_open in a section");
        bk_snapshot_close(s);
        return;
    }
    bk_snapshot_close(st.snap);
    expect(bk_snapshot_open(st.be, &st.snap, &st.err), BK_OK, "snapshot_open");
    all_committed("snapshot_open");
    model_copy(&st.snap_m, &st.cur);
    st.snap_dead = 0;
}

/* The database at snappath (a copy) must open as m. */
static void check_copy(const model *m, const char *what)
{
    bk_config cfg = st.cfg;
    bk_backend *be;
    char label[64];
    cfg.path = snappath;
    snprintf(label, sizeof label, "open %s", what);
    expect(bk_open(&cfg, &be, &st.err), BK_OK, label);
    snprintf(label, sizeof label, "%s contents", what);
    check_all(be, m, label);
    snprintf(label, sizeof label, "%s hash", what);
    check_hash(be, m, NULL, -1, label);
    snprintf(label, sizeof label, "close %s", what);
    expect(bk_close(be, 0, &st.err), BK_OK, label);
    bk_free(be);
}

/* Write the snapshot to a file; it must open as the state at its opening. */
static void op_snap_write(void)
{
    if (!st.snap)
        return;
    expect(bk_snapshot_check(st.snap, &st.err), st.snap_dead, "snapshot_check");
    int fd = open(snappath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(snappath);
        die();
    }
    expect(bk_snapshot_copy_fd(st.snap, fd, 0, bk_snapshot_size(st.snap), &st.err),
           st.snap_dead, "snapshot_copy_fd");
    if (close(fd)) {
        perror(snappath);
        die();
    }
    bk_snapshot_close(st.snap);
    st.snap = NULL;
    if (!st.snap_dead)
        check_copy(&st.snap_m, "snapshot");
    remove_db(snappath);
}

/* Export to a bbolt file and import it back: the state as of the export. */
static void op_export(input *in)
{
    bk_bolt_export_opts opts = { !(next(in) & 1), NULL, NULL };
    bk_bolt_export_stats xs;
    int rc = bk_bolt_export(st.be, boltpath, &opts, &xs, &st.err);
    expect(rc, commit_code(), "export");
    if (rc)
        return;
    all_committed("export");
    if (xs.hash != model_hash(&st.cur, -1, NO_KEY)) {
        fprintf(stderr, "ops_fuzz: op %d: the export's hash %08x, the model's %08x\n", st.step,
                (unsigned)xs.hash, (unsigned)model_hash(&st.cur, -1, NO_KEY));
        die();
    }
    bk_config cfg = st.cfg;
    cfg.path = snappath;
    expect(bk_bolt_import(boltpath, &cfg, NULL, &st.err), BK_OK, "import of the export");
    unlink(boltpath);
    check_copy(&st.cur, "export");
    remove_db(snappath);
}

static void op_defrag(void)
{
    int rc = bk_defrag(st.be, NULL, &st.err);
    expect(rc, commit_code() ? commit_code() : st.stopped ? BK_ESTOPPED : BK_OK, "defrag");
    if (rc)
        return;
    all_committed("defrag");   /* views and the snapshot read on, unchanged */
}

static void op(input *in)
{
    int code = next(in) % NOPS, rc;
    mview *v;
    switch (code) {
    case OP_LOCK:
        rc = bk_lock(st.be, &st.err);
        expect(rc, st.stopped ? BK_ESTOPPED : st.locked ? BK_ELOCKED : BK_OK, "lock");
        if (!rc) {
            st.locked = 1;
            model_copy(&st.pub, &st.cur);
        }
        break;
    case OP_UNLOCK:
        rc = bk_unlock(st.be, &st.err);
        expect(rc, st.locked ? BK_OK : BK_ENOTLOCKED, "unlock");
        st.locked = 0;
        break;
    case OP_ROLLBACK:
        rc = bk_rollback(st.be, NULL, &st.err);
        expect(rc, st.locked ? BK_OK : BK_ENOTLOCKED, "rollback");
        if (st.locked)
            model_copy(&st.cur, &st.pub);
        st.locked = 0;
        break;
    case OP_PUT:
    case OP_DELETE:
    case OP_CREATE:
    case OP_DROP:
        op_write(in, code);
        break;
    case OP_TX_RANGE:
        op_read(in, -1);
        break;
    case OP_VIEW_OPEN:
        v = &st.views[next(in) & 1];
        bk_view_close(v->v);
        expect(bk_view_open(st.be, &v->v, &st.err), BK_OK, "view_open");
        v->dead = 0;
        model_copy(&v->m, published());
        break;
    case OP_VIEW_RANGE:
        op_read(in, next(in) & 1);
        break;
    case OP_VIEW_CLOSE:
        v = &st.views[next(in) & 1];
        bk_view_close(v->v);
        v->v = NULL;
        break;
    case OP_COMMIT: {
        int stop = (next(in) & 15) == 15;
        rc = bk_commit(st.be, stop, &st.err);
        expect(rc, st.stopped ? BK_ESTOPPED : commit_code(), "commit");
        if (!rc) {
            all_committed("commit");
            st.stopped = stop;
        }
        break;
    }
    case OP_FORCE_COMMIT:
        rc = bk_force_commit(st.be, &st.err);
        expect(rc, commit_code(), "force_commit");
        if (!rc)
            all_committed("force_commit");
        break;
    case OP_HASH:
        op_hash(in);
        break;
    case OP_REOPEN:
        op_reopen(in);
        break;
    case OP_SNAP_OPEN:
        op_snap_open();
        break;
    case OP_SNAP_WRITE:
        op_snap_write();
        break;
    case OP_DEFRAG:
        op_defrag();
        break;
    case OP_EXPORT:
        op_export(in);
        break;
    }
}

/* One directory per process, emptied before each input, removed at exit. */
static void make_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ops_fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        abort();
    }
    snprintf(dbpath, sizeof dbpath, "%s/db", dir);
    snprintf(snappath, sizeof snappath, "%s/snap.db", dir);
    snprintf(boltpath, sizeof boltpath, "%s/export.bolt", dir);
    atexit(remove_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const double intervals[4] = { 0.001, 0.005, 0.05, 1000 };
    static const uint64_t maps[4] = { 32 << 10, 64 << 10, 1 << 20, 16 << 20 };
    input in = { data, size };
    if (!dir[0])
        make_dir();
    remove_db(dbpath);
    for (int i = 0; i < NBUCKETS; i++)
        st.cur.b[i].exists = 0, st.cur.b[i].n = 0;
    st.locked = st.stopped = 0;
    st.step = 0;
    uint8_t h0 = next(&in), h1 = next(&in);
    bk_config_default(&st.cfg);
    st.cfg.path = dbpath;
    st.cfg.no_fsync = 1;   /* speed: durability across crashes is not tested here */
    st.cfg.batch_limit = 1 + (h0 & 15u);
    st.cfg.mmap_size = maps[(h0 >> 4) & 3];
    st.cfg.batch_interval = intervals[h1 & 3];
    open_be();
    for (; in.n && st.step < MAX_OPS; st.step++)
        op(&in);
    check_all(st.be, published(), "final contents");
    if (st.locked) {   /* nothing hashes an open section */
        expect(bk_unlock(st.be, &st.err), BK_OK, "final unlock");
        st.locked = 0;
    }
    check_hash(st.be, &st.cur, NULL, -1, "final hash");
    for (int i = 0; i < NVIEWS; i++) {
        bk_view_close(st.views[i].v);
        st.views[i].v = NULL;
    }
    bk_snapshot_close(st.snap);
    st.snap = NULL;
    close_be();
    return 0;
}
