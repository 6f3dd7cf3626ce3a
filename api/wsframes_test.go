package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/engine"
	"routehound/hub"
)

// wsPair is a server-side wsConn and a real client over loopback.
func wsPair(t *testing.T) (*wsConn, *websocket.Conn) {
	t.Helper()
	conns := make(chan *wsConn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &wsHijacker{ResponseWriter: w, timeout: 5 * time.Second}
		c, err := websocket.Accept(hj, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		conns <- &wsConn{c: c, out: hj.out, ctx: context.Background(), writeTimeout: 5 * time.Second}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cl.SetReadLimit(8 << 20)
	wc := <-conns
	t.Cleanup(func() { wc.c.CloseNow(); cl.CloseNow() })
	return wc, cl
}

// The sink encodes its frames itself: their headers are right at every
// length class (7-bit, 16-bit, 64-bit payload lengths and the bounds
// between them), with and without batch, as a real client reads them.
func TestWSSinkFrameLengths(t *testing.T) {
	// The value's length that puts a change frame's payload at n bytes.
	ev := func(lsn uint64, valueLen int) *hub.Event {
		v := `"` + strings.Repeat("x", max(0, valueLen-2)) + `"`
		return &hub.Event{LSN: lsn, Table: "t", Key: "k", Op: engine.OpPut, Value: []byte(v), Version: 1}
	}
	base := len(`{"type":"change","table":"t","op":"put","key":"k","value":,"version":1,"lsn":1}`)
	for _, batch := range []bool{false, true} {
		wc, cl := wsPair(t)
		sink := &wsSink{wc: wc, table: "t", batch: batch}
		var want []uint64
		lsn := uint64(0)
		for _, n := range []int{2, 125, 126, 127, 65535, 65536, 70000, 200000} {
			lsn++
			if err := sink.Change(ev(lsn, max(2, n-base))); err != nil {
				t.Fatal(err)
			}
			want = append(want, lsn)
			if err := sink.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		// A burst: several changes in one write (several frames without batch).
		for range 5 {
			lsn++
			sink.Change(ev(lsn, 10))
			want = append(want, lsn)
		}
		if err := sink.Flush(); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for len(got) < len(want) {
			typ, data, err := cl.Read(ctx)
			if err != nil || typ != websocket.MessageText {
				t.Fatalf("batch %v: after %v: %v %v", batch, got, typ, err)
			}
			var m struct {
				Type    string `json:"type"`
				LSN     uint64 `json:"lsn"`
				Changes []struct {
					LSN uint64 `json:"lsn"`
				} `json:"changes"`
			}
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("batch %v: a %d-byte message is not JSON: %v", batch, len(data), err)
			}
			switch {
			case !batch && m.Type == "change":
				got = append(got, m.LSN)
			case batch && m.Type == "changes":
				for _, c := range m.Changes {
					got = append(got, c.LSN)
				}
			default:
				t.Fatalf("batch %v: message %.80s", batch, data)
			}
		}
		cancel()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("batch %v: got %v, want %v", batch, got, want)
		}
	}
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		h := appendFrameHeader(nil, n)
		var length int
		switch h[1] {
		case 126:
			length = int(binary.BigEndian.Uint16(h[2:]))
		case 127:
			length = int(binary.BigEndian.Uint64(h[2:]))
		default:
			length = int(h[1])
		}
		if h[0] != 0x81 || length != n || (n < 126) != (len(h) == 2) {
			t.Fatalf("header of %d bytes: % x", n, h)
		}
	}
}

// Change frames (the sink's own) and messages through the library (acks,
// errors: sendRaw, from the reader goroutine) share the socket: each
// leaves whole, never inside the other, however they race.
func TestWSSinkFramesAndLibraryMessagesInterleave(t *testing.T) {
	wc, cl := wsPair(t)
	pause := func() { time.Sleep(20 * time.Microsecond) } // widen the window between a message's pieces
	wsOutHeldPiece.Store(&pause)
	defer wsOutHeldPiece.Store(nil)
	sink := &wsSink{wc: wc, table: "t", batch: true}
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			// Big enough that the library hands its frame to wsOut in pieces.
			sink.Change(&hub.Event{LSN: uint64(i + 1), Table: "t", Key: "k", Op: engine.OpPut,
				Value: []byte(`"` + strings.Repeat("c", 300) + `"`), Version: 1})
			if err := sink.Flush(); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			if err := wc.send(map[string]any{"type": "ack", "id": fmt.Sprint(i), "pad": strings.Repeat("a", 300)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		cl.CloseNow()
		wc.c.CloseNow()
		wg.Wait() // the writers fail too now; nothing logs after the test
		t.Fatalf(format, args...)
	}
	changes, acks := 0, 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for changes < n || acks < n {
		_, data, err := cl.Read(ctx)
		if err != nil {
			fail("after %d changes and %d acks: %v", changes, acks, err)
		}
		var m struct {
			Type    string            `json:"type"`
			ID      string            `json:"id"`
			Changes []json.RawMessage `json:"changes"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			fail("message %.100q is not JSON: %v", data, err)
		}
		switch m.Type {
		case "changes":
			changes += len(m.Changes)
		case "ack":
			if m.ID != fmt.Sprint(acks) {
				fail("ack %s after %d acks", m.ID, acks)
			}
			acks++
		default:
			fail("message %.100q", data)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Once this server closes the connection, or the library has written a
// close frame, no change frame follows: the bytes on the wire end with
// the close frame.
func TestWSNoChangeFrameAfterClose(t *testing.T) {
	for _, how := range []string{"wsConn.close", "the library's close"} {
		conns := make(chan *wsConn, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hj := &wsHijacker{ResponseWriter: w, timeout: 5 * time.Second}
			c, err := websocket.Accept(hj, r, nil)
			if err != nil {
				t.Error(err)
				return
			}
			conns <- &wsConn{c: c, out: hj.out, ctx: context.Background(), writeTimeout: 5 * time.Second}
		}))
		raw, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		var wire bytes.Buffer
		read := make(chan error, 1)
		go func() {
			_, err := io.Copy(&wire, raw)
			read <- err
		}()
		wc := <-conns
		sink := &wsSink{wc: wc, table: "t", batch: false}
		change := func(lsn uint64) error {
			sink.Change(&hub.Event{LSN: lsn, Table: "t", Key: "k", Op: engine.OpPut, Value: []byte("1"), Version: 1})
			return sink.Flush()
		}
		if err := change(1); err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			if how == "wsConn.close" {
				wc.close(websocket.StatusGoingAway, "bye")
			} else {
				wc.c.Close(websocket.StatusGoingAway, "bye") // waits for the peer's close, which never comes
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for {
			wc.out.mu.Lock()
			sent := wc.out.closeSent
			wc.out.mu.Unlock()
			if sent || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		for lsn := uint64(2); lsn < 5; lsn++ {
			if err := change(lsn); err == nil {
				t.Fatalf("%s: a change frame was written after the close frame", how)
			}
		}
		wc.c.CloseNow()
		<-closed
		<-read
		raw.Close()
		srv.Close()
		// The wire: the 101 answer, one text frame, then the close frame, last.
		b := wire.Bytes()
		i := bytes.Index(b, []byte("\r\n\r\n"))
		if i < 0 {
			t.Fatalf("%s: no handshake answer in %q", how, b)
		}
		b = b[i+4:]
		var ops []byte
		for len(b) >= 2 {
			n := int(b[1] & 0x7f)
			if n >= 126 || len(b) < 2+n {
				t.Fatalf("%s: unexpected frame % x", how, b)
			}
			ops = append(ops, b[0])
			b = b[2+n:]
		}
		if string(ops) != "\x81\x88" || len(b) != 0 {
			t.Fatalf("%s: frames % x (rest % x); want one text frame, then the close frame, last", how, ops, b)
		}
	}
}
