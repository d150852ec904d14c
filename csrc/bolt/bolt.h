/*
 * bolt.h: reading etcd's data files (bbolt, the format of etcd 3.4's
 * member/snap/db and of `etcdctl snapshot save`) without Go, importing
 * them into a new backend database, and exporting a backend database as one.
 *
 * The file is mapped read-only and checked as it is read: every page id
 * against the meta page's high-water mark, every element against its page
 * and its neighbours (no overlaps), page types, key order, tree depth and
 * cycles. Anything wrong is reported as BK_EFORMAT with a message naming the
 * page and the file offset; a hostile file can make a call fail, never
 * crash, hang, read outside the file or deliver more bytes than it holds.
 *
 * A bk_bolt is read-only and may be shared by threads (walks keep their
 * state on their own). It holds a shared flock on the file, as bbolt's
 * read-only opens do, so a running etcd (which holds an exclusive one) makes
 * bk_bolt_open fail with BK_EBUSY instead of changing the file under us.
 */
#ifndef BOLT_H
#define BOLT_H

#include "core/backend.h"

#pragma GCC visibility push(hidden)   /* as in backend.h */

typedef struct bk_bolt bk_bolt;

typedef struct bk_bolt_info {
    uint32_t page_size;
    int meta;                  /* the meta page in use, 0 or 1: the valid one
                                * with the higher txid, as bbolt chooses */
    uint64_t txid;
    uint64_t high_water;       /* pages in use (meta.pgid) */
    uint64_t total_size;       /* high_water * page_size: `etcdctl snapshot
                                * status`'s TOTAL SIZE (Go's tx.Size()) */
    uint64_t file_size;        /* the whole file, trailer included */
    uint64_t root;             /* page of the top-level bucket tree */
    int sha256_trailer;        /* 1: the file ends in the SHA-256 of the rest
                                * (a snapshot), and it matched */
} bk_bolt_info;

/* Open and check the meta pages (and verify a SHA-256 trailer: a file whose
 * size is 32 bytes past a multiple of the page size has one). Fails with
 * BK_EFORMAT (not bbolt, or damaged), BK_EBUSY (open for writing) or BK_EIO. */
int bk_bolt_open(const char *path, bk_bolt **out, bk_error *err);
void bk_bolt_close(bk_bolt *b);
void bk_bolt_info_get(const bk_bolt *b, bk_bolt_info *out);

/* A bucket is named by its path from the top: path[0] .. path[depth - 1].
 * etcd's buckets are all top-level (depth 1); bbolt also allows buckets in
 * buckets (depth 2 and more) and the walk reports them as they are. */
typedef int (*bk_bolt_bucket_fn)(void *ctx, const bk_slice *path, size_t depth);
/* A key and its value in the bucket `path`. depth 0 would be a plain key at
 * the top level, which bbolt never writes (etcdctl rejects such files). */
typedef int (*bk_bolt_kv_fn)(void *ctx, const bk_slice *path, size_t depth,
                             bk_slice key, bk_slice value);

/* Visit every bucket in name order, each followed by its keys in key order
 * (a nested bucket where its name falls among its parent's keys), as
 * bbolt's cursors do: the order of etcd's hash. Slices point into the mapped
 * file, valid until bk_bolt_close. Either callback may be NULL. A callback's
 * non-zero return stops the walk and is returned as it is, err untouched (a
 * callback that wants a message fills one of its own, through ctx); a
 * malformed file stops it with BK_EFORMAT, after callbacks for what came
 * before the fault. */
int bk_bolt_walk(const bk_bolt *b, bk_bolt_bucket_fn on_bucket,
                 bk_bolt_kv_fn on_kv, void *ctx, bk_error *err);

typedef struct bk_bolt_import_stats {
    uint64_t buckets;
    uint64_t keys;             /* over all buckets: etcdctl's TOTAL KEYS */
    uint64_t bytes;            /* of those keys and their values */
    uint32_t hash;             /* etcdctl's HASH of the source, which the
                                * import's bk_hash was checked to equal */
} bk_bolt_import_stats;

/* Copy every bucket, key and value of the bbolt file src, byte for byte,
 * into a NEW backend database at dst->path (refused if that path exists;
 * dst must not be readonly or owns_dir) through the public API,
 * commit it durably and close it. Files with nested buckets or top-level
 * plain keys, which etcd never writes, are refused with BK_EFORMAT naming
 * them. On any failure nothing is left behind at dst->path (nor its -lock
 * file). st may be NULL. */
int bk_bolt_import(const char *src, const bk_config *dst,
                   bk_bolt_import_stats *st, bk_error *err);

/* ---- export (bolt_write.c) ---- */

typedef struct bk_bolt_export_opts {
    int trailer;               /* append the SHA-256 of the file, as `etcdctl
                                * snapshot save` does (restore checks it) */
    /* Called with no lock held after each step of the write (about 8 MiB):
     * done and total count the bytes of dst. Its non-zero return stops the
     * export and is returned as it is, err untouched. NULL: none. */
    int (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
} bk_bolt_export_opts;

typedef struct bk_bolt_export_stats {
    uint64_t buckets;
    uint64_t keys;             /* over all buckets */
    uint64_t bytes;            /* of those keys and their values */
    uint32_t hash;             /* bk_hash of the exported state: etcdctl's HASH */
    uint32_t page_size;
    uint64_t high_water;       /* pages: etcdctl's TOTAL SIZE / page_size */
    uint64_t file_size;        /* of dst, trailer included */
} bk_bolt_export_stats;

/* Write the committed data of src (commits first, as a snapshot does: a
 * locked section of the calling thread gives BK_ELOCKED) to a NEW bbolt
 * file dst (refused if the path exists), as `bbolt compact` writes one:
 * every bucket a top-level bucket, pages filled, small buckets inline, an
 * empty freelist page and no unreachable page. Writers go on meanwhile:
 * the export reads a snapshot (so a defrag or close of src stops it with
 * BK_EINVALID or BK_ECLOSED). The file is made beside dst (mode 0600),
 * fsync'd and renamed into place; on any failure nothing is left at dst.
 * opts and st may be NULL (opts NULL: a trailer, no progress). */
int bk_bolt_export(bk_backend *src, const char *dst, const bk_bolt_export_opts *opts,
                   bk_bolt_export_stats *st, bk_error *err);
/* The same from the database at path src, opened read-only for it. */
int bk_bolt_export_path(const char *src, const char *dst, const bk_bolt_export_opts *opts,
                        bk_bolt_export_stats *st, bk_error *err);

#pragma GCC visibility pop

#endif
