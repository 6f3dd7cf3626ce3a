package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReadsDuringClose hammers every kind of read (snapshot, get, scan,
// tables, log, sizes, and snapshots taken before Close and used after it)
// while the handle closes: each read either succeeds or answers ErrClosed,
// none panics or hangs, and Close returns once the reads in progress end.
// Before the guard, a read on a closed Badger handle dereferenced its nil
// memtable (issue 14).
func TestReadsDuringClose(t *testing.T) {
	db := open(t, t.TempDir(), nil)
	b := db.Begin()
	for i := range 200 {
		mustPut(t, b, "t", fmt.Sprintf("k%03d", i), `{"v":1}`)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	early, err := db.Snapshot() // used after Close below
	if err != nil {
		t.Fatal(err)
	}

	var ok, closed atomic.Int64
	check := func(what string, err error) bool {
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, ErrClosed):
			closed.Add(1)
			return false
		default:
			t.Errorf("%s: %v, want nil or ErrClosed", what, err)
			return false
		}
		return true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for n := 0; n < 1_000_000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				switch (g + n) % 4 {
				case 0:
					s, err := db.Snapshot()
					if !check("snapshot", err) {
						continue
					}
					_, _, err = s.Get("t", "k007")
					check("get", err)
					_, err = s.Scan("t", "", 50, func(string, State) error { return nil })
					check("scan", err)
					s.Close()
				case 1:
					check("read log", db.ReadLog(0, db.LastLSN(), 100, func(Record) error { return nil }))
				case 2:
					s, err := db.Snapshot()
					if !check("snapshot", err) {
						continue
					}
					_, err = s.Tables("", 10, func(TableInfo) error { return nil })
					check("tables", err)
					s.Close()
					s.Close() // twice is allowed
				case 3:
					db.Size()
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while reads ran")
	}
	time.Sleep(10 * time.Millisecond) // reads go on against the closed handle
	close(stop)
	wg.Wait()

	// A snapshot from before Close: its reads answer ErrClosed, Close of it
	// is a no-op.
	if _, _, err := early.Get("t", "k001"); !errors.Is(err, ErrClosed) {
		t.Errorf("get through a snapshot of the closed store: %v, want ErrClosed", err)
	}
	early.Close()
	if _, err := db.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("snapshot after close: %v", err)
	}
	if lsm, vlog := db.Size(); lsm != 0 || vlog != 0 {
		t.Errorf("size after close: %d %d, want zeros", lsm, vlog)
	}
	if ok.Load() == 0 || closed.Load() == 0 {
		t.Errorf("reads: %d succeeded, %d answered ErrClosed; want both kinds", ok.Load(), closed.Load())
	}
	t.Logf("%d reads succeeded, %d answered ErrClosed", ok.Load(), closed.Load())
}

// A second Open of a data dir in use stops before touching any of its
// files (it would delete a log file the first one just created), with an
// error that says so; after Close the dir opens again.
func TestSecondOpenOfADirInUse(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// An empty .mem file is what removeEmptyLogFiles deletes: the second
	// Open must not get that far.
	empty := filepath.Join(dir, "999999.mem")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); err == nil || !errors.Is(err, syscall.EWOULDBLOCK) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v, want in use (EWOULDBLOCK)", err)
	}
	if _, err := os.Stat(empty); err != nil {
		t.Fatalf("the second open touched the dir: %v", err)
	}
	os.Remove(empty)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	db.Close()
}
