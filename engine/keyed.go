package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"routehound/fleet"
	"time"

	"routehound/wal"
)

// Write is one keyed write: a put (or delete) of one key of one table,
// optionally conditional and optionally idempotent.
type Write struct {
	Table  string
	Key    string
	Value  []byte // JSON; ignored for a delete
	Delete bool
	// IfVersion is wal.AnyVersion (unconditional), 0 (create only) or the
	// version the key must have.
	IfVersion uint64
	// IdemKey, when set, makes the write idempotent: a later write with the
	// same key answers this write's answer and changes nothing. The answer
	// is kept for Config.IdempotencyTTL.
	IdemKey string
	// Fingerprint identifies the request behind IdemKey; a reuse of the key
	// with another fingerprint is refused (ErrIdempotencyMismatch).
	Fingerprint []byte
}

// WriteResult is the answer of a keyed write.
type WriteResult struct {
	Table       string    `json:"table"`
	Key         string    `json:"key"`
	Version     uint64    `json:"version"`
	LSN         uint64    `json:"lsn"`
	CommittedAt time.Time `json:"committed_at"`
	Created     bool      `json:"created"`            // the key did not exist before
	Deleted     bool      `json:"deleted,omitempty"`  // the write was a delete
	Replayed    bool      `json:"replayed,omitempty"` // answered from an earlier write with the same IdemKey
}

// stored is the idempotency entry: the request's fingerprint and the answer.
type stored struct {
	Fingerprint []byte      `json:"f"`
	Result      WriteResult `json:"r"`
}

// Fingerprint hashes the parts of a request that must match on a retry.
func Fingerprint(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return h.Sum(nil)
}

// WriteOptions are a keyed command's conditions.
type WriteOptions struct {
	// IfVersion is AnyVersion (unconditional), 0 (create only) or the
	// version the key must have.
	IfVersion uint64
	// IdemKey and Fingerprint: as in Write.
	IdemKey     string
	Fingerprint []byte
}

// The engine's keyed commands, one per writer. Each writes through its
// actor's lane and waits for the lane's contract: after the fsync (sync) or
// once durable (ack). The write authority is enforced here, once, whatever
// the front door: a built-in table is written only by its command
// (assignments: PutAssignment; loading events: AddLoadingEvent; devices:
// PutDevice; positions: the driver and phone paths, and ResetDriver).
// DeleteAssignment and DeleteLoadingEvent have no HTTP endpoint yet.

// PutAssignment is dispatch's command: it writes the assignment of a route
// (value: a fleet.Assignment as compact JSON, which the caller validated)
// through the dispatch lane.
func (e *Engine) PutAssignment(ctx context.Context, route string, value []byte, o WriteOptions) (WriteResult, error) {
	return e.put(ctx, LaneDispatch, Write{Table: fleet.TableAssignments, Key: route, Value: value,
		IfVersion: o.IfVersion, IdemKey: o.IdemKey, Fingerprint: o.Fingerprint})
}

// PutFence is dispatch's command for a geofence: it writes fence id
// (value: a fleet.Fence as compact JSON, which the caller validated)
// through the dispatch lane.
func (e *Engine) PutFence(ctx context.Context, id string, value []byte) (WriteResult, error) {
	return e.put(ctx, LaneDispatch, Write{Table: fleet.TableFences, Key: id, Value: value, IfVersion: AnyVersion})
}

// DeleteFence removes a geofence (ErrNotFound when there is none).
func (e *Engine) DeleteFence(ctx context.Context, id string) (WriteResult, error) {
	return e.put(ctx, LaneDispatch, Write{Table: fleet.TableFences, Key: id, Delete: true, IfVersion: AnyVersion})
}

// AddLoadingEvent is the warehouse's command: it creates the loading event
// id (value: a fleet.LoadingEvent as compact JSON, which the caller
// validated) through the warehouse lane. An id that exists answers
// ErrVersionConflict.
func (e *Engine) AddLoadingEvent(ctx context.Context, id string, value []byte, o WriteOptions) (WriteResult, error) {
	return e.put(ctx, LaneWarehouse, Write{Table: fleet.TableLoading, Key: id, Value: value,
		IfVersion: 0, IdemKey: o.IdemKey, Fingerprint: o.Fingerprint})
}

// DeleteAssignment is dispatch's command to cancel a route: it deletes the
// route's assignment (ErrNotFound when there is none).
func (e *Engine) DeleteAssignment(ctx context.Context, route string, o WriteOptions) (WriteResult, error) {
	return e.put(ctx, LaneDispatch, Write{Table: fleet.TableAssignments, Key: route, Delete: true,
		IfVersion: o.IfVersion, IdemKey: o.IdemKey, Fingerprint: o.Fingerprint})
}

// DeleteLoadingEvent is the warehouse's command to withdraw a loading event
// recorded by mistake (ErrNotFound when there is none).
func (e *Engine) DeleteLoadingEvent(ctx context.Context, id string, o WriteOptions) (WriteResult, error) {
	return e.put(ctx, LaneWarehouse, Write{Table: fleet.TableLoading, Key: id, Delete: true,
		IfVersion: o.IfVersion, IdemKey: o.IdemKey, Fingerprint: o.Fingerprint})
}

// PutKey writes (or deletes) one key of a user table through the tables
// lane. A built-in table answers a *fleet.ReadOnlyError naming its writer,
// a value over MaxValueBytes ErrValueTooLarge.
func (e *Engine) PutKey(ctx context.Context, w Write) (WriteResult, error) {
	if writer, builtin := fleet.Writer(w.Table); builtin {
		l := e.lanes[LaneTables]
		l.stats.Arrivals.Add(1)
		l.stats.reject("read_only_table")
		return WriteResult{}, &fleet.ReadOnlyError{Table: w.Table, Writer: writer}
	}
	if max := e.cfg.MaxValueBytes; max > 0 && int64(len(w.Value)) > max {
		// One key's value bounds what one row costs every page and
		// subscriber that carries it.
		l := e.lanes[LaneTables]
		l.stats.Arrivals.Add(1)
		l.stats.reject("value_too_large")
		return WriteResult{}, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrValueTooLarge, len(w.Value), max)
	}
	if !w.Delete && e.diskTight.Load() {
		// The disk is into the headroom kept for the fleet's writes:
		// user tables stop growing first (deletes still free space).
		l := e.lanes[LaneTables]
		l.stats.Arrivals.Add(1)
		l.stats.reject("disk_reserved")
		return WriteResult{}, ErrDiskReserved
	}
	if !w.Delete && e.cfg.Quotas.on() {
		if err := e.prepareUsage(w.Table); err != nil {
			return WriteResult{}, err
		}
	}
	return e.put(ctx, LaneTables, w)
}

// PutDevice writes (or, with value nil, deletes) a phone's device entry in
// the devices table, through the tables lane: the admin's devices API.
func (e *Engine) PutDevice(ctx context.Context, id string, value []byte) (WriteResult, error) {
	w := Write{Table: fleet.TableDevices, Key: id, Value: value, Delete: value == nil, IfVersion: AnyVersion}
	return e.put(ctx, LaneTables, w)
}

// ResetDriver deletes a driver's latest position and forgets its seq marks,
// so that its next point is taken whatever its seq (an admin's repair of a
// driver whose seq went wrong; no API exposes it yet). The driver's
// history stays in the log.
func (e *Engine) ResetDriver(ctx context.Context, driver string) (WriteResult, error) {
	w := Write{Table: fleet.TablePositions, Key: driver, Delete: true, IfVersion: AnyVersion}
	res, err := e.put(ctx, LaneTables, w)
	if err != nil {
		return res, err
	}
	if ds, err := e.drivers.get(driver); err == nil {
		ds.mu.Lock()
		ds.loaded, ds.accepted = false, 0
		ds.durable.Store(0)
		ds.mu.Unlock()
		e.drivers.release(ds)
	}
	return res, nil
}

// put queues one keyed write on a keyed lane; the commands above chose the
// lane and checked the authority.
func (e *Engine) put(ctx context.Context, name Lane, w Write) (WriteResult, error) {
	l := e.lane(name)
	if l == nil || name == LaneDriver {
		return WriteResult{}, fmt.Errorf("engine: no keyed lane %v", name)
	}
	l.stats.Arrivals.Add(1)
	it := e.keyedItem(name, w)
	if err := e.enqueue(l, it); err != nil {
		return WriteResult{}, l.refuse(err)
	}
	v, err := wait(ctx, it)
	if err != nil {
		if errors.Is(err, ErrVersionConflict) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrIdempotencyMismatch) {
			l.stats.reject(reasonOf(err))
		} else if errors.Is(err, ErrQuotaExceeded) {
			l.stats.reject("quota_exceeded")
		}
		return WriteResult{}, err
	}
	res := v.write
	if res.Replayed {
		l.stats.Duplicates.Add(1)
	}
	return res, nil
}

// keyedItem is the lane item of one keyed write.
func (e *Engine) keyedItem(name Lane, w Write) *item {
	scope := name.String()
	ttl := e.cfg.IdempotencyTTL
	_, builtin := fleet.Writer(w.Table)
	quota := !builtin && e.cfg.Quotas.on() // a user table: its writes are counted and bounded (quota.go)
	it := &item{
		units: 1,
		bytes: int64(2*len(w.Value) + 2*len(w.Key) + len(w.Table) + 256),
		done:  make(chan result, 1),
	}
	it.apply = func(b *wal.Batch) (result, error) {
		if w.IdemKey != "" {
			raw, ok, err := b.Idem(scope, w.IdemKey)
			if err != nil {
				return result{}, err
			}
			if ok {
				var s stored
				if err := json.Unmarshal(raw, &s); err != nil {
					return result{}, fmt.Errorf("engine: idempotency entry %s/%s: %w", scope, w.IdemKey, err)
				}
				if string(s.Fingerprint) != string(w.Fingerprint) {
					return result{err: ErrIdempotencyMismatch}, nil
				}
				s.Result.Replayed = true
				return result{write: s.Result, dup: true}, nil
			}
		}
		var rec wal.Record
		var err error
		created := false
		var cur State
		var exists bool
		if quota {
			st, ok, err := b.Get(w.Table, w.Key)
			if err != nil {
				return result{}, err
			}
			cur, exists = State(st), ok
			if !w.Delete {
				if qerr := e.checkQuota(w, cur, exists); qerr != nil {
					return result{err: qerr}, nil
				}
			}
		}
		if w.Delete {
			rec, err = b.Delete(w.Table, w.Key, scope, w.IfVersion)
		} else {
			rec, err = b.Put(w.Table, w.Key, w.Value, scope, w.IfVersion)
			created = rec.Version == 1
		}
		switch {
		case errors.Is(err, wal.ErrVersionConflict):
			return result{err: ErrVersionConflict}, nil
		case errors.Is(err, wal.ErrNotFound):
			return result{err: ErrNotFound}, nil
		case err != nil:
			return result{}, err
		}
		if quota {
			e.charge(w, cur, exists, rec.LSN)
		}
		res := WriteResult{Table: w.Table, Key: w.Key, Version: rec.Version, LSN: rec.LSN,
			CommittedAt: rec.CommittedAt, Created: created, Deleted: w.Delete}
		if w.IdemKey != "" {
			raw, err := json.Marshal(stored{Fingerprint: w.Fingerprint, Result: res})
			if err != nil {
				return result{}, err
			}
			// Tied to its record: it travels with it to a standby.
			if err := b.SetIdemFor(rec.LSN, scope, w.IdemKey, raw, ttl); err != nil {
				return result{}, err
			}
		}
		return result{write: res}, nil
	}
	return it
}

// DerivedWrite is the fleet-events consumer's write (WriteDerived): what
// it derived from the log's records after After up to Upto, all in one
// batch with its cursor (fleet.TableFleetConsumer, key "cursor"): either
// all of it is in the store or none of it.
//
// AfterPart and UptoPart place the two ends inside a record, for a record
// whose derived output is too large for one write (a deleted fence with
// thousands of drivers inside): a position (lsn, part) with part > 0 means
// every record before lsn and the first part units of record lsn's output;
// part 0 means every record up to lsn, whole. Zero parts are the plain
// LSN range, as before.
type DerivedWrite struct {
	After, Upto         uint64
	AfterPart, UptoPart uint64
	Writes              []Write // unconditional puts and deletes of the derived tables
}

// CursorValue is the consumer's cursor as fleet_consumer keeps it: Part
// (omitted when 0, so a cursor written before parts existed reads the
// same) is how far into record LSN's output the store is, 0 meaning all of
// it (DerivedWrite).
type CursorValue struct {
	LSN  uint64 `json:"lsn"`
	Part uint64 `json:"part,omitempty"`
}

// Before reports whether position c comes before d: by LSN, and within one
// LSN a partial position (Part > 0) before the whole record (Part 0).
func (c CursorValue) Before(d CursorValue) bool {
	if c.LSN != d.LSN {
		return c.LSN < d.LSN
	}
	return c.Part != 0 && (d.Part == 0 || c.Part < d.Part)
}

// ErrCursorMoved answers a DerivedWrite whose After is not the stored
// cursor and whose range is not covered either: the consumer's state is
// not the store's (a write it thought lost was not); it reloads.
var ErrCursorMoved = errors.New("engine: the derived tables' cursor is not where the write starts")

// WriteDerived is the events lane's command: it writes w through the
// events lane, once. A write whose range the stored cursor covers already
// (a retry of a write that was committed) changes nothing and answers
// Replayed; one that does not start at the stored cursor answers
// ErrCursorMoved. Only derived tables (written by fleet.ActorFleetEvents)
// are accepted. It counts one unit per record against the lane's bound and
// the batch cap: keep a write within Sched().BatchCap records and it never
// makes a sync write wait longer than the scheduler allows for.
func (e *Engine) WriteDerived(ctx context.Context, w DerivedWrite) (WriteResult, error) {
	l := e.lanes[LaneEvents]
	for _, x := range w.Writes {
		if a, _ := fleet.Writer(x.Table); a != fleet.ActorFleetEvents {
			return WriteResult{}, fmt.Errorf("engine: a derived write to %q, which the events lane does not write", x.Table)
		}
	}
	after, upto := CursorValue{LSN: w.After, Part: w.AfterPart}, CursorValue{LSN: w.Upto, Part: w.UptoPart}
	if !after.Before(upto) {
		return WriteResult{}, fmt.Errorf("engine: a derived write covers (%d.%d, %d.%d]: nothing", w.After, w.AfterPart, w.Upto, w.UptoPart)
	}
	l.stats.Arrivals.Add(1)
	cursor, err := json.Marshal(upto)
	if err != nil {
		return WriteResult{}, err
	}
	// One unit per record: the committer's batch cap (sched.go) counts
	// what the write costs a sync writer waiting behind it.
	it := &item{units: len(w.Writes) + 1, bytes: int64(len(cursor)) + 256, done: make(chan result, 1)}
	for _, x := range w.Writes {
		it.bytes += int64(2*len(x.Value) + 2*len(x.Key) + len(x.Table) + 96)
	}
	scope := LaneEvents.String()
	it.apply = func(b *wal.Batch) (result, error) {
		st, ok, err := b.Get(fleet.TableFleetConsumer, "cursor")
		if err != nil {
			return result{}, err
		}
		var at CursorValue
		if ok {
			if err := json.Unmarshal(st.Value, &at); err != nil {
				return result{}, fmt.Errorf("engine: the derived tables' cursor: %w", err)
			}
		}
		switch {
		case !at.Before(upto):
			return result{write: WriteResult{Table: fleet.TableFleetConsumer, Key: "cursor", Version: st.Version, LSN: st.LSN, Replayed: true}, dup: true}, nil
		case at != after:
			return result{err: fmt.Errorf("%w: it is at %d.%d, the write starts at %d.%d", ErrCursorMoved, at.LSN, at.Part, w.After, w.AfterPart)}, nil
		}
		for _, x := range w.Writes {
			var err error
			if x.Delete {
				_, err = b.Delete(x.Table, x.Key, scope, AnyVersion)
				if errors.Is(err, wal.ErrNotFound) {
					err = nil
				}
			} else {
				if x.Table == fleet.TableFleetEvents {
					// An event already stored with this very value is not
					// written again. A promoted standby may hold only a
					// prefix of its primary's last derived write (shipping
					// is record by record): the events without the cursor
					// after them. Its consumer derives them again from the
					// older cursor, byte for byte, and each event stays in
					// the log once.
					cur, ok, err := b.Get(x.Table, x.Key)
					if err != nil {
						return result{}, fmt.Errorf("engine: derived write %s/%s: %w", x.Table, x.Key, err)
					}
					if ok && bytes.Equal(cur.Value, x.Value) {
						continue
					}
				}
				_, err = b.Put(x.Table, x.Key, x.Value, scope, AnyVersion)
			}
			if err != nil {
				return result{}, fmt.Errorf("engine: derived write %s/%s: %w", x.Table, x.Key, err)
			}
		}
		rec, err := b.Put(fleet.TableFleetConsumer, "cursor", cursor, scope, AnyVersion)
		if err != nil {
			return result{}, err
		}
		return result{write: WriteResult{Table: rec.Table, Key: rec.Key, Version: rec.Version, LSN: rec.LSN, CommittedAt: rec.CommittedAt}}, nil
	}
	if err := e.enqueue(l, it); err != nil {
		return WriteResult{}, l.refuse(err)
	}
	v, err := wait(ctx, it)
	if err != nil {
		if errors.Is(err, ErrCursorMoved) {
			l.stats.reject("cursor_moved")
		}
		return WriteResult{}, err
	}
	if v.write.Replayed {
		l.stats.Duplicates.Add(1)
	}
	return v.write, nil
}
