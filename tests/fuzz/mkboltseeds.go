// mkboltseeds.go: writes bolt_fuzz's seed corpus, corpus/bolt/. From the
// repository root, offline, against Debian's golang-etcd-server-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tests/fuzz/mkboltseeds.go
//
// Seeds: etcd's tiny.db as etcdctl saved it (with its SHA-256 trailer) and
// without the trailer (as a live member/snap/db), a few hostile variants of
// it, small files written here by bbolt itself with 512-byte pages (small
// inputs fuzz faster): etcd's buckets with a branch level and overflow
// values, nested buckets, and a synced freelist; and hostile files laid out
// by hand, whose elements overlap (issue 9).
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

const (
	fixture = "spec/fixtures/etcd/tiny.db"
	out     = "tests/fuzz/corpus/bolt"
	tinyPS  = 4096
)

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkboltseeds:", err)
		os.Exit(1)
	}
}

func write(name string, data []byte) {
	check(os.WriteFile(filepath.Join(out, name), data, 0o644))
}

// patched returns a copy of b with v written little-endian at off.
func patched(b []byte, off int, v uint64, size int) []byte {
	c := append([]byte(nil), b...)
	for i := 0; i < size; i++ {
		c[off+i] = byte(v >> (8 * i))
	}
	return c
}

// bboltFile makes a database with fill and returns it as a snapshot writes
// it (tx.WriteTo: exactly the pages in use, no trailer).
func bboltFile(noFreelistSync bool, fill func(tx *bolt.Tx) error) []byte {
	dir, err := os.MkdirTemp("", "mkboltseeds")
	check(err)
	defer os.RemoveAll(dir)
	db, err := bolt.Open(filepath.Join(dir, "db"), 0o600,
		&bolt.Options{PageSize: 512, NoFreelistSync: noFreelistSync})
	check(err)
	check(db.Update(fill))
	snap := filepath.Join(dir, "snap")
	check(db.View(func(tx *bolt.Tx) error { return tx.CopyFile(snap, 0o600) }))
	check(db.Close())
	data, err := os.ReadFile(snap)
	check(err)
	return data
}

func put(b *bolt.Bucket, k, v string) {
	check(b.Put([]byte(k), []byte(v)))
}

// etcdLike: etcd's bucket names, a "key" bucket of revisions deep enough for
// branch pages, values that overflow a page, empty buckets and values.
func etcdLike(tx *bolt.Tx) error {
	for _, name := range []string{"alarm", "auth", "authRoles", "authUsers", "cluster",
		"key", "lease", "members", "members_removed", "meta"} {
		if _, err := tx.CreateBucket([]byte(name)); err != nil {
			return err
		}
	}
	key := tx.Bucket([]byte("key"))
	for rev := uint64(1); rev <= 40; rev++ {
		k := make([]byte, 17)
		binary.BigEndian.PutUint64(k, rev)
		k[8] = '_'
		v := fmt.Sprintf("value-%d", rev)
		if rev%9 == 0 {
			v = string(make([]byte, 700+int(rev))) // two pages or more
		}
		check(key.Put(k, []byte(v)))
	}
	put(tx.Bucket([]byte("meta")), "consistent_index", "\x00\x00\x00\x00\x00\x00\x00\x2a")
	put(tx.Bucket([]byte("auth")), "authEnabled", "")
	put(tx.Bucket([]byte("cluster")), "clusterVersion", "3.4.0")
	return nil
}

func nested(tx *bolt.Tx) error {
	a, err := tx.CreateBucket([]byte("a"))
	check(err)
	b, err := a.CreateBucket([]byte("b"))
	check(err)
	put(b, "k", "v")
	c, err := b.CreateBucket([]byte("c"))
	check(err)
	put(c, "deep", "1")
	put(a, "z", "last")
	return nil
}

// Hand-made files of 512-byte pages: metas naming page 2 as the top-level
// root, each page's header, and leaf and branch elements (bbolt's page.go).
const (
	rawPS      = 512
	leafFlag   = 0x02
	branchFlag = 0x01
	bucketFlag = 0x01
)

var le = binary.LittleEndian

// rawFile is pages pages of rawPS bytes, its two metas written.
func rawFile(pages int) []byte {
	f := make([]byte, pages*rawPS)
	for m := 0; m < 2; m++ {
		p := f[m*rawPS:]
		le.PutUint64(p, uint64(m))
		le.PutUint16(p[8:], 0x04)
		meta := p[16:]
		le.PutUint32(meta, 0xED0CDAED)
		le.PutUint32(meta[4:], 2)
		le.PutUint32(meta[8:], rawPS)
		le.PutUint64(meta[16:], 2)             // root
		le.PutUint64(meta[32:], ^uint64(0))    // no freelist, as etcd writes
		le.PutUint64(meta[40:], uint64(pages)) // high-water mark
		le.PutUint64(meta[48:], uint64(m+1))   // txid
		h := fnv.New64a()
		h.Write(meta[:56])
		le.PutUint64(meta[56:], h.Sum64())
	}
	return f
}

// pageHeader writes page id's header and returns the page from its start.
func pageHeader(f []byte, id, flags, count, overflow int) []byte {
	p := f[id*rawPS:]
	le.PutUint64(p, uint64(id))
	le.PutUint16(p[8:], uint16(flags))
	le.PutUint16(p[10:], uint16(count))
	le.PutUint32(p[12:], uint32(overflow))
	return p
}

// leafElem sets element i of leaf page p: its key and value at page offset
// data (positions are relative to the element).
func leafElem(p []byte, i, flags, data, ksize, vsize int) {
	e := p[16+16*i:]
	le.PutUint32(e, uint32(flags))
	le.PutUint32(e[4:], uint32(data-16-16*i))
	le.PutUint32(e[8:], uint32(ksize))
	le.PutUint32(e[12:], uint32(vsize))
}

// bucketRoot makes page 2 a leaf holding one bucket "b" whose tree is at page 3.
func bucketRoot(f []byte) {
	p := pageHeader(f, 2, leafFlag, 1, 0)
	leafElem(p, 0, bucketFlag, 32, 1, 16)
	p[32] = 'b'
	le.PutUint64(p[33:], 3)
}

// overlapAmplified is issue 9's attack at a seed's size: bucket "b"'s one
// leaf page (3, with overflow pages to the end of the file) holds n
// elements, element i's key the i+1 bytes (all 1, so the keys ascend) just
// before a value they all share, the rest of the page. Read as it says, a
// walk would deliver the file's size hundreds of times over.
func overlapAmplified(n, leafPages int) []byte {
	f := rawFile(3 + leafPages)
	bucketRoot(f)
	p := pageHeader(f, 3, leafFlag, n, leafPages-1)
	keysEnd := 16 + 16*n + n
	for i := 0; i < n; i++ {
		key := keysEnd - (i + 1)
		leafElem(p, i, 0, key, i+1, leafPages*rawPS-keysEnd)
		p[key] = 1
	}
	return f
}

// overlapBranch: bucket "b"'s root is a branch page whose second key, "b",
// is the last byte of its first, "ab"; the children are proper leaves.
func overlapBranch() []byte {
	f := rawFile(6)
	bucketRoot(f)
	p := pageHeader(f, 3, branchFlag, 2, 0)
	keys := 16 + 2*16
	copy(p[keys:], "ab")
	for i, c := range []struct{ data, ksize, child int }{{keys, 2, 4}, {keys + 1, 1, 5}} {
		e := p[16+16*i:]
		le.PutUint32(e, uint32(c.data-16-16*i))
		le.PutUint32(e[4:], uint32(c.ksize))
		le.PutUint64(e[8:], uint64(c.child))
	}
	for i, key := range []string{"ab", "b"} {
		leaf := pageHeader(f, 4+i, leafFlag, 1, 0)
		leafElem(leaf, 0, 0, 32, len(key), 1)
		copy(leaf[32:], key+"v")
	}
	return f
}

func main() {
	check(os.MkdirAll(out, 0o755))
	tiny, err := os.ReadFile(fixture)
	check(err)
	live := tiny[:len(tiny)-sha256.Size]
	write("tiny-snapshot", tiny)
	write("tiny-live", live)
	// Meta 0's root past the high-water mark (bolt_fuzz redoes the checksum).
	write("tiny-root-past-hwm", patched(live, 16+16, 99, 8))
	root := 3 * tinyPS // the top-level bucket's root leaf page
	write("tiny-root-branch", patched(live, root+8, 0x01, 2))
	write("tiny-element-past-page", patched(live, root+16+4, 5000, 4))
	write("tiny-inline-root", patched(live, root+16+160+5, 3, 8))
	// Element 1 ("auth") moved onto element 0's key, and element 0 into the
	// element array.
	write("tiny-elements-overlap", patched(live, root+16+16+4, 144, 4))
	write("tiny-element-in-array", patched(live, root+16+4, 0, 4))
	write("overlap-amplified512", overlapAmplified(1000, 112))
	write("overlap-branch512", overlapBranch())

	small := bboltFile(true, etcdLike)
	write("etcd512-live", small)
	sum := sha256.Sum256(small)
	write("etcd512-snapshot", append(append([]byte(nil), small...), sum[:]...))
	write("nested512", bboltFile(true, nested))
	write("freelist512", bboltFile(false, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("key"))
		check(err)
		put(b, "a", "1")
		return nil
	}))
}
