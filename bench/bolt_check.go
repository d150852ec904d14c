// bolt_check.go: bbolt's own verdict on an etcd data file, for the export's
// optional test (spec/export_spec.lua) and for comparing sizes by hand.
//
//	bolt_check FILE [COMPACTED]
//
// Opens FILE read-only with bbolt (a SHA-256 trailer is ignored, as bbolt
// does), runs tx.Check() (what `etcdctl snapshot status` runs first: every
// page below the high-water mark reachable or free, once) and walks every
// bucket. With COMPACTED (a path that must not exist), also writes FILE as
// `bbolt compact` would (bbolt.Compact, FillPercent 1.0) for comparison.
// Prints one line of space-separated key=value pairs: buckets, keys, bytes
// (of keys and values), size (tx.Size(): high-water mark x page size),
// page_size, and compacted_size with COMPACTED. Any error: a message on
// stderr and exit status 1.
//
// Built offline in GOPATH mode against Debian's golang-etcd-server-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build bench/bolt_check.go
package main

import (
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "bolt_check: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 && len(os.Args) != 3 {
		fail("usage: bolt_check FILE [COMPACTED]")
	}
	db, err := bolt.Open(os.Args[1], 0400, &bolt.Options{ReadOnly: true})
	if err != nil {
		fail("%s: %v", os.Args[1], err)
	}
	defer db.Close()
	var buckets, keys, bytes, size int64
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("tx.Check: %v", err)
		}
		size = tx.Size()
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			buckets++
			return b.ForEach(func(k, v []byte) error {
				keys++
				bytes += int64(len(k) + len(v))
				return nil
			})
		})
	})
	if err != nil {
		fail("%s: %v", os.Args[1], err)
	}
	line := fmt.Sprintf("buckets=%d keys=%d bytes=%d size=%d page_size=%d",
		buckets, keys, bytes, size, db.Info().PageSize)
	if len(os.Args) == 3 {
		if _, err := os.Stat(os.Args[2]); err == nil {
			fail("%s exists", os.Args[2])
		}
		dst, err := bolt.Open(os.Args[2], 0600, nil)
		if err != nil {
			fail("%s: %v", os.Args[2], err)
		}
		if err := bolt.Compact(dst, db, 0); err != nil {
			fail("compacting into %s: %v", os.Args[2], err)
		}
		err = dst.View(func(tx *bolt.Tx) error {
			line += fmt.Sprintf(" compacted_size=%d", tx.Size())
			return nil
		})
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fail("%s: %v", os.Args[2], err)
		}
	}
	fmt.Println(line)
}
