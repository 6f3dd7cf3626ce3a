// Package netguard bounds what one client can hold on a listener: its
// connections (Listener: a cap in total and per source address) and the
// time it may take to send a request body (BodyDeadline). The appliance
// puts both on the HTTP listener (API and dashboard) and the phone
// listener.
package netguard

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// MaxHeaderBytes is the largest request header the listeners read (the
// request line and the headers together).
const MaxHeaderBytes = 64 << 10

// Limits bound a listener's open connections. Zero is no bound.
type Limits struct {
	MaxConns        int // open connections in total
	MaxConnsPerAddr int // open connections from one source IP address
	// ExemptLoopback lifts MaxConnsPerAddr for loopback addresses: a
	// reverse proxy or the load simulator on the box is one address for
	// every client. MaxConns still applies.
	ExemptLoopback bool
}

// Listener wraps a net.Listener: a connection past a limit is closed at
// once, without a byte read or written, and counted. Closing a connection
// it accepted (the server does; so does a WebSocket's end after a hijack)
// frees its place.
type Listener struct {
	net.Listener
	lim Limits

	mu     sync.Mutex
	open   int
	byAddr map[string]int

	refusedTotal   atomic.Uint64
	refusedPerAddr atomic.Uint64
}

// Listen wraps ln with lim.
func Listen(ln net.Listener, lim Limits) *Listener {
	return &Listener{Listener: ln, lim: lim, byAddr: map[string]int{}}
}

// Refused counts the connections closed at the cap in total
// (total) and at the cap per address (perAddr).
func (l *Listener) Refused() (total, perAddr uint64) {
	return l.refusedTotal.Load(), l.refusedPerAddr.Load()
}

// Open is the number of connections accepted and not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Accept returns the next connection within the limits; those past them
// are closed and counted, and Accept waits for the next one.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := hostOf(c.RemoteAddr())
		if l.admit(addr) {
			return &conn{Conn: c, l: l, addr: addr}, nil
		}
		c.Close()
	}
}

func (l *Listener) admit(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.MaxConns > 0 && l.open >= l.lim.MaxConns {
		l.refusedTotal.Add(1)
		return false
	}
	perAddr := l.lim.MaxConnsPerAddr > 0 && !(l.lim.ExemptLoopback && isLoopback(addr))
	if perAddr && l.byAddr[addr] >= l.lim.MaxConnsPerAddr {
		l.refusedPerAddr.Add(1)
		return false
	}
	l.open++
	l.byAddr[addr]++
	return true
}

func (l *Listener) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func isLoopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

// conn gives its place back once, on its first Close.
type conn struct {
	net.Conn
	l    *Listener
	addr string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}

// BodyDeadline wraps h so that a request's body must arrive within d of
// the moment its headers were read: past it the connection's reads fail,
// the handler's read of the body ends with an error, and the connection
// is closed. It holds as well for the body net/http reads after a handler
// that did not read it (a refusal such as a 401: net/http drains up to
// 256 KiB so that the connection can be reused). Once the handler has read
// the body to its end the deadline is lifted (net/http keeps reading the
// connection to notice a client that goes away, and a deadline there
// would cancel a slow handler's context). Requests without a body (GET,
// a WebSocket's or an event stream's request) get no deadline, so
// long-lived streams are not cut; net/http resets the deadline before it
// reads the next request's headers (read_header_timeout applies there).
// d <= 0: no deadline.
func BodyDeadline(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(d)) != nil {
			// The connection takes no deadline (a test's recorder):
			// serve without one.
			h.ServeHTTP(w, r)
			return
		}
		r2 := r.WithContext(r.Context()) // a shallow copy: net/http drains the original body
		r2.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		h.ServeHTTP(w, r2)
	})
}

// deadlineBody lifts the read deadline once the body has been read to its
// end.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
