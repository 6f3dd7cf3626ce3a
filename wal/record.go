package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Op is what a log record did to its key.
type Op uint8

const (
	// OpPut inserted or replaced the key's value.
	OpPut Op = 1
	// OpDelete removed the key.
	OpDelete Op = 2
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
	Actor       string // who wrote it: driver, dispatch, warehouse, tables, …
	CommittedAt time.Time
}

// State is the current value of one key.
type State struct {
	Value   []byte
	Version uint64 // 1 for the first put, +1 for each later put
	LSN     uint64 // the LSN of the record that wrote this value
}

// Key space. Every key starts with a one-byte kind so that prefixes never
// overlap: table names and keys are validated by the engine to hold no 0x00,
// so "s" + table + 0x00 + key is unambiguous.
const (
	kindLog   = 'l' // l + be64(lsn)            → encoded Record
	kindState = 's' // s + table + 0x00 + key   → encoded State
	kindTable = 't' // t + table                → be64(keys) + be64(last lsn)
	kindIdem  = 'i' // i + scope + 0x00 + key   → caller's answer bytes (with TTL); scope "": idem.go
	kindMeta  = 'm' // m + name                 → meta values
)

var (
	metaFirst    = []byte("mfirst")    // be64: the oldest LSN still in the log
	metaLogBytes = []byte("mlogbytes") // be64: bytes of log records retained
)

func logKey(lsn uint64) []byte { return appendLogKey(make([]byte, 0, 9), lsn) }

func appendLogKey(b []byte, lsn uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, kindLog), lsn)
}

func stateKey(table, key string) []byte {
	k := make([]byte, 0, 2+len(table)+len(key))
	k = append(k, kindState)
	k = append(k, table...)
	k = append(k, 0)
	return append(k, key...)
}

func statePrefix(table string) []byte {
	k := make([]byte, 0, 2+len(table))
	k = append(k, kindState)
	k = append(k, table...)
	return append(k, 0)
}

func tableKey(table string) []byte {
	return append([]byte{kindTable}, table...)
}

func idemKey(scope, key string) []byte {
	k := make([]byte, 0, 2+len(scope)+len(key))
	k = append(k, kindIdem)
	k = append(k, scope...)
	k = append(k, 0)
	return append(k, key...)
}

// idemLinkKey (i + 0x00 + be64(lsn), the reserved empty scope) is the key
// of the copy of the idempotency entry that record lsn answers, with the
// same TTL (idem.go).
func idemLinkKey(lsn uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindIdem, 0}, lsn)
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// appendRecord encodes r without its LSN (the LSN is the key):
// op, actor, committed_at, version, table, key, value.
// recordSize is the length appendRecord gives r (an upper bound: varints
// counted at their longest).
func recordSize(r *Record) int {
	return 1 + 3*binary.MaxVarintLen64 + len(r.Actor) + binary.MaxVarintLen64 + binary.MaxVarintLen64 + len(r.Table) + len(r.Key) + len(r.Value)
}

func appendRecord(b []byte, r *Record) []byte {
	b = append(b, byte(r.Op))
	b = binary.AppendUvarint(b, uint64(len(r.Actor)))
	b = append(b, r.Actor...)
	b = binary.AppendVarint(b, r.CommittedAt.UnixNano())
	b = binary.AppendUvarint(b, r.Version)
	b = binary.AppendUvarint(b, uint64(len(r.Table)))
	b = append(b, r.Table...)
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	return append(b, r.Value...)
}

var errCorrupt = errors.New("corrupt record")

// A log entry holds one record, keyed by its LSN, or a run of records with
// consecutive LSNs from one batch, keyed by the run's last LSN (so that a
// seek to an LSN lands on the entry that holds it). A run's value is
// opRun, uvarint(count), then each record as uvarint(len) + appendRecord.
// Runs cut Badger's cost per record (a skiplist node, a memtable log
// entry, a table index and bloom entry, a compaction step each) by the
// run's length: a driver's batch of 100 points is one entry, not 100.
// Stores written before runs hold single records only; both are read.
const (
	opRun = 0xFF // the first byte of a run's value; never an Op

	runMaxRecords = 256 // records in one run
	// runMaxBytes bounds a run's records (recordSize, an upper bound) so
	// that a run fits one of Badger's 4 KiB table blocks (BlockSize plus
	// its 256 bytes of padding) with its key and the block's trailer. A
	// larger run overflows its block, whose buffer Badger's table builder
	// then doubles and keeps until the table is written: with runs of
	// 32 KiB the builders held 2-3x the data (160 MiB of live heap at
	// 40,000 points/s, against 71-83 MiB with runs that fit), and the
	// server spent about 10 % more CPU per point (BENCHMARKS.md, "The log
	// in runs").
	runMaxBytes = 3840
)

// appendRun encodes recs (consecutive LSNs) as one run.
func appendRun(b []byte, recs []Record) []byte {
	b = append(b, opRun)
	b = binary.AppendUvarint(b, uint64(len(recs)))
	var tmp [binary.MaxVarintLen64]byte
	for i := range recs {
		// The record's length goes before it: reserve the longest varint,
		// encode, then move the record down if the varint is shorter.
		at := len(b)
		b = append(b, tmp[:]...)
		b = appendRecord(b, &recs[i])
		n := len(b) - at - len(tmp)
		w := binary.PutUvarint(tmp[:], uint64(n))
		copy(b[at:], tmp[:w])
		copy(b[at+w:], b[at+len(tmp):])
		b = b[:at+w+n]
	}
	return b
}

// runSize bounds the length appendRun gives recs.
func runSize(recs []Record) int {
	n := 1 + binary.MaxVarintLen64
	for i := range recs {
		n += binary.MaxVarintLen64 + recordSize(&recs[i])
	}
	return n
}

// entrySpan answers the first LSN of the log entry keyed last with value v
// and the number of records it holds.
func entrySpan(last uint64, v []byte) (first uint64, n int, err error) {
	if len(v) == 0 {
		return 0, 0, errCorrupt // a record has at least its op
	}
	if v[0] != opRun {
		return last, 1, nil
	}
	c, w := binary.Uvarint(v[1:])
	if w <= 0 || c == 0 || c > last {
		return 0, 0, errCorrupt
	}
	return last - c + 1, int(c), nil
}

// entryLast decodes the last record of the log entry keyed last: the
// newest of a run (a standby's replayed batch holds records of several of
// its primary's batches, committed at different times).
func entryLast(last uint64, v []byte) (Record, error) {
	_, n, err := entrySpan(last, v)
	if err != nil {
		return Record{}, err
	}
	if len(v) == 0 || v[0] != opRun {
		return decodeRecord(last, v)
	}
	_, w := binary.Uvarint(v[1:])
	b := v[1+w:]
	for i := 0; i < n; i++ {
		l, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < l {
			return Record{}, errCorrupt
		}
		if i == n-1 {
			return decodeRecord(last, b[w:w+int(l)])
		}
		b = b[w+int(l):]
	}
	return Record{}, errCorrupt
}

// eachRecord decodes the records of the log entry keyed last with value
// v whose LSN is in [from, to], one at a time, and calls fn with each; it
// stops at fn's first error and answers it wrapped as a fnError, so that a
// caller tells its own errors from a corrupt entry.
func eachRecord(last uint64, v []byte, from, to uint64, fn func(Record) error) error {
	call := func(r Record) error {
		if err := fn(r); err != nil {
			return fnError{err}
		}
		return nil
	}
	if len(v) == 0 || v[0] != opRun {
		if last < from || last > to {
			return nil
		}
		r, err := decodeRecord(last, v)
		if err != nil {
			return err
		}
		return call(r)
	}
	first, n, err := entrySpan(last, v)
	if err != nil {
		return err
	}
	_, w := binary.Uvarint(v[1:])
	b := v[1+w:]
	for i := 0; i < n; i++ {
		l, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < l {
			return errCorrupt
		}
		rec := b[w : w+int(l)]
		b = b[w+int(l):]
		lsn := first + uint64(i)
		if lsn < from {
			continue
		}
		if lsn > to {
			return nil
		}
		r, err := decodeRecord(lsn, rec)
		if err != nil {
			return err
		}
		if err := call(r); err != nil {
			return err
		}
	}
	if len(b) != 0 {
		return errCorrupt
	}
	return nil
}

// fnError carries a ReadLog callback's own error through eachRecord.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func decodeRecord(lsn uint64, b []byte) (Record, error) {
	r := Record{LSN: lsn}
	if len(b) < 1 {
		return r, errCorrupt
	}
	r.Op = Op(b[0])
	b = b[1:]
	str := func() (string, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return "", false
		}
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s, true
	}
	var ok bool
	if r.Actor, ok = str(); !ok {
		return r, errCorrupt
	}
	ns, w := binary.Varint(b)
	if w <= 0 {
		return r, errCorrupt
	}
	b = b[w:]
	r.CommittedAt = time.Unix(0, ns).UTC()
	v, w := binary.Uvarint(b)
	if w <= 0 {
		return r, errCorrupt
	}
	b = b[w:]
	r.Version = v
	if r.Table, ok = str(); !ok {
		return r, errCorrupt
	}
	if r.Key, ok = str(); !ok {
		return r, errCorrupt
	}
	if len(b) > 0 {
		r.Value = append([]byte(nil), b...)
	}
	return r, nil
}

func appendState(b []byte, s State) []byte {
	b = binary.BigEndian.AppendUint64(b, s.Version)
	b = binary.BigEndian.AppendUint64(b, s.LSN)
	return append(b, s.Value...)
}

func decodeState(b []byte) (State, error) {
	if len(b) < 16 {
		return State{}, errCorrupt
	}
	return State{
		Version: binary.BigEndian.Uint64(b),
		LSN:     binary.BigEndian.Uint64(b[8:]),
		Value:   append([]byte(nil), b[16:]...),
	}, nil
}

func be64get(b []byte) uint64    { return binary.BigEndian.Uint64(b) }
func be64put(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }
