/* faultfs.h: the control API of faultfs.so, an LD_PRELOAD shim that makes
 * chosen I/O calls fail (faultfs.c says which calls and how). A test looks
 * these up with dlsym(RTLD_DEFAULT, ...), so that it builds and runs (and
 * skips) without the shim; the typedefs are for those lookups. */
#ifndef FAULTFS_H
#define FAULTFS_H

/* Fail `count` calls (count < 0: all until cleared) of `call` on a file
 * whose path contains `path` (NULL or "": any file; "...$": whose path ends
 * with it; rename and copy_file_range: either file), after letting `skip`
 * such calls pass. A failing call does nothing, sets errno to err and
 * returns -1 (mmap: MAP_FAILED). `call` is a function name ("pwrite",
 * "fdatasync", "rename", ...), NAME@dsync for that call on a file opened
 * with O_DSYNC or O_SYNC (LMDB writes its meta pages so), or "*" (or
 * NULL) for every interposed call but mmap. Returns 0, or -1 with errno
 * EINVAL (unknown call, bad err) or ENOMEM (too many rules). */
int faultfs_arm(const char *call, const char *path, int err, long skip, long count);
/* As err: a write call writes half of what it was given (rounded up) and
 * returns that count, as on a disk that fills up mid-write, and fstatvfs
 * reports no free blocks from then on, until faultfs_clear. Any other call
 * fails with EIO. */
#define FAULTFS_SHORT 4096
/* Faults injected so far in this process: by `call` (NAME@dsync: those on
 * O_DSYNC files only), or all of them for NULL or "*". */
long faultfs_hits(const char *call);
/* Disarm every rule; the hit counts stay. */
void faultfs_clear(void);

typedef int faultfs_arm_fn(const char *, const char *, int, long, long);
typedef long faultfs_hits_fn(const char *);
typedef void faultfs_clear_fn(void);

#endif
