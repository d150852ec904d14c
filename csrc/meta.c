/* meta.c: LMDB's two meta pages, read and written outside LMDB (mdb.c:
 * MDB_meta after the 16-byte page header). Snapshots and defrag hand LMDB a
 * file whose meta pairs they write themselves, and open checks that the file
 * holds the root pages its newest meta names. */
#include "internal.h"

#include <string.h>

#define META_MAGIC_OFF 16
#define META_PSIZE_OFF 40     /* mm_dbs[FREE_DBI].md_pad holds the page size */
#define META_FREE_ROOT_OFF 80 /* mm_dbs[FREE_DBI].md_root */
#define META_MAIN_ROOT_OFF 128 /* mm_dbs[MAIN_DBI].md_root */
#define META_LAST_PG_OFF 136
#define META_TXNID_OFF 144

static uint64_t get64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

void bk_meta_parse(const void *page, bk_meta *m)
{
    const unsigned char *p = page;
    memcpy(&m->magic, p + META_MAGIC_OFF, 4);
    memcpy(&m->psize, p + META_PSIZE_OFF, 4);
    m->free_root = get64(p + META_FREE_ROOT_OFF);
    m->main_root = get64(p + META_MAIN_ROOT_OFF);
    m->last_pg = get64(p + META_LAST_PG_OFF);
    m->txnid = get64(p + META_TXNID_OFF);
}

int bk_meta_newest(const void *pair, size_t psize)
{
    bk_meta m[2];
    for (int i = 0; i < 2; i++)
        bk_meta_parse((const char *)pair + (size_t)i * psize, &m[i]);
    int ok0 = m[0].magic == BK_LMDB_MAGIC, ok1 = m[1].magic == BK_LMDB_MAGIC;
    if (ok0 && ok1)
        return m[1].txnid > m[0].txnid;
    return ok0 ? 0 : ok1 ? 1 : -1;
}

/* LMDB finds txn t's meta in slot t & 1 (mdb_txn_renew0 picks by the parity
 * of the lock file's txnid), so both slots get the newest page's state: as
 * txn `txnid` in its slot and as txnid - 1 in the other, whichever LMDB
 * reads, it sees that state. */
void bk_meta_pair(void *pair, size_t psize, int newest, uint64_t txnid)
{
    unsigned char *slot[2] = { pair, (unsigned char *)pair + psize };
    int mine = (int)(txnid & 1);
    uint64_t pgno = (uint64_t)mine, other_pgno = (uint64_t)(1 - mine), prev = txnid - 1;
    if (newest != mine)
        memcpy(slot[mine], slot[newest], psize);
    memcpy(slot[mine], &pgno, 8);
    memcpy(slot[mine] + META_TXNID_OFF, &txnid, 8);
    memcpy(slot[1 - mine], slot[mine], psize);
    memcpy(slot[1 - mine], &other_pgno, 8);
    memcpy(slot[1 - mine] + META_TXNID_OFF, &prev, 8);
}
