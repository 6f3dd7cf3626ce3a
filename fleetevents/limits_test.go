package fleetevents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// largestRoute is the largest assignment the API takes for a route named
// route: 1,000 stops (fleet.MaxStops) at one place, etas of 35 bytes, a
// driver's name of 128 bytes and stop ids as long as the progress bound
// lets them be (fleet.MaxProgressBytes); one byte more is refused with
// route_too_large.
func largestRoute(t *testing.T, route string, lastApart bool) (driver, body string) {
	t.Helper()
	driver = strings.Repeat("v", fleet.MaxName)
	build := func(idLen int) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, `{"driver":%q,"stops":[`, driver)
		for i := range fleet.MaxStops {
			if i > 0 {
				b.WriteString(",")
			}
			id := fmt.Sprintf("%0*d", idLen, i)
			lat := 10
			if lastApart && i == fleet.MaxStops-1 {
				lat = 11
			}
			fmt.Fprintf(&b, `{"id":%q,"lat":%d,"lng":10,"radius_m":50,"eta":"2026-12-07T12:00:00.123456789+01:00"}`, id, lat)
		}
		b.WriteString("]}")
		_, err := fleet.DecodeAssignment([]byte(b.String()))
		return b.String(), err
	}
	idLen := 4
	for ; idLen <= fleet.MaxStopID; idLen++ {
		if _, err := build(idLen + 1); err != nil {
			var be *fleet.BodyError
			if !errors.As(err, &be) || be.Code != fleet.CodeRouteTooLarge {
				t.Fatalf("stop ids of %d bytes: %v, want %s", idLen+1, err, fleet.CodeRouteTooLarge)
			}
			break
		}
	}
	if idLen > fleet.MaxStopID {
		t.Fatalf("1,000 stops with ids of %d bytes pass: the progress bound does not bind", fleet.MaxStopID)
	}
	body, err := build(idLen)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the largest route: %d stops, ids of %d bytes, %d bytes of body", fleet.MaxStops, idLen, len(body))
	return driver, body
}

// The largest route the API takes, under the smallest configuration the
// server allows (the engine's smallest batch, about 1 MB at the smallest
// storage.memory_mb, and an events lane of 64 records): one point at its
// last stop skips the 999 others and arrives — 1,000 events of about
// 1.5 KB each in the engine's accounting (1.5 MB, more than a batch, and
// far more records than the lane takes). The events are written in parts
// of the point's one unit, the route's progress with the last; with the
// consumer stopped after every part, each restart goes on with the events
// not yet written. Every event is in the log once. (The progress at its
// longest, every stop departed: TestProgressBytesBoundsTheLongest.)
func TestConsumerLargestRouteSmallestConfig(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			submitted = map[string]uint64{}
			small := func(c *engine.Config) {
				l := c.Lanes[engine.LaneEvents]
				l.QueueBound = 64
				c.Lanes[engine.LaneEvents] = l
			}
			dir := t.TempDir()
			n := openWith(t, dir, small)
			if b := n.e.Config().BatchBytes; b > 1100000 {
				t.Fatalf("batch bytes %d: not the smallest", b)
			}
			route := strings.Repeat("r", fleet.MaxName)
			driver, body := largestRoute(t, route, true)
			assignRoute(t, n.e, route, body)
			t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			n.settle(t)
			stopped := make(chan struct{}, 1)
			if crash {
				setAfterPart(func(c *Consumer) {
					c.cancel()
					select {
					case stopped <- struct{}{}:
					default:
					}
				})
				defer func() { setAfterPart(nil) }()
			}
			submit(t, n.e, driver, fleet.MaxStops+1, 11, 10, t0.Add(time.Hour)) // at the last stop
			var pointLSN uint64
			for {
				if seq, err := n.e.DriverDurableSeq(driver); err != nil || seq == fleet.MaxStops+1 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			// The durable seq moves just before the batch's records are published.
			if err := n.e.WaitCommitted(context.Background()); err != nil {
				t.Fatal(err)
			}
			n.e.ReadLog(n.e.StoreStats().LastLSN-5, 0, func(r engine.Record) error {
				if r.Table == fleet.TablePositions {
					pointLSN = r.LSN
				}
				return nil
			})
			restarts := 0
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for crash && n.c.Stats().Stored.Load() < pointLSN {
				select {
				case <-stopped:
					n.c.Close()
					if c := storedCursor(t, n.e); c.LSN != pointLSN || c.Part == 0 {
						t.Fatalf("stored cursor %+v after a part, want inside %d", c, pointLSN)
					}
					n.close(t)
					n = openWith(t, dir, small)
					restarts++
				case <-ctx.Done():
					t.Fatalf("the point is not written within 60 s (restarts %d, errors %d)", restarts, n.c.Stats().Errors.Load())
				case <-time.After(5 * time.Millisecond):
				}
			}
			if crash && restarts < 3 {
				t.Fatalf("%d restarts between parts: the test stops too little", restarts)
			}
			setAfterPart(nil)
			n.settle(t)
			defer n.close(t)
			got := fenceEvents(t, n.e)
			if got[StopSkipped+"/"] != fleet.MaxStops-1 || got[StopArrived+"/"] != 1 {
				t.Fatalf("events %v (errors %d)", got, n.c.Stats().Errors.Load())
			}
			if got, want := eventsInLog(t, n.e), expected(t, n.e); !reflect.DeepEqual(got, want) {
				t.Fatalf("%d events in the log, want %d", len(got), len(want))
			}
			if e := n.c.Stats().Errors.Load(); e != 0 {
				t.Fatalf("consumer errors: %d", e)
			}
		})
	}
}

// The largest route at its longest progress: its driver arrives at each
// of its 1,000 stops (one point each), then one point far away departs
// them all at once. The tracker's own output is measured: the progress's
// JSON is within what the API bounded it by (fleet.Assignment
// ProgressBytes, at most fleet.MaxProgressBytes), so that the last write
// of the point (the progress, and at most a quarter of a batch of its
// events) fits the smallest batch; the 1,000 departures take more than a
// batch, which is why they are written in parts.
func TestProgressBytesBoundsTheLongest(t *testing.T) {
	route := strings.Repeat("r", fleet.MaxName)
	driver, body := largestRoute(t, route, false)
	a, err := fleet.DecodeAssignment([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(75)
	lsn := uint64(1 << 40) // LSNs and versions of many digits
	if _, bad := tr.Apply(&engine.Record{LSN: lsn, Version: 1 << 40, Table: fleet.TableAssignments, Key: route, Op: engine.OpPut, Value: []byte(body)}); bad != nil {
		t.Fatal(bad)
	}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	point := func(seq int, lat float64) []Event {
		lsn++
		ts := t0.Add(time.Duration(seq)*time.Second + 123456789).In(time.FixedZone("", 3600)).Format(time.RFC3339Nano)
		evs, bad := tr.Apply(&engine.Record{LSN: lsn, Table: fleet.TablePositions, Key: driver, Op: engine.OpPut,
			Value: []byte(fmt.Sprintf(`{"seq":%d,"lat":%v,"lng":10,"ts":%q}`, seq, lat, ts))})
		if bad != nil {
			t.Fatal(bad)
		}
		return evs
	}
	for seq := 1; seq <= fleet.MaxStops; seq++ {
		if evs := point(seq, 10); len(evs) != 1 || evs[0].Type != StopArrived {
			t.Fatalf("point %d: %v", seq, evs)
		}
	}
	evs := point(fleet.MaxStops+1, 12)
	if len(evs) != fleet.MaxStops {
		t.Fatalf("%d departures, want %d", len(evs), fleet.MaxStops)
	}
	p, _ := tr.Route(route)
	raw, _ := json.Marshal(&p)
	if bound := a.ProgressBytes(); len(raw) > bound || bound > fleet.MaxProgressBytes {
		t.Fatalf("the progress at its longest is %d bytes, the API's bound %d (at most %d)", len(raw), bound, fleet.MaxProgressBytes)
	}
	cost := 0
	for i := range evs {
		cost += evCost(&evs[i])
	}
	t.Logf("progress %d bytes (bound %d); the departures %d bytes in the engine's accounting", len(raw), a.ProgressBytes(), cost)
	if cost <= 1<<20 {
		t.Fatalf("the departures take %d bytes: the route is not the largest case", cost)
	}
}
