package engine

import (
	"fmt"
	"time"

	"routehound/wal"
)

// The engine's reader vocabulary: what readers above the engine (hub, api,
// replica, ui) get from the durability feed, the log and snapshots. These
// are the engine's own types, converted from the store's where records
// leave it (publish, ReadLog, Snapshot), so that nothing above the engine
// depends on the store's types or can reach a writable handle.

// Op is what a record did to its key.
type Op uint8

// Op values of a Record.
const (
	OpPut    Op = Op(wal.OpPut)    // put a value
	OpDelete Op = Op(wal.OpDelete) // removed the key
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Record is one entry of the log: one change to one key of one table.
type Record struct {
	LSN         uint64
	Table       string
	Key         string
	Op          Op
	Value       []byte // JSON; nil for OpDelete
	Version     uint64 // the key's version after this change (0 after a delete)
	Actor       string // the lane that wrote it: driver, dispatch, warehouse, tables
	CommittedAt time.Time
}

// State is the current value of one key.
type State struct {
	Value   []byte
	Version uint64 // 1 for the first put, +1 for each later put
	LSN     uint64 // the LSN of the record that wrote this value
}

// TableInfo describes one table of a snapshot.
type TableInfo struct {
	Name    string
	Keys    int64
	LastLSN uint64
}

// Retention bounds the log: records older than MaxAge, or past MaxBytes of
// log, are trimmed (0: no bound).
type Retention struct {
	MaxAge   time.Duration
	MaxBytes int64
	// RetainAfter, when set, is asked before each retention step: the
	// records after the LSN it answers (a log shipper's records not yet
	// shipped) are kept past MaxAge and MaxBytes, until the log is larger
	// than RetainMaxBytes (0: no bound); past it the oldest of them go too.
	RetainAfter    func() uint64
	RetainMaxBytes int64
}

// AnyVersion makes a Write unconditional.
const AnyVersion = wal.AnyVersion

func record(r *wal.Record) Record {
	return Record{LSN: r.LSN, Table: r.Table, Key: r.Key, Op: Op(r.Op), Value: r.Value, Version: r.Version,
		Actor: r.Actor, CommittedAt: r.CommittedAt}
}

// records converts a batch's records once, where they enter the feed.
func records(rs []wal.Record) []Record {
	out := make([]Record, len(rs))
	for i := range rs {
		out[i] = record(&rs[i])
	}
	return out
}

func (r Retention) wal() wal.Retention {
	w := wal.Retention{MaxAge: r.MaxAge, MaxBytes: r.MaxBytes}
	if r.RetainAfter != nil {
		w.Hold, w.HoldAfter, w.HoldMaxBytes = true, r.RetainAfter(), r.RetainMaxBytes
	}
	return w
}

// Snapshot is a consistent read view of every table's state at one LSN.
// Close it when done.
type Snapshot struct{ s *wal.Snapshot }

// LSN is the snapshot's LSN: it holds every change up to it.
func (s *Snapshot) LSN() uint64 { return s.s.LSN() }

// Close releases the snapshot.
func (s *Snapshot) Close() { s.s.Close() }

// Get is one key's state.
func (s *Snapshot) Get(table, key string) (State, bool, error) {
	st, ok, err := s.s.Get(table, key)
	return State(st), ok, err
}

// Scan calls fn for each key of table after `after`, in key order, at most
// limit (0: all); more reports keys left.
func (s *Snapshot) Scan(table, after string, limit int, fn func(key string, st State) error) (more bool, err error) {
	return s.s.Scan(table, after, limit, func(key string, st wal.State) error { return fn(key, State(st)) })
}

// Table describes one table.
func (s *Snapshot) Table(name string) (TableInfo, bool, error) {
	ti, ok, err := s.s.Table(name)
	return TableInfo(ti), ok, err
}

// Tables calls fn for each table after `after`, in name order, at most
// limit (0: all); more reports tables left.
func (s *Snapshot) Tables(after string, limit int, fn func(TableInfo) error) (more bool, err error) {
	return s.s.Tables(after, limit, func(ti wal.TableInfo) error { return fn(TableInfo(ti)) })
}
