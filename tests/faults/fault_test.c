/* fault_test.c: the disk fails (ENOSPC, EIO) at every I/O point of a commit,
 * a map growth, a snapshot write, an export and a defrag, or fills up
 * mid-write, and nothing is lost.
 *
 * Run under the shim: LD_PRELOAD=build/tests/faults/faultfs.so
 * build/tests/faults/fault_test (make faults); without it the test skips.
 * Each database has a model of what it must hold: every write the test
 * made (all acknowledged by unlock). After each fault the data is checked
 * through the batch tx and a new view, and after a clean close and reopen
 * the file must hold the model exactly. */
#include "../test.h"
#include "bolt/bolt.h"
#include "faultfs.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <time.h>

#define NKEYS 4000
#define VAL_LEN 400

static faultfs_arm_fn *arm_fn;
static faultfs_hits_fn *hits_fn;
static faultfs_clear_fn *clear_fn;
static const int errs[] = { ENOSPC, EIO };

static long hits(const char *call)
{
    return hits_fn(call);
}

static void arm(const char *call, const char *path, int e, long skip, long count)
{
    CHECK(arm_fn(call, path, e, skip, count) == 0);
}

static bk_slice str(const char *s)
{
    bk_slice x = { s, strlen(s) };
    return x;
}

/* ---- a database and its model ---- */

typedef struct db {
    bk_config cfg;
    bk_backend *be;
    int gen[NKEYS];   /* generation of key i's value; 0: absent */
    int next_gen;
} db;

static void key_of(char *buf, int i)
{
    snprintf(buf, 16, "k%06d", i);
}

static void value_of(char *buf, int i, int gen)
{
    memset(buf, 'a' + gen % 26, VAL_LEN);
    snprintf(buf, VAL_LEN, "g%d-k%d", gen, i);
}

/* A new database file each time: name-N.db. */
static void db_open(db *d, const char *name, double interval, uint64_t mmap_size)
{
    static int n;
    char file[64];
    bk_error err;
    memset(d, 0, sizeof *d);
    bk_config_default(&d->cfg);
    snprintf(file, sizeof file, "%s-%d.db", name, ++n);
    d->cfg.path = tmp_path(file);
    d->cfg.batch_interval = interval;
    if (mmap_size)
        d->cfg.mmap_size = mmap_size;
    CHECK_OK(bk_open(&d->cfg, &d->be, &err));
    CHECK_OK(bk_lock(d->be, &err));
    CHECK_OK(bk_create_bucket(d->be, str("b"), &err));
    CHECK_OK(bk_unlock(d->be, &err));
}

/* One locked section over keys [from, from+n): puts with a new generation,
 * and deletes of every 7th key that exists. */
static void db_write(db *d, int from, int n)
{
    bk_error err;
    char key[16], val[VAL_LEN];
    int g = ++d->next_gen;
    CHECK_OK(bk_lock(d->be, &err));
    for (int i = from; i < from + n && i < NKEYS; i++) {
        key_of(key, i);
        if (i % 7 == 3 && d->gen[i]) {
            CHECK_OK(bk_delete(d->be, str("b"), str(key), &err));
            d->gen[i] = 0;
        } else {
            value_of(val, i, g);
            bk_slice v = { val, VAL_LEN };
            CHECK_OK(bk_put(d->be, str("b"), str(key), v, &err));
            d->gen[i] = g;
        }
    }
    CHECK_OK(bk_unlock(d->be, &err));
}

/* Bucket b of be (through view v, else the batch tx) holds exactly gen[]. */
static int db_matches(bk_backend *be, bk_view *v, const int *gen)
{
    bk_error err;
    bk_result r;
    bk_slice to = str("l");
    bk_result_init(&r);
    if (!v && !CHECK_OK(bk_lock(be, &err)))
        return 0;
    int ok = CHECK_OK(v ? bk_view_range(v, str("b"), str(""), &to, 0, &r, &err)
                        : bk_tx_range(be, str("b"), str(""), &to, 0, &r, &err));
    if (!v)
        CHECK_OK(bk_unlock(be, &err));
    size_t j = 0;
    for (int i = 0; ok && i < NKEYS; i++) {
        char key[16], val[VAL_LEN];
        if (!gen[i])
            continue;
        key_of(key, i);
        value_of(val, i, gen[i]);
        bk_slice k = j < r.count ? bk_result_key(&r, j) : str("");
        bk_slice x = j < r.count ? bk_result_value(&r, j) : str("");
        ok = k.len == strlen(key) && !memcmp(k.data, key, k.len) && x.len == VAL_LEN &&
             !memcmp(x.data, val, VAL_LEN);
        j++;
    }
    ok = ok && j == r.count;
    bk_result_free(&r);
    return ok;
}

/* Readable through the batch tx and through a new view. */
static void db_check(db *d)
{
    bk_error err;
    bk_view *v;
    CHECK(db_matches(d->be, NULL, d->gen));
    if (CHECK_OK(bk_view_open(d->be, &v, &err))) {
        CHECK(db_matches(d->be, v, d->gen));
        bk_view_close(v);
    }
}

static void db_close(db *d)
{
    bk_error err;
    CHECK_OK(bk_close(d->be, 0, &err));
    bk_free(d->be);
    d->be = NULL;
}

/* (Close and) open again: the file holds every acknowledged write, and
 * nothing else. */
static void db_reopen(db *d)
{
    bk_error err;
    if (d->be)
        db_close(d);
    CHECK_OK(bk_open(&d->cfg, &d->be, &err));
    CHECK(d->be && db_matches(d->be, NULL, d->gen));
}

static uint32_t db_hash(db *d)
{
    bk_error err;
    uint32_t h = 0;
    CHECK_OK(bk_hash(d->be, NULL, 0, &h, &err));
    return h;
}

/* Every log entry queued so far, as "level: message" lines. */
static const char *logs(bk_backend *be)
{
    static char out[1 << 16];
    bk_log_entry e;
    size_t len = 0;
    out[0] = 0;
    while (bk_log_pop(be, &e))
        if (len < sizeof out)
            len += (size_t)snprintf(out + len, sizeof out - len, "%s: %s\n", e.level,
                                    e.message);
    return out;
}

static uint64_t stat_of(bk_backend *be, size_t field)
{
    bk_stats st;
    bk_error err;
    uint64_t x = 0;
    if (CHECK_OK(bk_stats_get(be, &st, &err)))
        memcpy(&x, (const char *)&st + field, sizeof x);
    return x;
}
#define STAT(be, f) stat_of(be, offsetof(bk_stats, f))

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* A faulted call's failure: BK_EIO, with a message naming the error. */
static void check_failure(int rc, const bk_error *err, int e, const char *what)
{
    if (!CHECK(rc == BK_EIO))
        fprintf(stderr, "  %s, %s: got %d: %s\n", what, strerror(e), rc,
                rc ? err->msg : "no error");
    else if (!CHECK(strstr(err->msg, strerror(e)) != NULL))
        fprintf(stderr, "  %s, %s: message: %s\n", what, strerror(e), err->msg);
}

/* A commit met a one-off fault. force_commit reports it, unless the attempt
 * its own rotation started failed before it began to wait: then the retry
 * it asks for at once succeeds, and it returns OK with everything durable.
 * Either way the failure was counted and logged with its cause. */
static void check_commit_fault(db *d, int rc, const bk_error *err, int e,
                               uint64_t failures, const char *what)
{
    if (rc)
        check_failure(rc, err, e, what);
    CHECK(STAT(d->be, commit_failures) > failures);
    const char *l = logs(d->be);
    CHECK(strstr(l, "error: commit failed") && strstr(l, strerror(e)));
}

/* Which call a fault hit, from the counts before it. */
static const char *const calls[] = {
    "pwrite@dsync", "pwrite", "writev", "write", "copy_file_range", "fdatasync",
    "fsync", "open", "mkdtemp", "rename", "renameat2", "mmap",
};
#define NCALLS_SEEN (sizeof calls / sizeof calls[0])

static void hits_all(long *out)
{
    for (size_t i = 0; i < NCALLS_SEEN; i++)
        out[i] = hits(calls[i]);
}

static const char *hit_call(const long *before)
{
    for (size_t i = 0; i < NCALLS_SEEN; i++)
        if (hits(calls[i]) > before[i])
            return calls[i];
    return "?";
}

/* Adds call to a list of the distinct calls a sweep faulted. */
static void note_call(char *list, size_t size, const char *call)
{
    char tok[40];
    snprintf(tok, sizeof tok, " %s,", call);
    if (!strstr(list, tok))
        snprintf(list + strlen(list), size - strlen(list), "%s", tok);
}

/* ---- commit ---- */

/* A disk that stays full or broken for `call` on the data file: every
 * commit fails until it is cleared, nothing is lost, and the committer goes
 * on by itself once it is. A failed meta-page write (pwrite@dsync, and
 * pwrite, which hits it too) makes LMDB give up on the environment: the
 * backend reopens it, which invalidates open views as a defrag does. There
 * only force_commit retries (a long batch_interval), or background retries
 * would invalidate the views the checks read through. */
static void commit_held(const char *call, int e)
{
    db d;
    bk_error err;
    bk_view *old;
    static int old_gen[NKEYS];
    int meta = !strncmp(call, "pwrite", 6);
    db_open(&d, "held", meta ? 1000 : 0.02, 0);
    db_write(&d, 0, 300);
    CHECK_OK(bk_force_commit(d.be, &err));
    memcpy(old_gen, d.gen, sizeof old_gen);
    CHECK_OK(bk_view_open(d.be, &old, &err));
    uint64_t commits = STAT(d.be, commits);
    long h = hits(call);

    arm(call, d.cfg.path, e, 0, -1);
    db_write(&d, 200, 300);
    check_failure(bk_force_commit(d.be, &err), &err, e, call);
    CHECK(hits(call) > h);
    const char *l = logs(d.be);
    CHECK(strstr(l, "error: commit failed") != NULL);
    if (!strcmp(call, "pwrite@dsync"))
        CHECK(strstr(l, "warn: database reopened") != NULL);
    db_write(&d, 100, 50);   /* more writes queue behind the failure */
    CHECK(bk_pending(d.be) == 350);
    db_check(&d);
    CHECK_CODE(bk_close(d.be, 0, &err), BK_EIO);   /* it would lose writes */
    CHECK(!bk_is_closed(d.be));
    CHECK(STAT(d.be, commit_failures) >= 2);
    CHECK(STAT(d.be, commits) == commits);

    /* The disk is back: the committer retries on its own (if it ticks). */
    clear_fn();
    for (int i = 0; i < 500 && !meta && bk_pending(d.be); i++)
        sleep_ms(10);
    CHECK(meta || bk_pending(d.be) == 0);
    CHECK_OK(bk_force_commit(d.be, &err));
    CHECK(bk_pending(d.be) == 0);
    CHECK(STAT(d.be, commits) > commits);
    if (!strcmp(call, "pwrite@dsync"))
        CHECK_CODE(bk_view_check(old, &err), BK_EINVALID);
    else if (!meta)
        CHECK(db_matches(d.be, old, old_gen));   /* a view never changes */
    bk_view_close(old);
    db_write(&d, 400, 100);
    CHECK_OK(bk_force_commit(d.be, &err));
    db_check(&d);
    db_reopen(&d);
    db_close(&d);
}

/* Every I/O call of a commit fails once, in turn: data pages (writev for
 * runs of pages; pwrite for single pages, which small commits that reuse
 * free pages have), the fdatasync, the meta page (pwrite on LMDB's O_DSYNC
 * fd). Each time nothing is lost and the next commit goes through. Commits
 * of n keys, each a little different (3 to 8 calls): the call at position
 * 0 to 7 fails, three times over. seen collects the calls faulted. */
static void commit_sweep(int e, int n, char *seen, size_t size)
{
    db d;
    bk_error err;
    long before[NCALLS_SEEN];
    int points = 0;
    db_open(&d, "sweep", 1000, 0);   /* no commits but ours */
    db_write(&d, 0, 3000);
    CHECK_OK(bk_force_commit(d.be, &err));
    for (long s = 0; s < 24; s++) {
        db_write(&d, (int)(s * 131) % (NKEYS - 100), n);
        hits_all(before);
        long h = hits(NULL);
        uint64_t failures = STAT(d.be, commit_failures);
        arm("*", d.cfg.path, e, s % 8, 1);
        int rc = bk_force_commit(d.be, &err);
        clear_fn();
        if (hits(NULL) == h) {   /* past the commit's last call */
            CHECK_OK(rc);
            continue;
        }
        points++;
        note_call(seen, size, hit_call(before));
        check_commit_fault(&d, rc, &err, e, failures, hit_call(before));
        db_check(&d);
        CHECK_OK(bk_force_commit(d.be, &err));
    }
    printf("commit of %d keys, %s: %d I/O points faulted\n", n, strerror(e), points);
    db_reopen(&d);
    db_close(&d);
}

/* The meta-page write fails and so does reopening the database: the
 * backend has failed. It says so (force_commit, the log), closes when
 * asked, reporting the buffered writes it lost, and releases everything:
 * the file opens again in this process, with every commit made before. */
static void reopen_fails(int e)
{
    db d;
    bk_error err;
    char suffix[PATH_MAX];
    static int committed[NKEYS];
    db_open(&d, "fail", 1000, 0);
    db_write(&d, 0, 300);
    CHECK_OK(bk_force_commit(d.be, &err));
    memcpy(committed, d.gen, sizeof committed);
    snprintf(suffix, sizeof suffix, "%s$", d.cfg.path);   /* not the lock file */
    arm("pwrite@dsync", d.cfg.path, e, 0, 1);
    arm("open", suffix, e, 0, -1);
    db_write(&d, 100, 300);
    int rc = bk_force_commit(d.be, &err);
    CHECK(rc == BK_EIO || rc == BK_ECLOSED);   /* the failure, or its outcome */
    CHECK(bk_is_closed(d.be));
    CHECK(strstr(logs(d.be), "error: reopening the database failed") != NULL);
    CHECK_CODE(bk_lock(d.be, &err), BK_ECLOSED);
    CHECK_CODE(bk_close(d.be, 0, &err), BK_EIO);
    CHECK(strstr(err.msg, "300 writes lost") != NULL);
    CHECK_OK(bk_close(d.be, 0, &err));
    bk_free(d.be);
    d.be = NULL;
    clear_fn();
    memcpy(d.gen, committed, sizeof committed);
    db_reopen(&d);
    db_close(&d);
}

/* ---- map growth ---- */

/* A 1 MiB map and a commit of about 1.6 MB: it fails with MDB_MAP_FULL, the
 * map is grown and the batch applied again. Growing is an munmap and an
 * mmap of the data file (mdb_env_set_mapsize): LMDB 0.9.24 writes nothing
 * to grow it, not even an ftruncate, so the write faults hit the commit
 * that follows the growth. With call "mmap" the growth itself fails
 * (ENOMEM, as an mmap does), which leaves LMDB without a map: the backend
 * reopens the database. */
static void growth(const char *call, int e, long count)
{
    db d;
    bk_error err;
    db_open(&d, "grow", 1000, 1 << 20);
    db_write(&d, 0, 100);
    CHECK_OK(bk_force_commit(d.be, &err));
    uint64_t grows = STAT(d.be, map_grows), failures = STAT(d.be, commit_failures);
    CHECK(STAT(d.be, map_size) == 1 << 20);
    long h = hits(call);
    arm(call, d.cfg.path, e, 0, count);
    db_write(&d, 0, NKEYS);
    int rc = bk_force_commit(d.be, &err);
    CHECK(hits(call) > h);
    if (count < 0) {
        check_failure(rc, &err, e, call);
        CHECK(STAT(d.be, map_grows) > grows);   /* the growth went through */
        db_check(&d);
        CHECK_CODE(bk_close(d.be, 0, &err), BK_EIO);
    } else {
        check_commit_fault(&d, rc, &err, e, failures, call);
        db_check(&d);
    }
    clear_fn();
    CHECK_OK(bk_force_commit(d.be, &err));
    CHECK(STAT(d.be, map_grows) > grows);
    CHECK(STAT(d.be, map_size) > 1 << 20);
    db_write(&d, 1000, 500);
    CHECK_OK(bk_force_commit(d.be, &err));
    db_check(&d);
    db_reopen(&d);
    db_close(&d);
}

/* ---- snapshot ---- */

/* What snap:write_to does with a file (lbackend.c): copy it all, in 64 KiB
 * chunks here (several calls), then fsync. */
static int snapshot_to(bk_snapshot *s, int fd, bk_error *err)
{
    uint64_t total = bk_snapshot_size(s);
    int rc = BK_OK;
    for (uint64_t done = 0; !rc && done < total; done += 65536) {
        size_t n = total - done < 65536 ? (size_t)(total - done) : 65536;
        rc = bk_snapshot_copy_fd(s, fd, done, n, err);
    }
    if (!rc && fsync(fd) < 0) {
        err->code = rc = BK_EIO;
        snprintf(err->msg, sizeof err->msg, "snapshot fsync: %s", strerror(errno));
    }
    return rc;
}

/* The snapshot file opens as a database holding exactly gen[] (hash h). */
static void snapshot_valid(const char *path, const int *gen, uint32_t h)
{
    bk_config cfg;
    bk_backend *be;
    bk_error err;
    uint32_t got = 0;
    bk_config_default(&cfg);
    cfg.path = path;
    cfg.readonly = 1;
    if (!CHECK_OK(bk_open(&cfg, &be, &err)))
        return;
    CHECK_OK(bk_hash(be, NULL, 0, &got, &err));
    CHECK(got == h);
    bk_view *v;
    if (CHECK_OK(bk_view_open(be, &v, &err))) {
        CHECK(db_matches(be, v, gen));
        bk_view_close(v);
    }
    CHECK_OK(bk_close(be, 0, &err));
    bk_free(be);
}

/* Every write of a snapshot to a file fails once in turn (its meta pages
 * go by write(), the rest by copy_file_range, then the fsync), and once
 * with copy_file_range unavailable (EXDEV: the read/write fallback): each
 * time the error is returned, the backend goes on committing with its data
 * intact, and the snapshot stays usable: the last round, with no fault
 * left to hit, writes a valid file of the state it was taken in. */
static void snapshot_faults(int e)
{
    db d;
    bk_error err;
    bk_snapshot *s;
    static int snap_gen[NKEYS];
    char seen[200] = "";
    long before[NCALLS_SEEN];
    int points = 0;
    const char *out = tmp_path("snap.out");
    db_open(&d, "snap", 1000, 0);
    db_write(&d, 0, 1000);
    uint32_t h = db_hash(&d), snap_h = h;
    memcpy(snap_gen, d.gen, sizeof snap_gen);
    if (!CHECK_OK(bk_snapshot_open(d.be, &s, &err)))
        return;
    CHECK(bk_snapshot_size(s) > 4 * 65536);
    for (long step = 0; step < 100; step++) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (!CHECK(fd >= 0))
            break;
        hits_all(before);
        long hh = hits(NULL);
        int fallback = step == 0;
        if (fallback) {   /* the fallback's first write after the meta pages' */
            arm("copy_file_range", "snap.out", EXDEV, 0, -1);
            arm("write", "snap.out", e, 1, 1);
        } else {
            arm("*", "snap.out", e, step - 1, 1);
        }
        int rc = snapshot_to(s, fd, &err);
        long got = hits(NULL) - hh;
        clear_fn();
        CHECK(close(fd) == 0);
        if (!fallback && got == 0) {
            CHECK_OK(rc);
            break;
        }
        points++;
        if (!fallback)
            note_call(seen, sizeof seen, hit_call(before));
        check_failure(rc, &err, e, fallback ? "write (fallback)" : hit_call(before));
        CHECK(db_hash(&d) == h);   /* the backend is unaffected */
        db_write(&d, (int)step * 10, 10);
        CHECK_OK(bk_force_commit(d.be, &err));
        db_check(&d);
        h = db_hash(&d);
        CHECK_OK(bk_snapshot_check(s, &err));
    }
    printf("snapshot, %s: %d I/O points faulted: write (fallback),%s\n", strerror(e),
           points, seen);
    CHECK(strstr(seen, " write,") && strstr(seen, " copy_file_range,") &&
          strstr(seen, " fsync,"));
    bk_snapshot_close(s);
    snapshot_valid(out, snap_gen, snap_h);
    CHECK(unlink(out) == 0);
    db_reopen(&d);
    db_close(&d);
}

/* ---- export ---- */

/* Temporary directories ("<db>.backend-tmp.*") beside the database. */
static int tmp_files(const char *path)
{
    char *dc = strdup(path), *bc = strdup(path);
    int n = -1;
    DIR *dir = dc && bc ? opendir(dirname(dc)) : NULL;
    if (dir) {
        const char *base = basename(bc);
        size_t len = strlen(base);
        struct dirent *de;
        n = 0;
        while ((de = readdir(dir)))
            n += !strncmp(de->d_name, base, len) &&
                 !strncmp(de->d_name + len, ".backend-tmp.", 13);
        closedir(dir);
    }
    free(dc);
    free(bc);
    return n;
}

/* Every I/O call of an export on its temporary file fails once, in turn:
 * its directory (mkdtemp) and marker, the file's open, writes and fsync,
 * the rename onto its name. Each time bk_bolt_export says why, nothing is
 * at that name, no temporary directory is left, and the database is as it
 * was; the last round, with no fault left to hit, exports it whole. A
 * fault in the cleanup once the file is in place (the temporary
 * directory's fsync before its marker goes) cannot undo it: the export
 * succeeds, whole, and the directory is gone all the same. */
static void export_faults(int e)
{
    db d;
    bk_error err;
    char seen[300] = "", out[PATH_MAX], imported[PATH_MAX];
    long before[NCALLS_SEEN];
    int points = 0, cleanup = 0;
    db_open(&d, "export", 1000, 0);
    db_write(&d, 0, NKEYS);   /* 1.6 MB: the file goes out in several writes */
    CHECK_OK(bk_force_commit(d.be, &err));
    snprintf(out, sizeof out, "%s.bolt", d.cfg.path);
    uint32_t h = db_hash(&d);
    for (long s = 0; s < 100; s++) {
        bk_bolt_export_stats st;
        hits_all(before);
        long hh = hits(NULL);
        arm("*", ".backend-tmp.", e, s, 1);
        int rc = bk_bolt_export(d.be, out, NULL, &st, &err);
        clear_fn();
        if (hits(NULL) == hh) {   /* past the export's last call */
            CHECK_OK(rc);
            CHECK(st.hash == h);
            break;
        }
        points++;
        note_call(seen, sizeof seen, hit_call(before));
        CHECK(tmp_files(out) == 0);
        CHECK(db_hash(&d) == h);
        if (rc == BK_OK) {   /* in the cleanup, after the rename */
            cleanup++;
            CHECK(st.hash == h && access(out, F_OK) == 0 && unlink(out) == 0);
            continue;
        }
        check_failure(rc, &err, e, hit_call(before));
        CHECK(access(out, F_OK) < 0 && errno == ENOENT);
    }
    printf("export, %s: %d I/O points faulted (%d in the cleanup after it was done):%s\n",
           strerror(e), points, cleanup, seen);
    CHECK(cleanup > 0 && cleanup < points);
    CHECK(strstr(seen, " mkdtemp,") && strstr(seen, " open,") && strstr(seen, " write,") &&
          strstr(seen, " fsync,") && strstr(seen, " renameat2,"));
    bk_config cfg = d.cfg;
    bk_bolt_import_stats ist;
    snprintf(imported, sizeof imported, "%s.imported", d.cfg.path);
    cfg.path = imported;
    CHECK_OK(bk_bolt_import(out, &cfg, &ist, &err));
    CHECK(ist.hash == h);
    db_check(&d);
    db_close(&d);
}

/* ---- defrag ---- */

/* Every I/O call of a defrag on its temp file fails once, in turn: its
 * directory's creation (mkdtemp) and marker, LMDB's opens, page and meta
 * writes and fdatasync, and the rename over the database. Each time bk_defrag fails saying why, the
 * database is as it was (same hash, every key), no temp file is left, and
 * the backend goes on committing. Then the directory's fsync fails (after
 * the rename: the defrag is done, and only warns). A fault in the cleanup
 * after the swap (the temporary directory's fsync) leaves it done. */
static void defrag_faults(int e)
{
    db d;
    bk_error err;
    char seen[300] = "";
    long before[NCALLS_SEEN];
    int points = 0, cleanup = 0;
    db_open(&d, "defrag", 1000, 0);
    for (int i = 0; i < 6; i++)   /* overwrites and deletes: free pages */
        db_write(&d, i * 300, 1500);
    CHECK_OK(bk_force_commit(d.be, &err));
    for (long s = 0; s < 200; s++) {
        uint32_t h = db_hash(&d);
        hits_all(before);
        long hh = hits(NULL);
        arm("*", ".backend-tmp.", e, s, 1);
        int rc = bk_defrag(d.be, NULL, &err);
        clear_fn();
        if (hits(NULL) == hh) {   /* past the defrag's last call */
            CHECK_OK(rc);
            CHECK(db_hash(&d) == h);
            break;
        }
        points++;
        note_call(seen, sizeof seen, hit_call(before));
        if (rc == BK_OK)   /* in the cleanup, after the swap */
            cleanup++;
        else
            check_failure(rc, &err, e, hit_call(before));
        CHECK(strstr(logs(d.be), rc ? "error: defrag failed" : "info: defrag finished") != NULL);
        CHECK(!bk_is_closed(d.be));
        CHECK(tmp_files(d.cfg.path) == 0);
        CHECK(db_hash(&d) == h);
        db_check(&d);
        db_write(&d, (int)(s * 97) % (NKEYS - 20), 20);
        CHECK_OK(bk_force_commit(d.be, &err));
    }
    printf("defrag, %s: %d I/O points faulted (%d in the cleanup after it was done):%s\n",
           strerror(e), points, cleanup, seen);
    CHECK(cleanup > 0 && cleanup < points);
    CHECK(strstr(seen, " mkdtemp,") && strstr(seen, " open,") && strstr(seen, " pwrite,") &&
          strstr(seen, " fdatasync,") && strstr(seen, " rename,"));

    char *dc = strdup(d.cfg.path);
    if (CHECK(dc != NULL)) {
        uint32_t h = db_hash(&d);
        long hh = hits("fsync");
        /* LMDB uses fdatasync: only directories, the temporary one's when
         * its marker is made and before it goes, the database's between */
        arm("fsync", dirname(dc), e, 1, 1);
        CHECK_OK(bk_defrag(d.be, NULL, &err));
        clear_fn();
        CHECK(hits("fsync") == hh + 1);   /* the database's directory's */
        CHECK(strstr(logs(d.be), "warn: defrag: fsync of the directory failed") != NULL);
        CHECK(db_hash(&d) == h);
    }
    free(dc);
    db_check(&d);
    db_reopen(&d);
    db_close(&d);
}

/* The same while writes commit during an online defrag, so that faults
 * also land in its catch-up (the commits it applies again to its copy):
 * every failure is reported by bk_defrag_wait, the old file stays in
 * service with every write, and the copy is gone. */
static void defrag_online_faults(int e)
{
    db d;
    bk_error err;
    int failed = 0, in_catchup = 0;
    db_open(&d, "online", 1000, 0);
    for (int i = 0; i < 4; i++)
        db_write(&d, i * 300, 1500);
    CHECK_OK(bk_force_commit(d.be, &err));
    for (long s = 0; s < 400; s++) {
        bk_defrag_job *job;
        long hh = hits(NULL);
        arm("*", ".backend-tmp.", e, s, 1);
        if (!CHECK_OK(bk_defrag_start(d.be, &job, &err)))
            break;
        for (int w = 0; !bk_defrag_done(job); w++) {
            db_write(&d, (int)(s * 31 + w * 7) % (NKEYS - 5), 5);
            CHECK_OK(bk_force_commit(d.be, &err));
        }
        int rc = bk_defrag_wait(job, NULL, &err);
        bk_defrag_job_free(job);
        clear_fn();
        if (hits(NULL) == hh) {   /* past the defrag's last call */
            CHECK_OK(rc);
            break;
        }
        if (rc) {   /* a fault after the data file's rename only warns */
            failed++;
            in_catchup += strstr(err.msg, "catching up") != NULL;
            check_failure(rc, &err, e, "online defrag");
        }
        CHECK(!bk_is_closed(d.be));
        CHECK(tmp_files(d.cfg.path) == 0);
        db_check(&d);
    }
    printf("online defrag, %s: %d faults failed it, %d of them in its catch-up\n",
           strerror(e), failed, in_catchup);
    CHECK(failed > 0 && in_catchup > 0);
    db_reopen(&d);
    db_check(&d);
    db_close(&d);
}

/* A temporary directory whose owner died (a crash) goes at the next open;
 * one whose owner lives stays, and so does a file that only looks like an
 * older build's leftover ("<db>.tmp.*": it may be anybody's). */
static void defrag_leftover(void)
{
    db d;
    bk_error err;
    bk_tmp live, dead;
    char foreign[PATH_MAX];
    db_open(&d, "left", 1000, 0);
    db_write(&d, 0, 10);
    db_close(&d);
    snprintf(foreign, sizeof foreign, "%s.tmp.AbC123", d.cfg.path);
    int fd = open(foreign, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1 && close(fd) == 0);
    CHECK_OK(bk_tmp_create(&live, d.cfg.path, &err));
    CHECK_OK(bk_tmp_create(&dead, d.cfg.path, &err));
    CHECK(close(dead.markfd) == 0);   /* its owner died: the flock is gone */
    CHECK(tmp_files(d.cfg.path) == 2);
    db_reopen(&d);
    CHECK(tmp_files(d.cfg.path) == 1);
    CHECK(access(live.dir, F_OK) == 0 && access(dead.dir, F_OK) < 0);
    CHECK(access(foreign, F_OK) == 0);
    bk_tmp_discard(&live);
    CHECK(tmp_files(d.cfg.path) == 0);
    CHECK(unlink(foreign) == 0);
    db_close(&d);
}

/* ---- a disk that fills up ---- */

/* The kernel writes what fits on a disk that fills up mid-write and returns
 * a short count, which LMDB reports as EIO: the backend says the disk is
 * full. A commit whose data pages (writev for runs of pages, pwrite for
 * single ones) or meta page (pwrite@dsync) are cut short, and a defrag
 * whose copy is: each fails saying "No space left on device", nothing is
 * lost, and it goes through once there is room again. */
static void disk_full(void)
{
    static const char *const writes[] = { "writev", "pwrite", "pwrite@dsync" };
    bk_error err;
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        db d;
        db_open(&d, "full", 1000, 0);
        db_write(&d, 0, 2000);
        CHECK_OK(bk_force_commit(d.be, &err));
        for (int k = 0; k < 40; k++)   /* free pages: small commits write single ones */
            db_write(&d, k * 50, 1);
        db_write(&d, 100, i == 1 ? 1 : 500);
        uint64_t failures = STAT(d.be, commit_failures);
        long h = hits(writes[i]);
        arm(writes[i], d.cfg.path, FAULTFS_SHORT, 0, 1);
        int rc = bk_force_commit(d.be, &err);
        clear_fn();
        CHECK(hits(writes[i]) > h);
        check_commit_fault(&d, rc, &err, ENOSPC, failures, writes[i]);
        db_check(&d);
        CHECK_OK(bk_force_commit(d.be, &err));
        db_reopen(&d);
        db_close(&d);
    }
    db d;
    db_open(&d, "full-defrag", 1000, 0);
    db_write(&d, 0, NKEYS);
    uint32_t h = db_hash(&d);
    arm("writev", ".backend-tmp.", FAULTFS_SHORT, 0, -1);
    int rc = bk_defrag(d.be, NULL, &err);
    clear_fn();
    check_failure(rc, &err, ENOSPC, "defrag's writev, cut short");
    CHECK(tmp_files(d.cfg.path) == 0);
    CHECK(db_hash(&d) == h);
    CHECK_OK(bk_defrag(d.be, NULL, &err));
    CHECK(db_hash(&d) == h);
    db_reopen(&d);
    db_close(&d);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void)
{
    /* Found at run time, so that the test runs (and skips) without the shim. */
    arm_fn = (faultfs_arm_fn *)dlsym(RTLD_DEFAULT, "faultfs_arm");
    hits_fn = (faultfs_hits_fn *)dlsym(RTLD_DEFAULT, "faultfs_hits");
    clear_fn = (faultfs_clear_fn *)dlsym(RTLD_DEFAULT, "faultfs_clear");
    if (!arm_fn || !hits_fn || !clear_fn) {
        printf("fault_test: SKIP: faultfs is not loaded "
               "(run with LD_PRELOAD=build/tests/faults/faultfs.so)\n");
        return 0;
    }
    double t0 = now();
    static const char *const held[] = { "pwrite", "writev", "fdatasync", "pwrite@dsync" };
    long h = hits(NULL), m = hits("pwrite@dsync");
    for (size_t i = 0; i < 2; i++) {
        char seen[200] = "";
        for (size_t j = 0; j < sizeof held / sizeof held[0]; j++)
            commit_held(held[j], errs[i]);
        commit_sweep(errs[i], 100, seen, sizeof seen);
        commit_sweep(errs[i], 1, seen, sizeof seen);
        printf("commit, %s: calls faulted:%s\n", strerror(errs[i]), seen);
        CHECK(strstr(seen, " pwrite,") && strstr(seen, " writev,") &&
              strstr(seen, " fdatasync,") && strstr(seen, " pwrite@dsync,"));
    }
    long meta = hits("pwrite@dsync") - m, commit = hits(NULL) - h - meta;

    h = hits(NULL);
    for (size_t i = 0; i < 2; i++) {
        growth("pwrite", errs[i], -1);
        growth("fdatasync", errs[i], -1);
        growth("pwrite@dsync", errs[i], 1);
    }
    growth("mmap", ENOMEM, 1);
    long grow = hits(NULL) - h;

    h = hits(NULL);
    for (size_t i = 0; i < 2; i++)
        snapshot_faults(errs[i]);
    long snap = hits(NULL) - h;

    h = hits(NULL);
    for (size_t i = 0; i < 2; i++)
        export_faults(errs[i]);
    long export = hits(NULL) - h;

    h = hits(NULL);
    long r = hits("rename");
    for (size_t i = 0; i < 2; i++) {
        defrag_faults(errs[i]);
        defrag_online_faults(errs[i]);
    }
    defrag_leftover();
    long ren = hits("rename") - r, defrag = hits(NULL) - h - ren;

    disk_full();

    h = hits(NULL);
    for (size_t i = 0; i < 2; i++)
        reopen_fails(errs[i]);
    long reopen = hits(NULL) - h;

    printf("faults injected: %ld (commit %ld, meta %ld, growth %ld, snapshot %ld, export %ld, "
           "defrag %ld, rename %ld, failed reopen %ld); %s in %.1f s\n",
           commit + meta + grow + snap + export + defrag + ren + reopen, commit, meta, grow, snap,
           export, defrag, ren, reopen, t_failed ? "CHECKS FAILED" : "nothing lost", now() - t0);
    return t_done();
}
