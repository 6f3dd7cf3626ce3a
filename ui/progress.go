package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/fleetevents"
)

// Route progress on the Routes page (issue 21): each route's stops with
// their status, ETA, arrival and delay, from route_progress (which the
// fleet-events consumer writes), refreshed live.

// routeProgress is a route's progress as the Routes page shows it.
type routeProgress = fleetevents.Progress

// progressOf reads route_progress (at most routesLimit routes) and the LSN
// of its last change.
func (u *UI) progressOf() (map[string]*routeProgress, uint64, error) {
	snap, err := u.e.Snapshot()
	if err != nil {
		return nil, 0, fmt.Errorf("ui: snapshot of route_progress: %w", err)
	}
	defer snap.Close()
	ti, _, err := snap.Table(fleet.TableRouteProgress)
	if err != nil {
		return nil, 0, fmt.Errorf("ui: route_progress: %w", err)
	}
	out := map[string]*routeProgress{}
	_, err = snap.Scan(fleet.TableRouteProgress, "", routesLimit, func(k string, st engine.State) error {
		var p routeProgress
		if json.Unmarshal(st.Value, &p) == nil {
			out[k] = &p
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("ui: scan route_progress: %w", err)
	}
	return out, ti.LastLSN, nil
}

// progressLSN is the LSN of route_progress's last change: a cheap look
// before reading it.
func (u *UI) progressLSN() (uint64, error) {
	snap, err := u.e.Snapshot()
	if err != nil {
		return 0, err
	}
	defer snap.Close()
	ti, _, err := snap.Table(fleet.TableRouteProgress)
	return ti.LastLSN, err
}

// stopClass grades a stop: green (on time: at most 5 minutes late, or no
// eta), amber (up to 15 minutes late), red (later, or skipped); pending
// stops are grey, amber once their eta has passed.
func stopClass(s fleetevents.StopProgress, now time.Time) string {
	switch s.Status {
	case fleetevents.Skipped:
		return "stop bad"
	case fleetevents.Pending:
		if eta, err := time.Parse(time.RFC3339Nano, s.ETA); err == nil && now.After(eta) {
			return "stop pending warn"
		}
		return "stop pending"
	}
	switch {
	case s.DelayS == nil || *s.DelayS <= 300:
		return "stop ok"
	case *s.DelayS <= 900:
		return "stop warn"
	}
	return "stop bad"
}

// stopTitle is a stop's details, for its tooltip.
func stopTitle(s fleetevents.StopProgress) string {
	t := s.ID + ": " + s.Status
	if s.ETA != "" {
		t += " · eta " + s.ETA
	}
	if s.ArrivedAt != "" {
		t += " · arrived " + s.ArrivedAt
	}
	if s.DelayS != nil {
		t += " · delay " + fmtDelay(*s.DelayS)
	}
	if s.DepartedAt != "" {
		t += " · departed " + s.DepartedAt
	}
	return t
}

// fmtDelay is a delay in seconds as "+12m", "-30s", "+1h5m".
func fmtDelay(s int64) string {
	sign := "+"
	if s < 0 {
		sign, s = "-", -s
	}
	d := time.Duration(s) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%s%ds", sign, s)
	case d < time.Hour:
		return fmt.Sprintf("%s%dm", sign, s/60)
	}
	return fmt.Sprintf("%s%dh%dm", sign, s/3600, s%3600/60)
}

// consumerRate turns the consumer's event count into events per second
// between two looks at the Channels page (at least half a second apart).
type consumerRate struct {
	mu     sync.Mutex
	at     time.Time
	events uint64
	rate   float64
}

func (c *consumerRate) update(events uint64) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.at.IsZero() {
		c.at, c.events = now, events
		return 0
	}
	if d := now.Sub(c.at); d >= 500*time.Millisecond {
		c.rate = float64(events-c.events) / d.Seconds()
		c.at, c.events = now, events
	}
	return c.rate
}

// consumerLine is the fleet-events consumer on the events lane's card.
type consumerLine struct {
	Lag          uint64
	Events       uint64
	EventsPerSec float64
	LatP99       time.Duration // a deciding point durable → its event durable
	Routes       int64
}

func (u *UI) consumerLine() *consumerLine {
	if u.opt.Events == nil {
		return nil
	}
	c := u.opt.Events()
	if c == nil {
		return nil
	}
	s := c.Stats()
	ev := s.Events.Load()
	return &consumerLine{Lag: c.Lag(), Events: ev, EventsPerSec: u.evRate.update(ev),
		LatP99: s.LatencyHist.Snapshot().Quantile(0.99), Routes: s.Routes.Load()}
}

// progressFrame upserts the progress cells that changed since the frame
// before (route_progress moved on, or a pending stop's eta passed).
func (v *routesLive) progressFrame(ctx context.Context, f *frame) {
	now := time.Now()
	if lsn, err := v.u.progressLSN(); err != nil || lsn == v.progressLSN && now.Sub(v.progressAt) < time.Minute {
		return // unchanged (its pending stops' grades once a minute), or a store reopening: the next frame
	}
	p, lsn, err := v.u.progressOf()
	if err != nil {
		return
	}
	v.progressLSN, v.progressAt = lsn, now
	if v.sent == nil {
		v.sent = map[string]string{}
	}
	for route, pr := range p {
		h := html(ctx, progressCell(route, pr, now))
		if v.sent[route] == h {
			continue
		}
		v.sent[route] = h
		f.Upsert = append(f.Upsert, upsert{ID: rowID("prog", route), HTML: h})
	}
	for route := range v.sent {
		if p[route] == nil {
			delete(v.sent, route)
		}
	}
}
