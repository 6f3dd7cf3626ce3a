package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// removeEmptyLogFiles deletes zero-length memtable WALs (*.mem) and value
// logs (*.vlog) before Badger opens the directory, and returns their names.
//
// Badger pre-sizes these files with ftruncate and makes the size durable
// only with their first sync. A power cut before that leaves a file of
// length zero, which Badger refuses to open ("Create a new file") although
// it holds nothing. Deleting it loses nothing: no entry can live in an
// empty file.
func removeEmptyLogFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return removed, fmt.Errorf("wal: remove empty %s: %w", name, err)
		}
		removed = append(removed, name)
	}
	return removed, nil
}

// tailCheck is how many of the newest log records Open reads back: about
// 1,000 entries when batches are driver points (runs of up to 256 records,
// record.go), 16,384 entries when they are single writes.
const tailCheck = 16384

// checkTail reads the newest log records back: each must decode, LSNs must
// run without a hole, and a put must carry a value. With SyncWrites=false
// and a lowered ValueThreshold, a power cut can bring back never-synced keys
// with empty values (a flushed table made durable before the value log it
// points into; DESIGN.md, "Storage faults"). The store keeps Badger's
// default threshold, so this must never fire; if it does, Open fails rather
// than serve a hole as data.
func (db *DB) checkTail() error {
	last, first := db.LastLSN(), db.FirstLSN()
	after := last - min(last, tailCheck)
	if first > 0 && after+1 < first {
		after = first - 1
	}
	return db.ReadLog(after, last, 0, func(r Record) error {
		if r.Op == OpPut && len(r.Value) == 0 {
			return fmt.Errorf("wal: log record lsn %d (%s/%s) came back with an empty value: %w", r.LSN, r.Table, r.Key, errCorrupt)
		}
		return nil
	})
}
