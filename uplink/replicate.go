package uplink

import "context"

// Replicated lanes (issue 20 part 2): the api answers a write of a lane in
// [uplink] replicate only once JetStream acknowledged its LSN (WaitAcked),
// so that losing this box loses none of them.

// setAcked moves the acknowledged LSN and wakes WaitAcked's waiters.
func (u *Uplink) setAcked(lsn uint64) {
	u.acked.Store(lsn)
	u.ackMu.Lock()
	if u.ackCh != nil {
		close(u.ackCh)
		u.ackCh = nil
	}
	u.ackMu.Unlock()
}

// WaitAcked waits until JetStream acknowledged every record up to lsn (or
// retention dropped it before it was shipped: counted, logged), or ctx
// ends.
func (u *Uplink) WaitAcked(ctx context.Context, lsn uint64) error {
	for {
		u.ackMu.Lock()
		if u.acked.Load() >= lsn {
			u.ackMu.Unlock()
			return nil
		}
		if u.ackCh == nil {
			u.ackCh = make(chan struct{})
		}
		ch := u.ackCh
		u.ackMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
