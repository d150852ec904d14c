// etcd_bench.go: the etcd side of the benchmark suite. The same workloads as
// the Lua side and bench/lmdb_bench.c, on the same data, through etcd's own
// storage backend (go.etcd.io/etcd/mvcc/backend, 3.4, on bbolt), used the
// way etcd uses it.
//
//	etcd_bench WORKLOAD DIR N
//
// WORKLOAD is w1 to w9; DIR an existing empty directory, whose files made
// here are removed at the end; N the number of keys (>= 1). Prints one line
// of space-separated key=value pairs, with seconds=<wall clock of the timed
// part> (w5 and w9 print their own numbers). Any error: a message on stderr
// and exit status 1.
//
// Data (bit-identical to lmdb_bench.c and the Lua side): splitmix64 outputs
// written little-endian. K(i): 64 bytes, 8 outputs of one generator seeded 1,
// keys drawn in order. V: 128 bytes, 16 outputs of a generator seeded 2, the
// value of every put. S(i): 8 bytes, i big-endian. R(k): output k of a
// generator seeded 3, mod N.
//
// Built offline in GOPATH mode against Debian's golang-etcd-server-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build bench/etcd_bench.go
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/mvcc/backend"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	keyLen    = 64
	valLen    = 128
	seqLen    = 8
	txnOps    = 10000           // deletes per Lock/Unlock section in w8 (etcd's batch limit)
	scanChunk = 1000            // entries per UnsafeRange in w4
	latPuts   = 200000          // timed puts in w9
	w5Ops     = 100000          // read txs opened and released per buffer size in w5,
	w5Budget  = 2 * time.Second // or fewer: each copies the buffer (2 ms at 100k)
)

var (
	bucket = []byte("test")
	// etcd's concurrent read tx refuses ranges with limit > 1 outside its
	// "key" bucket (read_tx.go, safeRangeBucket), so the w4 scan uses that.
	scanBucket = []byte("key")
	scanEnd    = bytes.Repeat([]byte{0xff}, keyLen+1) // above every key
)

// ---- errors and the files we own -------------------------------------------

var (
	dir      string
	dataPath string // the backend; defrag renames its db.tmp.* over it
	copyPath string // w7's snapshot
	ownFiles bool   // set once DIR is known to have been empty
)

// removeFiles removes what we made in DIR; strict: report failures other than
// "not there" on stderr.
func removeFiles(strict bool) bool {
	if !ownFiles {
		return true
	}
	ok := true
	tmps, _ := filepath.Glob(filepath.Join(dir, "db.tmp.*")) // a defrag that failed
	for _, p := range append([]string{dataPath, copyPath}, tmps...) {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			if strict {
				fmt.Fprintf(os.Stderr, "etcd_bench: %v\n", err)
			}
			ok = false
		}
	}
	return ok
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "etcd_bench: "+format+"\n", args...)
	removeFiles(false)
	os.Exit(1)
}

// fatalHook ends the program on the backend's Fatal logs, from whichever
// goroutine logs them (its committer too), with our exit status and cleanup.
type fatalHook struct{}

func (fatalHook) OnWrite(*zapcore.CheckedEntry, []zapcore.Field) {
	die("fatal error in the backend (logged above)")
}

// logger: etcd's zap logger, warnings and worse on stderr. Its Panic logs
// panic, and main recovers them.
var logger = zap.New(zapcore.NewCore(
	zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
	zapcore.Lock(os.Stderr), zapcore.WarnLevel), zap.WithFatalHook(fatalHook{}))

// The one output line, printed at the very end.
var result strings.Builder

func out(format string, args ...interface{}) {
	fmt.Fprintf(&result, format, args...)
}

// ---- data --------------------------------------------------------------------

type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9E3779B97F4A7C15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// split cuts buf into n keys of klen bytes each (capacity-limited slices).
func split(buf []byte, n, klen int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = buf[i*klen : (i+1)*klen : (i+1)*klen]
	}
	return keys
}

// randomKeys returns K(0..n-1).
func randomKeys(n int) [][]byte {
	buf := make([]byte, n*keyLen)
	s := splitmix64(1)
	for i := 0; i < len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], s.next())
	}
	return split(buf, n, keyLen)
}

// seqKeys returns S(0..n-1).
func seqKeys(n int) [][]byte {
	buf := make([]byte, n*seqLen)
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint64(buf[i*seqLen:], uint64(i))
	}
	return split(buf, n, seqLen)
}

func makeValue() []byte {
	v := make([]byte, valLen)
	s := splitmix64(2)
	for i := 0; i < valLen; i += 8 {
		binary.LittleEndian.PutUint64(v[i:], s.next())
	}
	return v
}

// ---- backend helpers -------------------------------------------------------

// open opens a backend at DIR/data.db: etcd's defaults (a commit every 100 ms
// or 10,000 writes, 10 GiB initial mmap) unless interval/limit are given.
func open(interval time.Duration, limit int) backend.Backend {
	cfg := backend.DefaultBackendConfig()
	cfg.Path = dataPath
	cfg.Logger = logger
	if interval > 0 {
		cfg.BatchInterval, cfg.BatchLimit = interval, limit
	}
	return backend.New(cfg)
}

func createBucket(be backend.Backend, name []byte) {
	tx := be.BatchTx()
	tx.Lock()
	tx.UnsafeCreateBucket(name)
	tx.Unlock()
}

// fill puts keys with val, each its own Lock, put, Unlock (as etcd's
// BenchmarkBackendPut), then ForceCommit. Returns the seconds from the first
// put to the end of ForceCommit.
func fill(be backend.Backend, name []byte, keys [][]byte, val []byte, seq bool) float64 {
	tx := be.BatchTx()
	t0 := time.Now()
	for _, k := range keys {
		tx.Lock()
		if seq {
			tx.UnsafeSeqPut(name, k, val)
		} else {
			tx.UnsafePut(name, k, val)
		}
		tx.Unlock()
	}
	be.ForceCommit()
	return time.Since(t0).Seconds()
}

// buildW1 makes the W1 database: K(0..n-1) with val in generation order, all
// committed.
func buildW1(name []byte, keys [][]byte, val []byte) (backend.Backend, float64) {
	be := open(0, 0)
	createBucket(be, name)
	return be, fill(be, name, keys, val, false)
}

func closeBackend(be backend.Backend) {
	if err := be.Close(); err != nil {
		die("close: %v", err)
	}
}

// commits is the backend's commit count (a method of its concrete type).
func commits(be backend.Backend) (int64, bool) {
	c, ok := be.(interface{ Commits() int64 })
	if !ok {
		return 0, false
	}
	return c.Commits(), true
}

// ---- workloads -----------------------------------------------------------------

// loadResult prints what w1 and w2 report about a load, then closes be.
func loadResult(be backend.Backend, secs float64) {
	out(" seconds=%.6f size=%d", secs, be.Size())
	if c, ok := commits(be); ok {
		out(" commits=%d", c)
	}
	closeBackend(be)
}

func w1(n int, val []byte) {
	loadResult(buildW1(bucket, randomKeys(n), val))
}

func w2(n int, val []byte) {
	be := open(0, 0)
	createBucket(be, bucket)
	loadResult(be, fill(be, bucket, seqKeys(n), val, true))
}

func w3(n int, val []byte) {
	keys := randomKeys(n)
	order := make([]int, n)
	s := splitmix64(3)
	for k := range order {
		order[k] = int(s.next() % uint64(n))
	}
	be, _ := buildW1(bucket, keys, val)
	var check uint64
	rtx := be.ConcurrentReadTx()
	rtx.RLock()
	t0 := time.Now()
	for _, i := range order {
		_, vs := rtx.UnsafeRange(bucket, keys[i], nil, 0)
		if len(vs) != 1 || len(vs[0]) < 1 {
			die("get of key %d: %d values", i, len(vs))
		}
		check += uint64(vs[0][0])
	}
	secs := time.Since(t0).Seconds()
	rtx.RUnlock()
	out(" seconds=%.6f gets=%d check=%d", secs, n, check)
	closeBackend(be)
}

func w4(n int, val []byte) {
	keys := randomKeys(n)
	be, _ := buildW1(scanBucket, keys, val)
	count := 0
	rtx := be.ConcurrentReadTx()
	rtx.RLock()
	t0 := time.Now()
	start := []byte{}
	for {
		ks, _ := rtx.UnsafeRange(scanBucket, start, scanEnd, scanChunk)
		count += len(ks)
		if len(ks) < scanChunk {
			break
		}
		last := ks[len(ks)-1] // in bbolt's map: copied, with a 0 byte after
		start = append(make([]byte, 0, len(last)+1), last...)
		start = append(start, 0)
	}
	secs := time.Since(t0).Seconds()
	rtx.RUnlock()
	if count != n {
		die("scan found %d keys of %d", count, n)
	}
	out(" seconds=%.6f keys=%d", secs, count)
	closeBackend(be)
}

// w5: ConcurrentReadTx open and release (RLock, RUnlock), ns per op, with 0,
// 1000 and 100000 puts buffered (at most N). Each open copies the whole read
// buffer, so the loop stops early after w5Budget; ops_* says how many ran.
func w5(n int, val []byte) {
	keys := randomKeys(n)
	be := open(time.Hour, 1<<40)
	createBucket(be, bucket)
	tx := be.BatchTx()
	buffered := 0
	for _, want := range []int{0, 1000, 100000} {
		tx.Lock()
		for ; buffered < want && buffered < n; buffered++ {
			tx.UnsafePut(bucket, keys[buffered], val)
		}
		tx.Unlock()
		ops, t0 := 0, time.Now()
		for ops < w5Ops && (ops%64 != 0 || time.Since(t0) < w5Budget) {
			rtx := be.ConcurrentReadTx()
			rtx.RLock()   // a no-op in 3.4
			rtx.RUnlock() // the release: txWg.Done()
			ops++
		}
		out(" ns_%d=%.1f ops_%d=%d", want, float64(time.Since(t0).Nanoseconds())/float64(ops), want, ops)
	}
	closeBackend(be)
}

func w6(n int, val []byte) {
	keys := randomKeys(n)
	be, _ := buildW1(bucket, keys, val)
	t0 := time.Now()
	h, err := be.Hash(nil)
	secs := time.Since(t0).Seconds()
	if err != nil {
		die("hash: %v", err)
	}
	out(" seconds=%.6f hash=%d keys=%d", secs, h, n)
	closeBackend(be)
}

func w7(n int, val []byte) {
	keys := randomKeys(n)
	be, _ := buildW1(bucket, keys, val)
	t0 := time.Now()
	snap := be.Snapshot()
	size := snap.Size()
	f, err := os.OpenFile(copyPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0644)
	if err != nil {
		die("%v", err)
	}
	total, err := snap.WriteTo(f)
	if err != nil {
		die("snapshot write: %v", err)
	}
	if err = f.Sync(); err != nil {
		die("fsync %s: %v", copyPath, err)
	}
	if err = f.Close(); err != nil {
		die("close %s: %v", copyPath, err)
	}
	if err = snap.Close(); err != nil {
		die("snapshot close: %v", err)
	}
	secs := time.Since(t0).Seconds()
	st, err := os.Stat(copyPath)
	if err != nil {
		die("%v", err)
	}
	if total != size || st.Size() != size {
		die("snapshot of %d bytes: wrote %d, file has %d", size, total, st.Size())
	}
	out(" seconds=%.6f bytes=%d", secs, total)
	closeBackend(be)
}

// w8: delete K(0), K(2), ... in Lock/Unlock sections of 10,000 deletes (each
// Unlock then commits: etcd's batch limit), ForceCommit, time Defrag.
func w8(n int, val []byte) {
	keys := randomKeys(n)
	be, _ := buildW1(bucket, keys, val)
	tx := be.BatchTx()
	deletes := 0
	for i := 0; i < n; i += 2 {
		if deletes%txnOps == 0 {
			tx.Lock()
		}
		tx.UnsafeDelete(bucket, keys[i])
		if deletes++; deletes%txnOps == 0 || i+2 >= n {
			tx.Unlock()
		}
	}
	be.ForceCommit()
	before := be.Size()
	t0 := time.Now()
	if err := be.Defrag(); err != nil {
		die("defrag: %v", err)
	}
	secs := time.Since(t0).Seconds()
	after := be.Size()
	count := 0
	rtx := be.ConcurrentReadTx()
	rtx.RLock()
	err := rtx.UnsafeForEach(bucket, func(k, v []byte) error { count++; return nil })
	rtx.RUnlock()
	if err != nil {
		die("count: %v", err)
	}
	if count != n-deletes {
		die("%d keys left after %d deletes of %d", count, deletes, n)
	}
	out(" seconds=%.6f size_before=%d size_after=%d keys=%d", secs, before, after, count)
	closeBackend(be)
}

// w9: latency of single puts (Lock, UnsafePut, Unlock) while commits run.
func w9(n int, val []byte) {
	if n > latPuts {
		n = latPuts
	}
	keys := randomKeys(n)
	be := open(0, 0)
	createBucket(be, bucket)
	tx := be.BatchTx()
	lat := make([]time.Duration, n)
	for i, k := range keys {
		t0 := time.Now()
		tx.Lock()
		tx.UnsafePut(bucket, k, val)
		tx.Unlock()
		lat[i] = time.Since(t0)
	}
	c, haveCommits := commits(be)
	closeBackend(be)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	stalls := n - sort.Search(n, func(i int) bool { return lat[i] > time.Millisecond })
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	pct := func(p float64) float64 {
		i := int(math.Ceil(float64(n) * p))
		if i < 1 {
			i = 1
		}
		return us(lat[i-1])
	}
	out(" p50_us=%.3f p99_us=%.3f p999_us=%.3f max_us=%.3f stalls_over_1ms=%d",
		pct(0.5), pct(0.99), pct(0.999), us(lat[n-1]), stalls)
	if haveCommits {
		out(" commits=%d", c)
	}
}

// ---- main ----------------------------------------------------------------------

var workloads = map[string]func(n int, val []byte){
	"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5, "w6": w6, "w7": w7, "w8": w8, "w9": w9,
}

const names = "w1 w2 w3 w4 w5 w6 w7 w8 w9"

// checkEmpty dies unless d is an existing empty directory.
func checkEmpty(d string) {
	st, err := os.Stat(d)
	if err != nil {
		die("%v", err)
	}
	if !st.IsDir() {
		die("%s: not a directory", d)
	}
	f, err := os.Open(d)
	if err != nil {
		die("%v", err)
	}
	entries, err := f.Readdirnames(1)
	f.Close()
	if len(entries) > 0 {
		die("%s is not empty: DIR must be an empty directory", d)
	}
	if err != nil && err != io.EOF {
		die("%s: %v", d, err)
	}
}

func main() {
	defer func() {
		if r := recover(); r != nil {
			die("panic: %v", r)
		}
	}()
	if len(os.Args) != 4 {
		die("usage: etcd_bench WORKLOAD DIR N (WORKLOAD: %s)", names)
	}
	run, ok := workloads[os.Args[1]]
	if !ok {
		die("unknown workload '%s' (%s)", os.Args[1], names)
	}
	n, err := strconv.ParseUint(os.Args[3], 10, 64)
	if err != nil || n < 1 || n > math.MaxInt/(2*keyLen) {
		die("bad N '%s': an integer >= 1", os.Args[3])
	}
	dir = os.Args[2]
	checkEmpty(dir)
	dataPath = filepath.Join(dir, "data.db")
	copyPath = filepath.Join(dir, "copy.db")
	ownFiles = true

	val := makeValue()
	out("workload=%s n=%d", os.Args[1], n)
	run(int(n), val)

	if !removeFiles(true) {
		die("could not remove the files in %s", dir)
	}
	ownFiles = false
	if _, err := fmt.Println(result.String()); err != nil {
		die("writing the result: %v", err)
	}
}
