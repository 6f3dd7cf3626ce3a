package engine

import (
	"errors"
	"time"

	"routehound/wal"
)

// Sentinel errors; the api package maps each to one HTTP answer.
var (
	// ErrLaneFull: the actor's lane is at its bound; retry later.
	ErrLaneFull = errors.New("engine: lane full")
	// ErrQueueTimeout: the write waited in the queue past its lane's MaxWait
	// and was not applied.
	ErrQueueTimeout = errors.New("engine: queue wait bound exceeded")
	// ErrReopening: a read met the store while it is being reopened after a
	// storage failure (or closed for shutdown): retry shortly. It is the
	// wal's ErrClosed, so reads through a Snapshot answer it too.
	ErrReopening = wal.ErrClosed
	// ErrUnavailable: the engine is closing or its store has failed.
	ErrUnavailable = errors.New("engine: not accepting writes")
	// ErrDiskLow: free disk space is below the configured watermark.
	ErrDiskLow = errors.New("engine: free disk space below the watermark")
	// ErrDiskReserved: free disk space is within the headroom kept for
	// the fleet's writes (Config.ReserveBytes): user tables do not grow.
	ErrDiskReserved = errors.New("engine: free disk space is reserved for the fleet's writes")
	// ErrQuotaExceeded: a write would take a user table past a quota
	// (Config.Quotas); the error is a *QuotaError naming it.
	ErrQuotaExceeded = errors.New("engine: quota exceeded")
	// ErrVersionConflict: If-Match named a version the key does not have.
	ErrVersionConflict = errors.New("engine: version conflict")
	// ErrNotFound: no such key.
	ErrNotFound = errors.New("engine: not found")
	// ErrIdempotencyMismatch: an Idempotency-Key was reused for a different request.
	ErrIdempotencyMismatch = errors.New("engine: idempotency key reused with a different request")
	// ErrTooManyDrivers: the number of distinct drivers reached MaxDrivers.
	ErrTooManyDrivers = errors.New("engine: too many drivers")
	// ErrTooLarge: one write is larger than a batch may hold.
	ErrTooLarge = errors.New("engine: write larger than a batch")
	// ErrValueTooLarge: a user table's value is larger than MaxValueBytes.
	ErrValueTooLarge = errors.New("engine: value too large")
	// ErrTrimmed: the requested LSN is older than the retained log.
	ErrTrimmed = errors.New("engine: lsn older than the retained log")
)

// LaneFullError is ErrLaneFull with the lane and how long its queue takes
// to drain at the measured rate (0 when not measured yet): what a refused
// writer is told to wait. errors.Is(err, ErrLaneFull) holds.
type LaneFullError struct {
	Lane       Lane
	RetryAfter time.Duration
}

func (e *LaneFullError) Error() string        { return ErrLaneFull.Error() + ": " + e.Lane.String() }
func (e *LaneFullError) Is(target error) bool { return target == ErrLaneFull }
