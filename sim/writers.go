package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"routehound/fleet"
)

// KeyedAck is one acknowledged keyed write (an assignment, a loading
// event, a user-table put): after the run, the log must hold (table, key,
// version) and the table's state must have the key at that version or later.
type KeyedAck struct {
	Actor   string
	Table   string
	Key     string
	Version uint64
}

// Acks is every acknowledgement a run received: what the verifier reads
// back. Safe for concurrent use while the run goes on.
type Acks struct {
	mu      sync.Mutex
	keyed   []KeyedAck
	drivers []*driverSim
}

func (a *Acks) add(k KeyedAck) {
	a.mu.Lock()
	a.keyed = append(a.keyed, k)
	a.mu.Unlock()
}

// Keyed returns the acknowledged keyed writes of actor (all when "").
func (a *Acks) Keyed(actor string) []KeyedAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []KeyedAck
	for _, k := range a.keyed {
		if actor == "" || k.Actor == actor {
			out = append(out, k)
		}
	}
	return out
}

// pacer spaces one writer's requests around a mean rate (uniform jitter
// ±50%); rate(now) is the current rate in requests/s.
type pacer struct {
	rng  *rand.Rand
	rate func(time.Time) float64
}

func (p pacer) wait(ctx context.Context) bool {
	r := p.rate(time.Now())
	if r <= 0 {
		return sleep(ctx, 100*time.Millisecond)
	}
	mean := float64(time.Second) / r
	return sleep(ctx, time.Duration(mean*(0.5+p.rng.Float64())))
}

// writeAnswer is the part of a keyed write's answer the simulator reads.
type writeAnswer struct {
	Route   string `json:"route"`
	Key     string `json:"key"`
	ID      string `json:"id"`
	Version uint64 `json:"version"`
}

// retrying sends one write, retrying after 429/503 and transport failures
// with the same body and Idempotency-Key until it is answered otherwise or
// ctx ends. Every attempt is offered; every refusal is counted by reason.
func retrying(ctx context.Context, c *http.Client, rec *recorder, method, url, token string, body []byte, hdr ...string) (answer, bool) {
	for ctx.Err() == nil {
		rec.offered.Add(1)
		t0 := time.Now()
		a, err := do(ctx, c, method, url, token, body, hdr...)
		if err == nil && a.status < 300 {
			rec.ok(t0, time.Now())
			return a, true
		}
		if err != nil && ctx.Err() != nil {
			return a, false
		}
		rec.reject(reason(a, err))
		if err == nil && a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable {
			return a, false
		}
		if !sleep(ctx, backoff(a)) {
			return a, false
		}
	}
	return answer{}, false
}

// dispatcher assigns routes: mostly its own, sometimes one of the hot
// routes every dispatcher works on, with If-Match set to the version it
// last saw, so that dispatchers racing on a hot route get 409s.
func dispatcher(ctx context.Context, id int, s Scenario, t Target, c *http.Client, rec *recorder, acks *Acks, run string, p pacer) {
	known := map[string]uint64{}
	var b []byte
	for n := 0; p.wait(ctx); n++ {
		var route string
		if s.HotRoutes > 0 && p.rng.Float64() < 0.1 {
			route = fmt.Sprintf("%s-hot-%d", run, p.rng.IntN(s.HotRoutes))
		} else {
			per := max(1, (s.Routes-s.HotRoutes)/max(1, s.Dispatchers))
			route = fmt.Sprintf("%s-r-%d-%d", run, id, p.rng.IntN(per))
		}
		now := time.Now()
		b = append(b[:0], `{"driver":"`...)
		b = fmt.Appendf(b, "%s-d-%d", run, p.rng.IntN(max(1, s.Drivers)))
		b = append(b, `","stops":[`...)
		for i := range 2 {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `{"id":"stop-%d","lat":%.5f,"lng":%.5f,"eta":`, i, 52.4+p.rng.Float64()*0.2, 13.3+p.rng.Float64()*0.2)
			b = fleet.AppendTime(b, now.Add(time.Duration(i+1)*20*time.Minute))
			b = append(b, '}')
		}
		b = append(b, `],"note":`...)
		b = fleet.AppendTime(b, now) // the viewers measure delivery latency from it
		b = append(b, '}')
		hdr := []string{"Idempotency-Key", fmt.Sprintf("%s-dispatch-%d-%d", run, id, n)}
		if v, ok := known[route]; ok {
			hdr = append(hdr, "If-Match", strconv.FormatUint(v, 10))
		}
		url := t.URL + "/v1/assignments/" + route
		a, ok := retrying(ctx, c, rec, http.MethodPut, url, t.Tokens["dispatch"], b, hdr...)
		if ok {
			var w writeAnswer
			if err := json.Unmarshal(a.body, &w); err == nil && w.Version > 0 {
				known[route] = w.Version
				acks.add(KeyedAck{Actor: ActorDispatch, Table: fleet.TableAssignments, Key: route, Version: w.Version})
			} else {
				rec.reject("bad_answer")
			}
			continue
		}
		if a.status == http.StatusConflict { // someone else moved the route: read it again
			if g, err := do(ctx, c, http.MethodGet, url, t.Tokens["dispatch"], nil); err == nil && g.status == http.StatusOK {
				var w writeAnswer
				if json.Unmarshal(g.body, &w) == nil {
					known[route] = w.Version
				}
			}
		}
	}
}

// terminal posts loading events; each has its own Idempotency-Key, kept
// across retries after 503.
func terminal(ctx context.Context, id int, t Target, c *http.Client, rec *recorder, acks *Acks, run string, p pacer) {
	var b []byte
	for n := 0; p.wait(ctx); n++ {
		b = append(b[:0], `{"terminal":"`...)
		b = fmt.Appendf(b, "%s-term-%d", run, id)
		b = fmt.Appendf(b, `","dock":"dock-%d","shipment":"ship-%d-%d","kind":"%s","pallets":%d,"ts":`,
			p.rng.IntN(12), id, n, fleet.LoadingKinds[p.rng.IntN(len(fleet.LoadingKinds))], p.rng.IntN(33))
		b = fleet.AppendTime(b, time.Now())
		b = append(b, '}')
		a, ok := retrying(ctx, c, rec, http.MethodPost, t.URL+"/v1/loading-events", t.Tokens["warehouse"], b,
			"Idempotency-Key", fmt.Sprintf("%s-wh-%d-%d", run, id, n))
		if !ok {
			continue
		}
		var w writeAnswer
		if err := json.Unmarshal(a.body, &w); err == nil && w.ID != "" {
			acks.add(KeyedAck{Actor: ActorWarehouse, Table: fleet.TableLoading, Key: w.ID, Version: 1})
		} else {
			rec.reject("bad_answer")
		}
	}
}

// tableWriter puts keys into one user table (subscriber-flood): the
// changes its subscribers receive.
func tableWriter(ctx context.Context, table string, t Target, c *http.Client, rec *recorder, acks *Acks, p pacer) {
	var b []byte
	for n := 0; p.wait(ctx); n++ {
		key := "k-" + strconv.Itoa(n%64)
		b = append(b[:0], `{"ts":`...)
		b = fleet.AppendTime(b, time.Now())
		b = fmt.Appendf(b, `,"n":%d}`, n)
		a, ok := retrying(ctx, c, rec, http.MethodPut, t.URL+"/v1/tables/"+table+"/keys/"+key, t.Tokens["dashboard"], b)
		if !ok {
			continue
		}
		var w writeAnswer
		if err := json.Unmarshal(a.body, &w); err == nil && w.Version > 0 {
			acks.add(KeyedAck{Actor: ActorTables, Table: table, Key: key, Version: w.Version})
		} else {
			rec.reject("bad_answer")
		}
	}
}
