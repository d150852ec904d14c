// mkboltseeds.go: writes bolt_fuzz's seed corpus, corpus/bolt/. From the
// repository root, offline, against Debian's golang-etcd-server-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run csrc/fuzz/mkboltseeds.go
//
// Seeds: etcd's tiny.db as etcdctl saved it (with its SHA-256 trailer) and
// without the trailer (as a live member/snap/db), a few hostile variants of
// it, and small files written here by bbolt itself with 512-byte pages (small
// inputs fuzz faster): etcd's buckets with a branch level and overflow
// values, nested buckets, and a synced freelist.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

const (
	fixture = "../shared/fixtures/etcd/tiny.db"
	out     = "csrc/fuzz/corpus/bolt"
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
