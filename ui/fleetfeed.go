package ui

import (
	"context"
	"errors"
	"sync"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/hub"
)

// fleetFeed is the one hub subscriber of `positions` that every live Fleet
// page shares. The hub's fan-out (a cursor on the engine's durability feed)
// offers each record to each subscriber of its table, so 20,000 points/s to
// N Fleet pages would cost it N offers per point; through the feed it costs
// one. The feed
// keeps the latest event per driver (bounded by the engine's max_drivers)
// and each page takes, once per frame, the drivers changed after its cursor.
type fleetFeed struct {
	u *UI

	mu      sync.Mutex
	started bool
	start   uint64                // the LSN the feed resumed from: it knows every change after it
	last    uint64                // the LSN of the newest change taken in
	latest  map[string]*hub.Event // driver → newest event
}

// maxCatchUp bounds the log a page rendered before the feed started reads
// to close the gap; past it the page renders again.
const maxCatchUp = 100000

var errTooOld = errors.New("ui: the page is older than the fleet feed by too much")

// join returns the cursor of a page rendered at from, starting the feed on
// first use. A page older than the feed gets the changes between its LSN
// and the feed's start from the log (latest per driver) as catchUp.
//
// from comes from the browser: it is clamped to the durable LSN, so that a
// forged or stale from far ahead cannot start the shared feed in the
// future (every later page would then be "too old" and reload forever).
func (f *fleetFeed) join(from uint64) (cursor uint64, catchUp []*hub.Event, err error) {
	from = min(from, f.u.e.DurableLSN())
	f.mu.Lock()
	if !f.started {
		f.started, f.start, f.last = true, from, from
		f.latest = map[string]*hub.Event{}
		f.u.wg.Add(1)
		go func() {
			defer f.u.wg.Done()
			f.run()
		}()
	}
	start := f.start
	f.mu.Unlock()
	if from >= start {
		return from, nil, nil
	}
	if start-from > maxCatchUp {
		return 0, nil, errTooOld
	}
	latest := map[string]*hub.Event{}
	err = f.u.e.ReadLog(from, int(start-from), func(r engine.Record) error {
		if r.Table == fleet.TablePositions {
			latest[r.Key] = &hub.Event{LSN: r.LSN, Table: r.Table, Key: r.Key, Op: r.Op, Value: r.Value, Version: r.Version}
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	for _, ev := range latest {
		catchUp = append(catchUp, ev)
	}
	return start, catchUp, nil
}

// since returns the newest event of each driver changed after cursor, and
// the new cursor.
func (f *fleetFeed) since(cursor uint64) (evs []*hub.Event, next uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range f.latest {
		if ev.LSN > cursor {
			evs = append(evs, ev)
		}
	}
	return evs, f.last
}

// run streams positions into the feed until the dashboard closes,
// resubscribing (from its last LSN) when the hub ends the subscription.
func (f *fleetFeed) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-f.u.done
		cancel()
	}()
	for ctx.Err() == nil {
		sub, err := f.u.h.Subscribe(fleet.TablePositions)
		if err != nil {
			if errors.Is(err, hub.ErrClosed) {
				return
			}
			f.u.log.Warn("dashboard fleet feed: subscribe", "err", err)
		} else {
			f.mu.Lock()
			from := f.last
			f.mu.Unlock()
			err = f.u.h.Stream(ctx, sub, &from, (*feedSink)(f))
			sub.Close()
			var ce *hub.ClosedError
			if errors.As(err, &ce) && ce.Reason == "shutdown" {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// feedSink is the feed as a hub.Sink: it only stores, never waits.
type feedSink fleetFeed

func (s *feedSink) Snapshot(lsn uint64, rows []hub.Row, first, last, resync bool) error {
	f := (*fleetFeed)(s)
	f.mu.Lock()
	defer f.mu.Unlock()
	// A resync: every driver's newest point at lsn. Marking them all at
	// lsn makes every page take them all once.
	for _, r := range rows {
		f.latest[r.Key] = &hub.Event{LSN: lsn, Table: fleet.TablePositions, Key: r.Key, Op: engine.OpPut, Value: r.Value, Version: r.Version}
	}
	if last {
		f.last = max(f.last, lsn)
	}
	return nil
}

func (s *feedSink) Change(ev *hub.Event) error {
	f := (*fleetFeed)(s)
	f.mu.Lock()
	f.latest[ev.Key] = ev
	f.last = ev.LSN
	f.mu.Unlock()
	return nil
}

func (s *feedSink) Flush() error     { return nil }
func (s *feedSink) Heartbeat() error { return nil }
