package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"routehound/fleet"
	"routehound/wal"
)

// phoneIdemScope is the idempotency scope of phone points: a resend of the
// same point (device, fix time, position) finds its entry and stores
// nothing new.
const phoneIdemScope = "phone"

// PhonePoint is one position reported by a phone app for a driver.
type PhonePoint struct {
	Driver string
	// Device, FixMs, Lat and Lng identify the point: a request with the
	// same four is a resend (the app did not get the first answer).
	Device   string
	FixMs    int64 // the fix time, Unix milliseconds; the seq follows it
	Lat, Lng float64
	// Value is the point as a JSON object without "seq": the committer
	// assigns the seq and puts it first.
	Value []byte
}

// PhoneAck answers a phone point once it is durable.
type PhoneAck struct {
	Seq       uint64 // the seq of the stored point (the first one's, for a resend)
	Duplicate bool   // a resend: nothing new was stored
}

// PhoneStats count what the phone listener did besides storing points;
// the engine keeps them so that /metrics and the dashboard read one place.
type PhoneStats struct {
	Points      atomic.Uint64 // positions stored
	Duplicates  atomic.Uint64 // resends answered without storing
	Statuses    atomic.Uint64 // reports without a position (device_status)
	Quarantined atomic.Uint64 // malformed requests kept in quarantine
	Unknown     atomic.Uint64 // requests of an unregistered device (answered 200, nothing stored)
	NoDevice    atomic.Uint64 // requests without a device id (400)
	BadSecret   atomic.Uint64 // requests with a wrong path secret (404)
	ClosedFull  atomic.Uint64 // connections closed without a status: driver lane full
	ClosedError atomic.Uint64 // connections closed without a status: storage failed or shutting down
	Throttled   atomic.Uint64 // connections closed without a status: the source address guessed too many device ids
}

// Phone returns the phone listener's counters.
func (e *Engine) Phone() *PhoneStats { return &e.phone }

// phoneKey is the idempotency key of a point: device, fix time, position.
func phoneKey(p PhonePoint) string {
	return p.Device + "|" + strconv.FormatInt(p.FixMs, 10) + "|" +
		strconv.FormatFloat(p.Lat, 'g', -1, 64) + "|" + strconv.FormatFloat(p.Lng, 'g', -1, 64)
}

// SubmitPhonePoint stores one phone point on the driver lane (its bound,
// its metrics) and returns only once the point is durable (fsync), or
// with an error: ErrLaneFull (nothing queued), ErrUnavailable or
// ErrDiskLow, or ctx's error (the point may still commit; a resend is then
// a duplicate).
//
// The per-driver seq is assigned in the committer, where writes are
// serialized: seq = max(last+1, FixMs), strictly increasing per driver and
// near the fix time, so late and out-of-order points are accepted. A
// resend of a stored point — also one racing the first in the same batch —
// finds the idempotency entry written in the first one's batch and stores
// nothing. A driver should report through one path: a phone's seq is in
// milliseconds, so after it the driver API's small seqs read as old.
func (e *Engine) SubmitPhonePoint(ctx context.Context, p PhonePoint) (PhoneAck, error) {
	l := e.lanes[LaneDriver]
	l.stats.Arrivals.Add(1)
	if len(p.Value) < 2 || p.Value[0] != '{' || p.Value[len(p.Value)-1] != '}' {
		return PhoneAck{}, fmt.Errorf("engine: phone point of %s: value is not a JSON object", p.Device)
	}
	ds, err := e.drivers.get(p.Driver)
	if err != nil {
		return PhoneAck{}, l.refuse(err)
	}
	// The state stays pinned until the point is durable (its seq is
	// assigned in apply, so accepted does not show it in flight before):
	// released in durable, or here when it is not queued. A batch that
	// fails leaves the state pinned, which only keeps it from eviction.
	var released sync.Once
	release := func() { released.Do(func() { e.drivers.release(ds) }) }
	// Load the driver's high-water mark now, off the committer: apply
	// then only reads and moves it.
	ds.mu.Lock()
	err = e.loadDriver(p.Driver, ds)
	ds.mu.Unlock()
	if err != nil {
		release()
		return PhoneAck{}, err
	}
	key := phoneKey(p)
	ttl := e.cfg.IdempotencyTTL
	var ack PhoneAck // written in apply, read in durable: both on the committer
	it := &item{
		units: 1,
		flow:  p.Driver,
		bytes: int64(2*len(p.Value) + 2*len(p.Driver) + len(key) + 128),
		done:  make(chan result, 1),
	}
	it.apply = func(b *wal.Batch) (result, error) {
		raw, ok, err := b.Idem(phoneIdemScope, key)
		if err != nil {
			return result{}, err
		}
		if ok {
			if len(raw) != 8 {
				return result{}, fmt.Errorf("engine: phone idempotency entry %s: %d bytes", key, len(raw))
			}
			ack = PhoneAck{Seq: binary.BigEndian.Uint64(raw), Duplicate: true}
			return result{phone: ack, dup: true}, nil
		}
		ds.mu.Lock()
		seq := ds.accepted + 1
		if p.FixMs > 0 && uint64(p.FixMs) > seq {
			seq = uint64(p.FixMs)
		}
		ds.accepted = seq
		ds.mu.Unlock()
		num := strconv.AppendUint([]byte(`{"seq":`), seq, 10)
		val := make([]byte, 0, len(num)+len(p.Value))
		val = append(val, num...)
		if len(p.Value) > 2 {
			val = append(val, ',')
		}
		val = append(val, p.Value[1:]...)
		recs, err := b.PutSeries(fleet.TablePositions, p.Driver, [][]byte{val}, LaneDriver.String())
		if err != nil {
			return result{}, err
		}
		// Tied to its record: it travels with it to a standby.
		if err := b.SetIdemFor(recs[0].LSN, phoneIdemScope, key, binary.BigEndian.AppendUint64(nil, seq), ttl); err != nil {
			return result{}, err
		}
		ack = PhoneAck{Seq: seq}
		return result{phone: ack}, nil
	}
	it.durable = func() {
		defer release()
		if ack.Duplicate {
			l.stats.Duplicates.Add(1)
			e.phone.Duplicates.Add(1)
			return
		}
		if l.cfg.Contract == Async { // otherwise answer counts it
			l.stats.Accepted.Add(1)
		}
		e.phone.Points.Add(1)
		ds.advance(ack.Seq)
	}
	if err := e.enqueue(l, it); err != nil {
		release()
		return PhoneAck{}, l.refuse(err)
	}
	v, err := wait(ctx, it)
	if err != nil {
		return PhoneAck{}, err
	}
	return v.phone, nil
}

// PutPhoneRecord writes one key of a phone table (device_status,
// quarantine) through the driver lane and returns once it is durable.
func (e *Engine) PutPhoneRecord(ctx context.Context, table, key string, value []byte) error {
	if table != fleet.TableDeviceStatus && table != fleet.TableQuarantine {
		return fmt.Errorf("engine: %s is not a phone table", table)
	}
	l := e.lanes[LaneDriver]
	l.stats.Arrivals.Add(1)
	it := &item{
		units: 1,
		flow:  "\x00" + table, // the phone tables' writes share a turn of their own
		bytes: int64(2*len(value) + 2*len(key) + len(table) + 128),
		done:  make(chan result, 1),
		apply: func(b *wal.Batch) (result, error) {
			_, err := b.Put(table, key, value, LaneDriver.String(), wal.AnyVersion)
			return result{}, err
		},
	}
	if err := e.enqueue(l, it); err != nil {
		return l.refuse(err)
	}
	_, err := wait(ctx, it)
	return err
}

// IsStorageRefusal reports whether err means the engine cannot store now
// (full lane, closing, failed store, low disk, not the primary) rather
// than a bad request.
func IsStorageRefusal(err error) bool {
	return errors.Is(err, ErrLaneFull) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrReopening) || errors.Is(err, ErrDiskLow) ||
		errors.Is(err, ErrTooManyDrivers) || errors.Is(err, ErrQueueTimeout) || errors.Is(err, ErrNotPrimary)
}

// DeviceDriver looks a device up in the devices table: the driver its
// points belong to, and whether it is registered there.
func (e *Engine) DeviceDriver(id string) (string, bool, error) {
	s, err := e.Snapshot()
	if err != nil {
		return "", false, err
	}
	defer s.Close()
	st, ok, err := s.Get(fleet.TableDevices, id)
	if err != nil || !ok {
		return "", false, err
	}
	d, err := fleet.DecodeDeviceEntry(st.Value)
	if err != nil {
		return "", false, fmt.Errorf("engine: device %s: stored entry %.80q: %v", id, st.Value, err)
	}
	return d.Driver, true, nil
}
