package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/dgraph-io/badger/v4"
)

// Backup writes every key of the store as the snapshot sees it (table
// state, log, idempotency entries, counters), in Badger's backup format
// (a stream of length-prefixed KV lists, each key at its version), to w.
// The store keeps serving writes meanwhile: the snapshot's read version
// pins what it sees. Restore loads it into an empty directory.
func (s *Snapshot) Backup(ctx context.Context, w io.Writer) error {
	if err := s.db.rlock(); err != nil {
		return err
	}
	defer s.db.runlock()
	st := s.db.bdb.NewStreamAt(s.ts)
	st.LogPrefix = "wal.Backup"
	st.NumGo = 2
	// A client that goes away (ctx) fails the next write, which ends the
	// stream.
	if _, err := st.Backup(&ctxWriter{ctx: ctx, w: w}, 0); err != nil {
		return fmt.Errorf("wal: backup at lsn %d: %w", s.lsn, err)
	}
	return nil
}

// ctxWriter fails writes once ctx is done, which ends Badger's stream.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Restore loads a backup written by Snapshot.Backup into dir, which must
// be empty or absent. Open then opens it as any store: its counters (last
// and first LSN, log size) come back from the backup's keys.
func Restore(dir string, r io.Reader) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("wal: restore into %s: the directory is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wal: restore into %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wal: restore into %s: %w", dir, err)
	}
	bdb, err := badger.OpenManaged(badger.DefaultOptions(dir).WithLogger(nil).WithMetricsEnabled(false).WithSyncWrites(false))
	if err != nil {
		return fmt.Errorf("wal: restore into %s: %w", dir, err)
	}
	if err := bdb.Load(r, 64); err != nil {
		bdb.Close()
		return fmt.Errorf("wal: restore into %s: %w", dir, err)
	}
	if err := bdb.Sync(); err != nil {
		bdb.Close()
		return fmt.Errorf("wal: restore into %s: sync: %w", dir, err)
	}
	if err := bdb.Close(); err != nil {
		return fmt.Errorf("wal: restore into %s: close: %w", dir, err)
	}
	return nil
}
