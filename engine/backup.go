package engine

import (
	"context"
	"io"
)

// Backup writes the whole store as the snapshot sees it (every table's
// state, the log, the idempotency entries, the counters) to w, in the
// store's backup format (wal.Restore loads it). Writers go on meanwhile;
// the snapshot pins its LSN. Wait for WaitDurable(LSN) first for a backup
// of durable records only.
func (s *Snapshot) Backup(ctx context.Context, w io.Writer) error { return s.s.Backup(ctx, w) }
