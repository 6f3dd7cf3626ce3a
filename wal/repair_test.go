package wal

import (
	"os"
	"path/filepath"
	"testing"
)

// A power cut between Badger's ftruncate of a new memtable WAL or value
// log and its first sync leaves a zero-length file; Open must still work.
func TestOpenAfterEmptyLogFiles(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, nil)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"00042.mem", "000042.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(Options{Dir: dir, MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatalf("open with empty log files: %v", err)
	}
	defer db.Close()
	if _, err := os.Stat(filepath.Join(dir, "00042.mem")); !os.IsNotExist(err) {
		t.Errorf("empty memtable file still there: %v", err)
	}
}
