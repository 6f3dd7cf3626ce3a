package wal

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
)

// A table builder compresses its blocks on BlockWorkers goroutines
// (Badger patch 10), upstream on 2 x NumCPU of them. Counted among the
// goroutines this test's own goroutine created: other tests' stores may
// still be building tables.
func TestTableBuilderBlockWorkers(t *testing.T) {
	self := func() string {
		buf := make([]byte, 64)
		id, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:runtime.Stack(buf, false)]), "goroutine "), " ")
		return id
	}()
	count := func(workers int) int {
		b := table.NewTableBuilder(table.Options{
			BlockSize: 4 << 10, TableSize: 1 << 20, Compression: options.Snappy, BlockWorkers: workers,
		})
		defer b.Close()
		n := 0
		for _, g := range parseStacks(allStacks()) {
			if strings.HasSuffix(g.by, "table.NewTableBuilder") && g.creator == self {
				n++
			}
		}
		b.Finish() // closes the block channel and waits for its goroutines
		return n
	}
	if n := count(1); n != 1 {
		t.Fatalf("a builder with BlockWorkers 1 compresses on %d goroutines, want 1", n)
	}
	if n, want := count(0), 2*runtime.NumCPU(); n != want {
		t.Fatalf("a builder with BlockWorkers 0 compresses on %d goroutines, want upstream's %d", n, want)
	}
}

func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// stacks is the process's goroutines: each one's frames and who created it.
type goroutineInfo struct {
	stack   string
	creator string // the goroutine that created it ("" if none shown)
	by      string // the function that created it
}

func parseStacks(buf []byte) map[string]goroutineInfo {
	gs := map[string]goroutineInfo{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, ok := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		if !ok {
			continue
		}
		info := goroutineInfo{stack: g}
		if i := strings.LastIndex(g, "\ncreated by "); i >= 0 {
			line, _, _ := strings.Cut(g[i+len("\ncreated by "):], "\n")
			fn, in, _ := strings.Cut(line, " in goroutine ")
			info.by, info.creator = fn, in
		}
		gs[id] = info
	}
	return gs
}

// A compaction stays within backgroundWorkers goroutines (Badger patch
// 10): with GOMAXPROCS 2, one of its key ranges iterated at a time, one of
// its tables written at a time, and one goroutine compressing each table
// builder's blocks. Upstream ran up to 5 ranges and 8 tables per
// compaction and 2 x NumCPU block goroutines per builder. Sampled while
// the store's compactions run and then while Flatten compacts it whole;
// counted per compaction (goroutines grouped by the one that created them)
// since two compactors may run at once.
func TestBadgerBackgroundWorkBounded(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	if w := backgroundWorkers(); w != 1 {
		t.Fatalf("backgroundWorkers with GOMAXPROCS 2 = %d, want 1", w)
	}
	db := open(t, t.TempDir(), nil) // 8 MiB memtables, compaction at 3 L0 tables
	defer db.Close()

	var (
		seenRanges, seenTables, seenBlocks int
		mostRanges, mostTables, mostBlocks int
		// a range's goroutine -> its compaction's, kept across samples: a
		// range does not wait for its last table's writer
		compactionOf = map[string]string{}
	)
	sample := func() {
		gs := parseStacks(allStacks())
		for id, g := range gs {
			if strings.HasSuffix(g.by, "compactBuildTables") {
				compactionOf[id] = g.creator
			}
		}
		ranges := map[string]int{} // per compaction goroutine
		tables := map[string]int{} // per compaction goroutine
		blocks := map[string]int{} // per goroutine that made the builders
		for _, g := range gs {
			switch {
			case strings.Contains(g.stack, "levelsController).subcompact(") && strings.HasSuffix(g.by, "compactBuildTables"):
				ranges[g.creator]++
				seenRanges++
			case strings.Contains(g.stack, "table.CreateTable(") && strings.HasSuffix(g.by, "subcompact"):
				c, ok := compactionOf[g.creator] // writer <- range <- compaction
				if !ok {
					continue // its range was never seen: not counted
				}
				tables[c]++
				seenTables++
			case strings.Contains(g.stack, "table.(*Builder).handleBlock(") && strings.HasSuffix(g.by, "NewTableBuilder"):
				blocks[g.creator]++
				seenBlocks++
			}
		}
		for _, n := range ranges {
			mostRanges = max(mostRanges, n)
		}
		for _, n := range tables {
			mostTables = max(mostTables, n)
		}
		for _, n := range blocks {
			mostBlocks = max(mostBlocks, n)
		}
	}
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for i := 0; i < 100000; i++ { // bounded: the writes and Flatten end well before
			select {
			case <-stop:
				return
			default:
			}
			sample()
			time.Sleep(200 * time.Microsecond)
		}
	}()

	// 48 MiB of distinct keys (six memtables), values of random hex: they
	// compress about as JSON does, so the tables keep their size.
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, 512)
	var err error
	for i := 0; i < 192 && err == nil; i++ { // batches of 256 KiB: a transaction fits in a memtable's 15 %
		b := db.Begin()
		for j := 0; j < 256 && err == nil; j++ {
			for k := range raw {
				raw[k] = byte(rng.Uint32())
			}
			_, err = b.Put("t", fmt.Sprintf("k%03d-%03d", j, i), []byte(hex.EncodeToString(raw)), "test", AnyVersion)
		}
		if err != nil {
			b.Discard()
			break
		}
		err = b.Commit()
	}
	if err == nil {
		err = db.bdb.Flatten(1)
	}
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("most at once in one compaction: %d key ranges iterated, %d tables written; %d block goroutines for one goroutine's builders (samples with each: %d, %d, %d)",
		mostRanges, mostTables, mostBlocks, seenRanges, seenTables, seenBlocks)
	if seenRanges == 0 || seenTables == 0 || seenBlocks == 0 {
		t.Fatal("no compaction seen while sampling: the test checked nothing")
	}
	if mostRanges > 1 {
		t.Errorf("%d key ranges of a compaction iterated at once, want at most 1", mostRanges)
	}
	if mostTables > 1 {
		t.Errorf("%d tables of a compaction written at once, want at most 1", mostTables)
	}
	// A range's goroutine has at most two builders alive: the one it fills
	// and the one waiting for (or in) the compaction's table slot.
	if mostBlocks > 2 {
		t.Errorf("%d block goroutines for one goroutine's builders, want at most 2", mostBlocks)
	}
}
