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
