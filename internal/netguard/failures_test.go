package netguard

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// The failure limiter: max failures per address within the window, then
// blocked until the window ends; other addresses untouched; IPv6 counted
// per /64; memory bounded; nil (max 0) limits nothing.
func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewFailureLimiter(3, time.Minute)
	l.now = func() time.Time { return now }
	a := httptest.NewRequest("GET", "/", nil)
	a.RemoteAddr = "10.0.0.1:4000"
	b := httptest.NewRequest("GET", "/", nil)
	b.RemoteAddr = "10.0.0.2:4000"
	for i := 0; i < 3; i++ {
		if _, blocked := l.Blocked(a); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		l.Failed(a)
	}
	retry, blocked := l.Blocked(a)
	if !blocked || retry != time.Minute {
		t.Fatalf("after 3 failures: %v %v", retry, blocked)
	}
	if _, blocked := l.Blocked(b); blocked {
		t.Fatal("another address is blocked")
	}
	now = now.Add(59 * time.Second)
	if retry, blocked := l.Blocked(a); !blocked || retry != time.Second {
		t.Fatalf("1 s before the window ends: %v %v", retry, blocked)
	}
	now = now.Add(time.Second)
	if _, blocked := l.Blocked(a); blocked {
		t.Fatal("still blocked after the window")
	}
	// IPv6: one /64 is one source.
	v6a := httptest.NewRequest("GET", "/", nil)
	v6a.RemoteAddr = "[2001:db8:1:2::1]:4000"
	v6b := httptest.NewRequest("GET", "/", nil)
	v6b.RemoteAddr = "[2001:db8:1:2:ffff::9]:4001"
	for range 3 {
		l.Failed(v6a)
	}
	if _, blocked := l.Blocked(v6b); !blocked {
		t.Fatal("another host of the same /64 is not blocked")
	}
	// Bounded: many sources never grow the map past its bound.
	for i := range maxFailureSources + 100 {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)
		l.Failed(r)
	}
	if n := len(l.m); n > maxFailureSources || l.sources.Load() != int64(n) {
		t.Fatalf("%d sources kept (counter %d), bound %d", n, l.sources.Load(), maxFailureSources)
	}
	// Off: a nil limiter limits nothing.
	off := NewFailureLimiter(0, time.Minute)
	for range 10 {
		off.Failed(a)
	}
	if _, blocked := off.Blocked(a); blocked {
		t.Fatal("a limiter with max 0 blocked")
	}
}

// FailedKey counts each distinct key once per window: a phone repeating
// its one unknown id costs one failure, guessing ids costs one each.
func TestFailureLimiterKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewFailureLimiter(3, time.Minute)
	l.now = func() time.Time { return now }
	a := httptest.NewRequest("GET", "/", nil)
	a.RemoteAddr = "10.0.0.1:4000"
	for range 50 {
		l.FailedKey(a, "same-id")
	}
	if _, blocked := l.Blocked(a); blocked {
		t.Fatal("one key repeated 50 times blocked its address")
	}
	l.FailedKey(a, "id-2")
	l.FailedKey(a, "id-3")
	if _, blocked := l.Blocked(a); !blocked {
		t.Fatal("3 distinct keys did not block")
	}
	now = now.Add(time.Minute)
	if _, blocked := l.Blocked(a); blocked {
		t.Fatal("still blocked after the window")
	}
	l.FailedKey(a, "same-id") // a new window counts a key again
	if n := len(l.m[netipPrefix(t, "10.0.0.1/32")].keys); n != 1 {
		t.Fatalf("%d keys kept in the new window", n)
	}
}

func netipPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
