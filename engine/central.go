package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"routehound/fleet"
	"routehound/wal"
)

// A central view (issue 20, part 4): one engine that holds several depots'
// tables, followed from their shipped logs (package uplink, central.go).
// Unlike a standby, it does not keep the depots' LSNs: each depot has its
// own sequence, so the central engine writes the depots' changes as its own
// records, at its own LSNs, with each key namespaced by its depot
// (<depot>/<key>). Those writes go through the committer like any other
// (the events lane: a central view runs no fleet-events consumer), so its
// hub, SSE and WebSocket subscribers, dashboard, replica and /v1/log work on
// it unchanged. Every other write is refused with a NotPrimaryError that is
// also ErrCentralReadOnly (503 central_read_only).

// ErrCentralReadOnly refuses a write on a central view: it only reads the
// depots' streams. errors.Is(err, ErrNotPrimary) holds too (a central view
// is no depot's writer), so every path that refuses a standby's writes
// refuses these.
var ErrCentralReadOnly = errors.New("engine: a central view is read-only")

// SetCentral makes the engine a central view's: every write but
// ApplyCentral's is refused with a NotPrimaryError that is also
// ErrCentralReadOnly, saying why.
func (e *Engine) SetCentral(why string) {
	e.follow.central.Store(true)
	e.SetNotPrimary(why)
}

// Central reports whether the engine is a central view's (SetCentral).
func (e *Engine) Central() bool { return e.follow.central.Load() }

// WritesRefused is the error every write answers now (a standby, a fenced
// primary, a central view), or nil when writes are taken (as far as the
// role goes: a full lane or a low disk refuse on their own).
func (e *Engine) WritesRefused() error { return e.notPrimary() }

// CentralCursorTable holds a central view's cursor of each depot (key: the
// depot; value: JSON with the depot's "lsn" of its last record applied),
// written in the same item as the records it covers (uplink.CentralTable).
const CentralCursorTable = "central_depots"

// CentralWrite is one change ApplyCentral writes: a put of Value, or a
// delete, of one key. A delete of a key that does not exist writes
// nothing.
type CentralWrite struct {
	Table  string
	Key    string
	Delete bool
	Value  []byte // JSON; unused for a delete
	Actor  string // who wrote it at its depot
	// Depot and LSN, when Depot is set, tie the write to the depot's
	// record LSN (or, for the depot's cursor row, to the LSN the cursor
	// moves to): it is skipped when the depot's cursor the store holds
	// when the item is applied is at or past LSN. An apply that answered
	// an error (a failed sync) may be in the reopened store all the same:
	// its retry must not write the records twice, nor move the cursor
	// back.
	Depot string
	LSN   uint64
}

// ErrCentralRejected: a central write this engine can never apply,
// whatever the retry: a table name no writer of it may use, a key it does
// not hold, a put whose value is no JSON or larger than one batch. A
// *CentralRejectError says which write and why. ApplyCentral checks every
// write (CheckCentralWrite) before anything is queued: such a write never
// reaches the committer, where an error fails the store.
var ErrCentralRejected = errors.New("engine: central write rejected")

// CentralRejectError is ErrCentralRejected for one write of a call.
type CentralRejectError struct {
	Index      int // the write's index in the call
	Table, Key string
	Reason     string
	Err        error // the cause, when there is one (ErrTooLarge)
}

func (e *CentralRejectError) Error() string {
	msg := fmt.Sprintf("%s: write %d (table %s, key %s): %s", ErrCentralRejected, e.Index, strconv.Quote(clip(e.Table)), strconv.Quote(clip(e.Key)), e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *CentralRejectError) Is(target error) bool { return target == ErrCentralRejected }
func (e *CentralRejectError) Unwrap() error        { return e.Err }

// clip shortens a name for an error message.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:80] + "…"
}

// MaxCentralKey is the longest key a central write may have: a depot's key
// (fleet.MaxKey) under a depot name (fleet.MaxName at most) and a slash.
const MaxCentralKey = fleet.MaxName + 1 + fleet.MaxKey

// CheckCentralWrite answers a *CentralRejectError when w can never be
// applied: its table is no name of fleet.CheckName (the store separates
// table and key with a 0x00, the API reads only such names), its key is
// empty, longer than MaxCentralKey, not UTF-8 or holds control
// characters, or it puts a value that is no JSON, or one that alone is
// larger than a batch (ErrTooLarge). What a retry may cure (a full lane, a
// failed store) is not checked here: ApplyCentral answers it.
func (e *Engine) CheckCentralWrite(w CentralWrite) error {
	reject := func(reason string, err error) error {
		return &CentralRejectError{Table: w.Table, Key: w.Key, Reason: reason, Err: err}
	}
	if err := fleet.CheckName("table", w.Table); err != nil {
		return reject(err.Error(), nil)
	}
	if w.Key == "" || len(w.Key) > MaxCentralKey || !utf8.ValidString(w.Key) {
		return reject(fmt.Sprintf("a key is 1 to %d bytes of UTF-8 (this one: %d bytes)", MaxCentralKey, len(w.Key)), nil)
	}
	for _, c := range w.Key {
		if c < 0x20 || c == 0x7f {
			return reject("a key may not hold control characters", nil)
		}
	}
	if w.Delete {
		return nil
	}
	if !json.Valid(w.Value) {
		return reject("the value is no JSON", nil)
	}
	if size := centralWriteBytes(w) + 256; size > e.cfg.BatchBytes {
		return reject(fmt.Sprintf("%d bytes, a batch holds %d", size, e.cfg.BatchBytes), ErrTooLarge)
	}
	return nil
}

// centralWriteBytes is what one central write counts in a batch's bytes.
func centralWriteBytes(w CentralWrite) int64 {
	return int64(2*len(w.Value) + 2*len(w.Key) + 2*len(w.Table) + 64)
}

// storedCursorLSN reads a depot's cursor LSN from the batch's view of the
// store (0: none).
func storedCursorLSN(b *wal.Batch, depot string) (uint64, error) {
	st, ok, err := b.Get(CentralCursorTable, depot)
	if err != nil || !ok {
		return 0, err
	}
	var c struct {
		LSN uint64 `json:"lsn"`
	}
	if err := json.Unmarshal(st.Value, &c); err != nil {
		return 0, fmt.Errorf("the cursor of depot %s in %s: %w", depot, CentralCursorTable, err)
	}
	return c.LSN, nil
}

// ApplyCentralMax is the most writes one ApplyCentral takes, and the bytes
// (2×(key+value+table)+64 each) a caller should keep one call's writes
// under (one large value alone may pass them), within one batch of the
// committer.
func (e *Engine) ApplyCentralMax() (writes int, bytes int64) {
	return max(min(e.cfg.BatchRecords, e.lanes[LaneEvents].Bound()), 1), e.cfg.BatchBytes / 2
}

// ApplyCentral writes ws, in order, as one atomic item of the events lane,
// at this engine's next LSNs (each put takes the key's next version), and
// answers once they are durable and published: the LSN of the last record
// written (0 when none was: deletes of absent keys only). All or none of ws
// is in the store, so a cursor written with the records it covers never
// parts from them. It works while the engine refuses every other write
// (SetCentral); it is refused while the store has failed or is closing, and
// with ErrTooLarge past ApplyCentralMax's writes. A write that can never be
// applied (CheckCentralWrite) refuses the whole call with a
// *CentralRejectError naming it, before anything is queued: the caller
// leaves it out and calls again; every other error may pass on a retry. Writes tagged with a
// Depot and LSN that the depot's stored cursor covers are skipped (see
// CentralWrite), so a retry of an apply that answered an error yet reached
// the store writes nothing twice. Run with a context that is not
// cancelled mid-commit when the caller must know the outcome (an item the
// committer took is committed even when its waiter left).
func (e *Engine) ApplyCentral(ctx context.Context, ws []CentralWrite) (uint64, error) {
	if len(ws) == 0 {
		return 0, nil
	}
	maxN, _ := e.ApplyCentralMax()
	var size int64
	for i, w := range ws {
		if err := e.CheckCentralWrite(w); err != nil {
			var rej *CentralRejectError
			if errors.As(err, &rej) {
				rej.Index = i
			}
			return 0, err
		}
		size += centralWriteBytes(w)
	}
	if len(ws) > maxN {
		return 0, fmt.Errorf("%w: %d central writes (at most %d)", ErrTooLarge, len(ws), maxN)
	}
	e.follow.applyMu.Lock()
	defer e.follow.applyMu.Unlock()
	l := e.lanes[LaneEvents]
	l.stats.Arrivals.Add(1)
	it := &item{units: len(ws), bytes: size + 256, done: make(chan result, 1)}
	it.apply = func(b *wal.Batch) (result, error) {
		var last uint64
		// Each depot's cursor as the store holds it before this item (read
		// once: the item's own cursor write comes after its records).
		stored := map[string]uint64{}
		for _, w := range ws {
			if w.Depot != "" {
				at, ok := stored[w.Depot]
				if !ok {
					var err error
					if at, err = storedCursorLSN(b, w.Depot); err != nil {
						return result{}, fmt.Errorf("central: %w", err)
					}
					stored[w.Depot] = at
				}
				if w.LSN <= at {
					continue // in the store already (an apply that answered an error, retried)
				}
			}
			var r wal.Record
			var err error
			if w.Delete {
				r, err = b.Delete(w.Table, w.Key, w.Actor, wal.AnyVersion)
				if errors.Is(err, wal.ErrNotFound) {
					continue // the key never reached this view (or is gone already)
				}
			} else {
				r, err = b.Put(w.Table, w.Key, w.Value, w.Actor, wal.AnyVersion)
			}
			if err != nil {
				return result{}, err
			}
			last = r.LSN
		}
		return result{write: WriteResult{LSN: last}}, nil
	}
	deadline := time.Now().Add(followRoomWait)
	for {
		err := e.enqueueFollowed(l, it)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLaneFull) || !l.waitRoom(ctx, it.units, deadline) {
			return 0, l.refuse(err)
		}
	}
	res, err := wait(ctx, it)
	return res.write.LSN, err
}
