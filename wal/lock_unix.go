//go:build unix

package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes the data dir for this process: an exclusive flock on
// dir/routehound.lock, held until Close. Open takes it before it touches
// any file of the dir (removeEmptyLogFiles deletes files), so a second
// server pointed at a live data dir stops there, before Badger's own lock
// and before it could delete a log file the running one just created.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: data dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "routehound.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("wal: data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: data dir %s is in use by another process: %w", dir, err)
	}
	return f, nil
}
