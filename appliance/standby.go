package appliance

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/fleetevents"
	"routehound/uplink"
)

// The depot's writer role (issue 20): a box ships its log (the uplink) as
// the depot's primary, or follows the depot's stream as its warm standby
// (the follower) until it is promoted; a primary a standby was promoted in
// place of is fenced and refuses writes.

// FollowConfig is a standby's follower configuration: the [uplink]
// stream it follows, and the uplink's state file its promotion writes.
func FollowConfig(c config.Config, dataDir string) uplink.FollowConfig {
	u := c.Uplink
	return uplink.FollowConfig{URL: u.NATSURL, Depot: u.Depot, Stream: u.Stream, UplinkStateFile: filepath.Join(dataDir, "uplink.json"),
		StateFile: filepath.Join(dataDir, "standby.json")}
}

// role holds what changes at a promotion: the uplink (nil on a standby
// until promoted) and the fleet-events consumer (a standby runs none: the
// derived tables come from the primary's log).
type role struct {
	mu       sync.Mutex // a promotion against a shutdown
	up       atomic.Pointer[uplink.Uplink]
	follower *uplink.Follower
	central  *uplink.Central // a central view's follower (central.go)
	closed   bool
}

// retainAfter is the engine's retention hook: what the uplink has not
// shipped is kept; a standby ships nothing, so it keeps by its own
// retention alone.
func (r *role) retainAfter() uint64 {
	if up := r.up.Load(); up != nil {
		return up.RetainAfter()
	}
	return math.MaxUint64
}

// uplinkStatus is GET /v1/uplink: the uplink's status, with the box's role.
type uplinkStatus struct {
	uplink.Status
	Role    string               `json:"role"` // primary, standby or fenced
	Standby *uplink.FollowStatus `json:"standby,omitempty"`
}

// status answers GET /v1/uplink.
func (a *Appliance) uplinkStatus() any {
	s := uplinkStatus{Role: "primary"}
	if up := a.role.up.Load(); up != nil {
		s.Status = up.Status()
		if s.Fenced {
			s.Role = "fenced"
		}
	} else {
		s.Status = uplink.Status{Enabled: true, Depot: a.Config.Uplink.Depot, Stream: a.Config.Uplink.Stream, DurableLSN: a.Engine.DurableLSN()}
	}
	if f := a.role.follower; f != nil {
		fs := f.Status()
		s.Standby = &fs
		if fs.Role != "primary" {
			s.Role = "standby"
			s.Epoch = fs.Epoch
			s.Connected = fs.Connected
			s.AckedLSN = fs.AppliedLSN
			if s.LastError == "" {
				s.LastError, s.LastErrorAt = fs.LastError, fs.LastErrorAt
			}
		}
	}
	return s
}

// Promote makes a standby the depot's writer: the follower applies what
// the stream holds and fences the old primary (a new epoch), then the
// engine takes writes, the fleet-events consumer starts from the cursor
// the primary's log left, and the uplink ships from the last record
// applied. api.ErrNotStandby when this box is not a standby.
func (a *Appliance) Promote(ctx context.Context) (uplink.PromoteResult, error) {
	r := a.role
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.follower == nil || r.up.Load() != nil || r.closed {
		return uplink.PromoteResult{}, api.ErrNotStandby
	}
	ctx, cancel := context.WithTimeout(ctx, promoteTimeout)
	defer cancel()
	res, err := r.follower.Promote(ctx)
	if err != nil {
		return res, err
	}
	// The follower stopped for good: this box writes now.
	r.follower.Close()
	a.Engine.Promote()
	if a.Config.Fleet.Events {
		ev, err := fleetevents.Start(a.Engine, FleetEventsConfig(a.Config), a.log)
		if err != nil {
			a.log.Error("promoted, but the fleet-events consumer did not start", "err", err)
		} else {
			a.Events = ev
			a.evNow.Store(ev)
			if err := a.API.MountCollector(fleetevents.Collector(ev)); err != nil {
				a.log.Warn("fleet-events metrics", "err", err)
			}
		}
	}
	up, err := a.openUplink()
	if err != nil {
		return res, fmt.Errorf("promoted to epoch %d, but the uplink did not start (restart this box to ship): %w", res.Epoch, err)
	}
	up.Start(a.Engine)
	if err := a.API.MountCollector(up.Collector()); err != nil {
		a.log.Warn("uplink metrics", "err", err)
	}
	return res, nil
}

// events is the fleet-events consumer now (nil: none): a standby's starts
// at its promotion. Not under the role's lock, which a promotion holds for
// up to promoteTimeout: the Channels page asks.
func (a *Appliance) events() *fleetevents.Consumer { return a.evNow.Load() }

// fenced makes a primary a standby was promoted in place of read-only: the
// engine refuses writes, and the fleet-events consumer (whose writes would
// be refused) stops.
func (a *Appliance) fenced(why string) {
	a.Engine.SetNotPrimary("this box was the depot's primary and is " + why)
	a.role.mu.Lock()
	ev := a.Events
	a.evNow.Store(nil) // the Channels page: no consumer runs any more
	a.role.mu.Unlock()
	if ev != nil {
		ev.Close()
	}
}

// promoteTimeout bounds a promotion: applying what the stream holds and
// publishing the marker. Past it the box stays a standby.
const promoteTimeout = time.Minute

// replicateLanes are the lanes of [uplink] replicate.
func replicateLanes(c config.Config) []engine.Lane {
	var out []engine.Lane
	for _, n := range c.Uplink.Replicate {
		switch n {
		case "dispatch":
			out = append(out, engine.LaneDispatch)
		case "warehouse":
			out = append(out, engine.LaneWarehouse)
		case "tables":
			out = append(out, engine.LaneTables)
		}
	}
	return out
}

// waitReplicated is the replicated lanes' wait (api.SetReplicate): until
// the uplink has JetStream's acknowledgement of lsn, at most
// [uplink] replicate_timeout (then api.ErrNotReplicated).
func (a *Appliance) waitReplicated(ctx context.Context, lsn uint64) error {
	up := a.role.up.Load()
	if up == nil {
		return api.ErrNotReplicated // a standby's writes are refused before this
	}
	wctx, cancel := context.WithTimeout(ctx, a.Config.Uplink.ReplicateTimeout)
	defer cancel()
	err := up.WaitAcked(wctx, lsn)
	if err != nil && ctx.Err() == nil {
		return api.ErrNotReplicated
	}
	return err
}

// openUplink opens the uplink with the fence's hook: a newer epoch in the
// stream makes the engine refuse writes.
func (a *Appliance) openUplink() (*uplink.Uplink, error) {
	c := UplinkConfig(a.Config, a.Dir)
	c.OnFenced = a.fenced
	up, err := uplink.Open(c, a.log)
	if err != nil {
		return nil, err
	}
	a.role.up.Store(up)
	a.Uplink = up
	return up, nil
}
