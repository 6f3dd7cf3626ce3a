package api

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The WebSocket's buffers. net/http gives a hijacked connection its 4 KiB
// reader and 4 KiB writer, which coder/websocket keeps for the
// connection's life: 8 KiB of an idle subscriber's memory. wsHijacker
// hands coder/websocket small ones instead, over wsOut, which holds what
// is written during a burst and sends it in one write.
const (
	wsReadBuf = 512 // client messages are small; a larger payload is read past the buffer
	// wsWriteBuf fits a control frame (2 + 125 bytes) whole: a pong is
	// one write. Data frames pass through it into wsOut.
	wsWriteBuf = 128
)

// wsHijacker wraps the handshake's ResponseWriter: coder/websocket's
// Accept hijacks through it and gets small buffers over out.
type wsHijacker struct {
	http.ResponseWriter
	timeout time.Duration
	out     *wsOut // set by Hijack
}

func (h *wsHijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *wsHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("api: hijack the WebSocket connection: %w", err)
	}
	if n := brw.Writer.Buffered(); n > 0 {
		// Accept has had the 101 answer flushed; nothing may stay behind.
		if err := brw.Writer.Flush(); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("api: flush the WebSocket handshake: %w", err)
		}
	}
	br := bufio.NewReaderSize(conn, wsReadBuf)
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its handshake (its first
		// frame) are in net/http's reader. They must be in the new
		// reader's buffer, not behind it: Accept takes what is buffered
		// and then reads the socket itself.
		early, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(wsReadBuf, n))
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("api: carry the WebSocket's first bytes over: %w", err)
		}
	}
	h.out = &wsOut{conn: conn, timeout: h.timeout}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(h.out, wsWriteBuf)), nil
}

// wsOut is the socket under coder/websocket's writer. Between hold and
// release, what the connection writes (frames, from any goroutine: the
// library serializes them) is appended to buf, and release sends it in one
// write: a burst of messages is one syscall. Outside a hold, writes go
// straight to the socket. writeFrames takes complete frames encoded
// outside the library (wsSink's changes). buf is allocated only while
// something is held and kept between bursts only while small.
//
// Every write to the socket sets its own deadline (the write timeout)
// first, so none is ever cleared: one timer change per write.
type wsOut struct {
	mu        sync.Mutex
	holds     int32 // nested holds; buf is sent when the last one is released
	closeSent bool  // a close frame is written (or this server is about to write one): no change frame may follow
	conn      net.Conn
	timeout   time.Duration
	buf       []byte
	failed    error
}

// wsOutHeldPiece, when set (tests), runs after each piece of a held
// message is taken, outside the lock: a window for anything that would
// write between the pieces of a message.
var wsOutHeldPiece atomic.Pointer[func()]

// closing refuses change frames from now on: this server is closing the
// connection.
func (o *wsOut) closing() {
	o.mu.Lock()
	o.closeSent = true
	o.mu.Unlock()
}

func (o *wsOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed != nil {
		return 0, o.failed
	}
	if o.holds > 0 {
		o.buf = append(o.buf, p...)
		if f := wsOutHeldPiece.Load(); f != nil {
			o.mu.Unlock()
			(*f)()
			o.mu.Lock()
		}
		return len(p), nil
	}
	// Outside a hold the library writes only control frames, each whole
	// in one write (at most 2 + 125 bytes, within its 128-byte buffer):
	// a close frame is recognised exactly.
	if len(p) >= 2 && p[0] == 0x88 && int(p[1]) == len(p)-2 {
		o.closeSent = true
	}
	return o.write(p)
}

// write writes p to the socket within the write timeout; a failed write
// closes the socket (a frame may have gone out in part, and nothing may
// follow it). o.mu is held.
func (o *wsOut) write(p []byte) (int, error) {
	o.conn.SetWriteDeadline(time.Now().Add(o.timeout))
	n, err := o.conn.Write(p)
	if err != nil {
		o.failed = fmt.Errorf("api: WebSocket write: %w", err)
		o.conn.Close()
		return n, o.failed
	}
	return n, nil
}

// writeFrames writes complete frames in one write, or, during a hold
// (which wsConn.msgMu rules out between whole messages), after what is
// held.
func (o *wsOut) writeFrames(b []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.failed != nil:
		return o.failed
	case o.closeSent:
		return errWSClosing
	case o.holds > 0:
		o.buf = append(o.buf, b...)
		return nil
	}
	_, err := o.write(b)
	return err
}

// hold starts holding writes; each hold needs its release.
func (o *wsOut) hold() {
	o.mu.Lock()
	o.holds++
	o.mu.Unlock()
}

// release ends a hold; the last one writes what was held, within the
// write timeout.
func (o *wsOut) release() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.holds--; o.holds > 0 || len(o.buf) == 0 {
		return o.failed
	}
	if o.failed == nil {
		o.write(o.buf)
	}
	if cap(o.buf) > keepFrameBuf {
		o.buf = nil
	} else {
		o.buf = o.buf[:0]
	}
	return o.failed
}

// trim frees the buffer kept between bursts, unless a hold is open.
func (o *wsOut) trim() {
	o.mu.Lock()
	if o.holds == 0 {
		o.buf = nil
	}
	o.mu.Unlock()
}
