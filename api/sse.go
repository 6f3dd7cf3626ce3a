package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"routehound/fleet"
	"routehound/hub"
)

// sseHandler serves GET /v1/tables/{table}/events: the table's changes as
// Server-Sent Events. `id:` is the LSN; Last-Event-ID or ?from=LSN resumes.
//
//	event: put | delete          id: LSN   data: {"key","value","version","lsn"}
//	event: resync                          data: {"lsn"}   (drop what you hold; rows follow)
//	event: put (snapshot rows, no id)      data: {"key","value","version","lsn"}
//	event: snapshot              id: LSN   data: {"lsn","resync"}   (end of the snapshot)
//	event: close                           data: {"reason"}
//
// Snapshot rows carry no id, so a client cut off inside a snapshot resumes
// from before it and gets it again. The hub subscribes and streams; this
// handler is the transport (hub.Sink). Mounted by MountHub behind
// allow(dashboard, admin), and by MountSession for the dashboard's
// sessions (the stream ends with the session); a secret table
// (fleet.IsSecret) is admin's only.
//
// Over HTTP/1.1 the connection is hijacked once the subscription is
// taken, as the WebSocket's is: net/http's goroutine for the connection,
// its background reader, its request and its 4 KiB buffers are given
// back, and an idle subscriber costs two small goroutines (the stream,
// and a reader that notices the client leave) and no buffer (sseSink
// allocates one per burst). The answer has no chunking and ends with the
// connection (Connection: close). HTTP/2 streams on the handler's
// goroutine, as before.
func (s *Server) sseHandler(h *hub.Hub) func(http.ResponseWriter, *http.Request, Role) {
	return func(w http.ResponseWriter, r *http.Request, role Role) {
		table := r.PathValue("table")
		from, err := fromParam(r)
		if err == nil && fleet.CheckName("table", table) == nil {
			err = checkRead(role, table) // a bad name is the hub's refusal, as before
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		sub, err := h.SubscribeFrom(r.RemoteAddr, table) // one client connection: hub.max_subscribers_per_conn
		if err != nil {
			s.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Accel-Buffering", "no")
		sink := &sseSink{timeout: h.Config().WriteTimeout, redact: role != RoleAdmin && table == fleet.TablePositions}
		if r.ProtoMajor == 1 {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				// Nothing was written through net/http's buffers, which are
				// dropped; bytes the client sent after its request are
				// ignored (the connection ends with the stream).
				sink.conn = conn
				sink.buf = append(sink.buf, "HTTP/1.1 200 OK\r\n"...)
				hb := bytes.NewBuffer(sink.buf)
				w.Header().Write(hb)
				sink.buf = append(hb.Bytes(), "Connection: close\r\n\r\n"...)
				go streamSSE(h, sub, from, sink, sessionContext(r))
				return
			}
		}
		defer sub.Close()
		sink.w, sink.rc = w, http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		if err := sink.flush(); err != nil {
			return
		}
		ctx := r.Context()
		if sctx := sessionContext(r); sctx != nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			defer context.AfterFunc(sctx, cancel)()
		}
		sink.stream(ctx, h, sub, from)
	}
}

// streamSSE runs a hijacked connection's stream (sink.conn) on a goroutine
// of its own, with a second one that reads the connection: the client's
// leaving (EOF, reset) ends the stream at once, not at the next write.
// sessionCtx, when set, ends the stream too.
func streamSSE(h *hub.Hub, sub *hub.Sub, from *uint64, sink *sseSink, sessionCtx context.Context) {
	defer sink.conn.Close()
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if sessionCtx != nil {
		defer context.AfterFunc(sessionCtx, cancel)()
	}
	if err := sink.flush(); err != nil {
		return
	}
	sink.conn.SetReadDeadline(time.Time{}) // none a request's header or body read may have left
	go func(conn net.Conn) {
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				cancel() // the client left, or the stream ended and closed conn
				return
			}
		}
	}(sink.conn)
	sink.stream(ctx, h, sub, from)
}

// fromParam reads ?from= or Last-Event-ID: nil when neither is set.
func fromParam(r *http.Request) (*uint64, error) {
	v := r.URL.Query().Get("from")
	if v == "" {
		v = strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	}
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "bad_parameter", "from / Last-Event-ID must be an LSN, got %q", v)
	}
	return &n, nil
}

// stream runs the hub's stream into the sink until it ends; a stream the
// hub closes ends with a close event.
func (s *sseSink) stream(ctx context.Context, h *hub.Hub, sub *hub.Sub, from *uint64) {
	err := h.Stream(ctx, sub, from, s)
	var ce *hub.ClosedError
	if errors.As(err, &ce) {
		s.buf = fmt.Appendf(s.buf, "event: close\ndata: {\"reason\":%q}\n\n", ce.Reason)
		s.flush()
	}
}

// sseSink carries a hub stream as Server-Sent Events: on a hijacked
// HTTP/1.1 connection (conn), or through net/http (w, rc: HTTP/2).
type sseSink struct {
	conn    net.Conn
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	redact  bool // positions for a non-admin: no legacy device id (fleet.StripLegacyDevice)
	// buf holds the events encoded and not yet written: allocated on the
	// first burst, reused while small (keepFrameBuf), so that an idle
	// subscriber holds no 16 KiB writer and a busy one allocates nothing
	// per event.
	buf    []byte
	active bool // a change was sent since the last heartbeat
}

// flush writes what is buffered within the write timeout: a subscriber
// that stops reading is cut off, never waited for.
func (s *sseSink) flush() error {
	var err error
	if s.conn != nil {
		s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
		_, err = s.conn.Write(s.buf)
	} else {
		s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
		if _, err = s.w.Write(s.buf); err == nil {
			err = s.rc.Flush()
		}
	}
	if cap(s.buf) > keepFrameBuf {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
	return err
}

func (s *sseSink) Snapshot(lsn uint64, rows []hub.Row, first, last, resync bool) error {
	if first && resync {
		s.buf = fmt.Appendf(s.buf, "event: resync\ndata: {\"lsn\":%d}\n\n", lsn)
	}
	for i := range rows {
		s.buf = append(s.buf, "event: put\ndata: "...)
		row := rows[i]
		if s.redact {
			row.Value = fleet.StripLegacyDevice(row.Value)
		}
		s.buf = row.AppendJSON(s.buf)
		s.buf = append(s.buf, "\n\n"...)
	}
	if !last {
		return s.flush()
	}
	s.buf = fmt.Appendf(s.buf, "event: snapshot\nid: %d\ndata: {\"lsn\":%d,\"resync\":%t}\n\n", lsn, lsn, resync)
	err := s.flush()
	s.buf = nil // the snapshot's buffer: an idle subscriber keeps none; the next burst allocates
	return err
}

func (s *sseSink) Change(ev *hub.Event) error {
	s.active = true
	s.buf = append(s.buf, "id: "...)
	s.buf = strconv.AppendUint(s.buf, ev.LSN, 10)
	s.buf = append(s.buf, "\nevent: "...)
	s.buf = append(s.buf, ev.OpName()...)
	s.buf = append(s.buf, "\ndata: "...)
	s.buf = append(s.buf, redactedData(ev, s.redact)...)
	s.buf = append(s.buf, "\n\n"...)
	if len(s.buf) >= maxChangesFrame {
		return s.flush() // a long burst goes out in pieces of about 64 KiB
	}
	return nil
}

func (s *sseSink) Flush() error { return s.flush() }

// Heartbeat sends a comment; after a heartbeat interval without changes it
// also frees the buffer kept for the next burst.
func (s *sseSink) Heartbeat() error {
	s.buf = append(s.buf, ": ping\n\n"...)
	err := s.flush()
	if !s.active {
		s.buf = nil
	}
	s.active = false
	return err
}
