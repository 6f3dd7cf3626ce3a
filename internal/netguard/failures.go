package netguard

import (
	"hash/maphash"
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

// FailureLimiter counts failed authentications per source address in a
// fixed window: past max failures the address is refused until its window
// ends, whatever credential it sends, so that guessing costs a window per
// max guesses. The API counts its 401s and refused dashboard logins
// (answered 429 too_many_failures); the phone listener counts unknown
// device ids and wrong path secrets, each distinct one once (FailedKey),
// and closes a blocked address's connections without an answer. IPv6
// sources count per /64 (one host holds a whole /64). Memory is bounded by
// maxFailureSources (and max keys per source). A nil limiter, or max 0,
// limits nothing.
type FailureLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time
	seed   maphash.Seed

	// sources mirrors len(m): while no address has failed, a request
	// costs one atomic load and no lock.
	sources atomic.Int64

	mu sync.Mutex
	m  map[netip.Prefix]*failureCount
}

type failureCount struct {
	n     int
	start time.Time // the window is [start, start+window)
	keys  []uint64  // FailedKey: the hashes of the keys counted in this window (at most max)
}

// NewFailureLimiter allows max failures per source address within window
// (max 0: no limit).
func NewFailureLimiter(max int, window time.Duration) *FailureLimiter {
	if max <= 0 || window <= 0 {
		return nil
	}
	return &FailureLimiter{max: max, window: window, now: time.Now, seed: maphash.MakeSeed(), m: map[netip.Prefix]*failureCount{}}
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
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count(k).n++
}

// FailedKey counts a failure about key (a device id the phone listener
// does not know, a wrong path secret) once per window: the same key again
// from the same source adds nothing. Guessing many ids is limited, while
// one misconfigured phone that keeps sending its one unknown id costs its
// address a single failure, not its neighbours' service.
func (l *FailureLimiter) FailedKey(r *http.Request, key string) {
	if l == nil {
		return
	}
	k, ok := source(r.RemoteAddr)
	if !ok {
		return
	}
	h := maphash.String(l.seed, key)
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.count(k)
	for _, x := range c.keys {
		if x == h {
			return
		}
	}
	if len(c.keys) < l.max {
		c.keys = append(c.keys, h)
	}
	c.n++
}

// count is the current window's count of source k, made or restarted as
// needed. Caller holds l.mu.
func (l *FailureLimiter) count(k netip.Prefix) *failureCount {
	now := l.now()
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
		c.n, c.start, c.keys = 0, now, c.keys[:0]
	}
	return c
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
