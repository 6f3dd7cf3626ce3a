package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/engine"
	"routehound/hub"
)

// BenchmarkWSSinkBurst is the WebSocket sink's hot path alone: bursts of 64
// changes (shared events, encoded once) into one subscriber's connection,
// with change frames and with a changes frame, each burst flushed in one
// write over loopback to a raw client that reads the bytes and discards
// them (it allocates nothing per message). allocs/op is per burst of 64.
func BenchmarkWSSinkBurst(b *testing.B) {
	const burst = 64
	evs := make([]*hub.Event, burst)
	for i := range evs {
		evs[i] = &hub.Event{LSN: uint64(i + 1), Table: "t", Key: fmt.Sprint("k", i), Op: engine.OpPut,
			Value: []byte(`{"payload":"0123456789abcdef0123456789abcdef"}`), Version: 1}
		evs[i].Data() // encoded once, as the first transport to need it does
	}
	for _, batch := range []bool{false, true} {
		b.Run(map[bool]string{false: "change", true: "changes"}[batch], func(b *testing.B) {
			wc := rawWSConn(b)
			sink := &wsSink{wc: wc, table: "t", batch: batch}
			// One burst first: the sink's buffers reach their size.
			for _, ev := range evs {
				sink.Change(ev)
			}
			if err := sink.Flush(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for _, ev := range evs {
					if err := sink.Change(ev); err != nil {
						b.Fatal(err)
					}
				}
				if err := sink.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*burst)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}

// rawWSConn is the server side of a WebSocket over loopback whose client
// is raw: the handshake by hand, then every byte read and discarded, so
// that the client allocates nothing per message. Both end with tb.
func rawWSConn(tb testing.TB) *wsConn {
	tb.Helper()
	conns := make(chan *wsConn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &wsHijacker{ResponseWriter: w, timeout: 5 * time.Second}
		c, err := websocket.Accept(hj, r, nil)
		if err != nil {
			tb.Error(err)
			return
		}
		conns <- &wsConn{c: c, out: hj.out, ctx: context.Background(), writeTimeout: 5 * time.Second}
	}))
	tb.Cleanup(srv.Close)
	raw, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(raw)
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("handshake: %v %v", res, err)
	}
	go io.Copy(io.Discard, br)
	wc := <-conns
	tb.Cleanup(func() { wc.c.CloseNow() })
	return wc
}

// TestWSSinkFreesBuffersWhenIdle: the sink keeps its frame buffer from
// burst to burst, and frees it at a heartbeat that follows a heartbeat
// interval without changes. The frames leave from it whole: the
// connection holds no second copy.
func TestWSSinkFreesBuffersWhenIdle(t *testing.T) {
	for _, batch := range []bool{false, true} {
		wc := rawWSConn(t)
		sink := &wsSink{wc: wc, table: "t", batch: batch}
		ev := &hub.Event{LSN: 1, Table: "t", Key: "k", Op: engine.OpPut, Value: []byte(`{"a":1}`), Version: 1}
		if err := sink.Change(ev); err != nil {
			t.Fatal(err)
		}
		if err := sink.Flush(); err != nil {
			t.Fatal(err)
		}
		held := func() (bool, bool) {
			wc.out.mu.Lock()
			defer wc.out.mu.Unlock()
			return sink.buf != nil, wc.out.buf != nil
		}
		if s, o := held(); !s || o {
			t.Fatalf("batch %v: after a burst the sink holds its buffer %v (want kept for the next), the connection one %v (want none)", batch, s, o)
		}
		sink.Heartbeat() // a change since the last heartbeat: kept
		if s, o := held(); !s || o {
			t.Fatalf("batch %v: a heartbeat right after a burst freed the buffers (sink %v, connection %v)", batch, s, o)
		}
		sink.Heartbeat() // an interval without changes: freed
		if s, o := held(); s || o {
			t.Fatalf("batch %v: idle for a heartbeat interval, the sink still holds its buffer %v, the connection %v", batch, s, o)
		}
	}
}
