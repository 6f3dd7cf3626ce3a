package api

import (
	"context"
	"errors"

	"routehound/engine"
)

// Replicated lanes (issue 20 part 2, [uplink] replicate): a write of such
// a lane is answered only once JetStream acknowledged its LSN, so losing
// this box loses none of them. The api does not import the uplink: the
// appliance hands it the lanes and the wait.

// ErrNotReplicated answers a replicated lane's write that is durable on
// this box but that JetStream did not acknowledge in time (503
// not_replicated): the writer retries with its Idempotency-Key, which
// answers the same write once it is in the stream.
var ErrNotReplicated = errors.New("api: the write is not acknowledged by JetStream in time")

// replication is the replicated lanes and the wait for an LSN to be in the
// stream.
type replication struct {
	lanes map[engine.Lane]bool
	wait  func(ctx context.Context, lsn uint64) error
}

// SetReplicate makes the writes of lanes wait, before their answer, until
// wait says their LSN is in the stream (nil: acknowledged; ErrNotReplicated
// or ctx's error otherwise).
func (s *Server) SetReplicate(lanes []engine.Lane, wait func(ctx context.Context, lsn uint64) error) {
	r := &replication{lanes: map[engine.Lane]bool{}, wait: wait}
	for _, l := range lanes {
		r.lanes[l] = true
	}
	s.replicate.Store(r)
}

// replicated waits, for a write of a replicated lane, until its LSN is in
// the stream; nil at once for other lanes.
func (s *Server) replicated(ctx context.Context, lane engine.Lane, lsn uint64) error {
	r := s.replicate.Load()
	if r == nil || !r.lanes[lane] || lsn == 0 {
		return nil
	}
	return r.wait(ctx, lsn)
}
