package netguard

import (
	"errors"
	"net"
	"testing"
)

// fakeListener hands out in-memory connections from the given addresses.
type fakeListener struct {
	addrs []string
	i     int
}

type fakeConn struct {
	net.Conn
	remote net.Addr
	closed *int
}

func (c fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c fakeConn) Close() error         { *c.closed++; return c.Conn.Close() }

var errDone = errors.New("no more connections")

func (l *fakeListener) Accept() (net.Conn, error) {
	if l.i >= len(l.addrs) {
		return nil, errDone
	}
	a, _ := net.Pipe()
	ip := net.ParseIP(l.addrs[l.i])
	l.i++
	return fakeConn{Conn: a, remote: &net.TCPAddr{IP: ip, Port: 40000 + l.i}, closed: new(int)}, nil
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

// accept takes every connection the listener admits until the fake runs out.
func accept(t *testing.T, l *Listener) []net.Conn {
	t.Helper()
	var out []net.Conn
	for range 100 { // bounded: the fake holds fewer
		c, err := l.Accept()
		if errors.Is(err, errDone) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	t.Fatal("Accept never ran out")
	return nil
}

// TestListenerCapsPerAddress: past MaxConnsPerAddr from one address a new
// connection is closed and counted, other addresses are still admitted,
// and closing one connection frees its place. Loopback is exempt when
// asked.
func TestListenerCapsPerAddress(t *testing.T) {
	fl := &fakeListener{addrs: []string{"10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "127.0.0.1", "127.0.0.1", "127.0.0.1"}}
	l := Listen(fl, Limits{MaxConns: 100, MaxConnsPerAddr: 2, ExemptLoopback: true})
	got := accept(t, l)
	if len(got) != 6 {
		t.Fatalf("admitted %d connections, want 6 (2 of 10.0.0.1, 10.0.0.2, 3 of loopback)", len(got))
	}
	if total, perAddr := l.Refused(); total != 0 || perAddr != 1 {
		t.Fatalf("refused total %d, per address %d; want 0, 1", total, perAddr)
	}
	got[0].Close()
	got[0].Close() // a second Close frees nothing more
	if n := l.Open(); n != 5 {
		t.Fatalf("open %d after a close, want 5", n)
	}
	fl.addrs, fl.i = []string{"10.0.0.1", "10.0.0.1"}, 0
	if again := accept(t, l); len(again) != 1 {
		t.Fatalf("after a close, %d more of 10.0.0.1 admitted, want 1", len(again))
	}
}

// TestListenerCapsTotal: past MaxConns a connection is closed and counted,
// whatever its address.
func TestListenerCapsTotal(t *testing.T) {
	fl := &fakeListener{addrs: []string{"10.0.0.1", "10.0.0.2", "127.0.0.1", "10.0.0.3"}}
	l := Listen(fl, Limits{MaxConns: 2, MaxConnsPerAddr: 2, ExemptLoopback: true})
	if got := accept(t, l); len(got) != 2 {
		t.Fatalf("admitted %d, want 2", len(got))
	}
	if total, perAddr := l.Refused(); total != 2 || perAddr != 0 {
		t.Fatalf("refused total %d, per address %d; want 2, 0", total, perAddr)
	}
}
