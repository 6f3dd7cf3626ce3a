package api

import (
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxFailureSources bounds the source addresses a FailureLimiter keeps.
// Policy when full: the entries whose window ended go first, then the one
// whose window started earliest.
const maxFailureSources = 4096

// FailureLimiter counts failed authentications (401s, refused dashboard
// logins) per source address in a fixed window: past max failures the
// address is refused (429 too_many_failures) until its window ends,
// whatever token it sends, so that guessing tokens costs a window per max
// guesses. IPv6 sources count per /64 (one host holds a whole /64). Memory
// is bounded by maxFailureSources. A nil limiter, or max 0, limits nothing.
type FailureLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	// sources mirrors len(m): while no address has failed, a request
	// costs one atomic load and no lock.
	sources atomic.Int64

	mu sync.Mutex
	m  map[netip.Prefix]*failureCount
}

type failureCount struct {
	n     int
	start time.Time // the window is [start, start+window)
}

// NewFailureLimiter allows max failures per source address within window
// (max 0: no limit).
func NewFailureLimiter(max int, window time.Duration) *FailureLimiter {
	if max <= 0 || window <= 0 {
		return nil
	}
	return &FailureLimiter{max: max, window: window, now: time.Now, m: map[netip.Prefix]*failureCount{}}
}

// source is the counting key of a request's peer: its address, or its /64
// for IPv6. ok is false for a RemoteAddr that is not ip:port (then nothing
// is counted).
func source(remoteAddr string) (p netip.Prefix, ok bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return p, false
	}
	a := ap.Addr().Unmap().WithZone("")
	bits := a.BitLen()
	if a.Is6() {
		bits = 64
	}
	p, err = a.Prefix(bits)
	return p, err == nil
}

// Blocked reports whether r's source is past its failures, and for how long
// it stays refused.
func (l *FailureLimiter) Blocked(r *http.Request) (retry time.Duration, blocked bool) {
	if l == nil || l.sources.Load() == 0 {
		return 0, false
	}
	k, ok := source(r.RemoteAddr)
	if !ok {
		return 0, false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.m[k]
	if c == nil {
		return 0, false
	}
	if left := l.window - now.Sub(c.start); left <= 0 {
		l.delete(k)
		return 0, false
	} else if c.n >= l.max {
		return left, true
	}
	return 0, false
}

// Failed counts one failed authentication of r's source.
func (l *FailureLimiter) Failed(r *http.Request) {
	if l == nil {
		return
	}
	k, ok := source(r.RemoteAddr)
	if !ok {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.m[k]
	switch {
	case c == nil:
		if len(l.m) >= maxFailureSources {
			l.evict(now)
		}
		c = &failureCount{start: now}
		l.m[k] = c
		l.sources.Store(int64(len(l.m)))
	case now.Sub(c.start) >= l.window:
		c.n, c.start = 0, now
	}
	c.n++
}

func (l *FailureLimiter) delete(k netip.Prefix) {
	delete(l.m, k)
	l.sources.Store(int64(len(l.m)))
}

// evict makes room for one source: the ended windows, else the oldest.
func (l *FailureLimiter) evict(now time.Time) {
	var oldest netip.Prefix
	var oldestStart time.Time
	for k, c := range l.m {
		if now.Sub(c.start) >= l.window {
			delete(l.m, k)
			continue
		}
		if oldestStart.IsZero() || c.start.Before(oldestStart) {
			oldest, oldestStart = k, c.start
		}
	}
	if len(l.m) >= maxFailureSources {
		delete(l.m, oldest)
	}
	l.sources.Store(int64(len(l.m)))
}

// tooManyFailures is the refusal of a blocked source; retry is its
// Retry-After.
func tooManyFailures(retry time.Duration) *apiError {
	e := errorf(http.StatusTooManyRequests, "too_many_failures", "too many failed authentications from this address; retry after the Retry-After delay")
	e.retry = retry
	return e
}
