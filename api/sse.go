package api

import (
	"errors"
	"fmt"
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
// allow(dashboard, admin); a secret table (fleet.IsSecret) is admin's only.
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
		defer sub.Close()
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		sink := &sseSink{w: w, rc: rc, timeout: h.Config().WriteTimeout,
			redact: role != RoleAdmin && table == fleet.TablePositions}
		if err := sink.flush(); err != nil {
			return
		}
		err = h.Stream(r.Context(), sub, from, sink)
		var ce *hub.ClosedError
		if errors.As(err, &ce) {
			sink.buf = fmt.Appendf(sink.buf, "event: close\ndata: {\"reason\":%q}\n\n", ce.Reason)
			sink.flush()
		}
	}
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

// sseSink carries a hub stream as Server-Sent Events.
type sseSink struct {
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
	s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	_, err := s.w.Write(s.buf)
	if cap(s.buf) > keepFrameBuf {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
	if err != nil {
		return err
	}
	return s.rc.Flush()
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
	if last {
		s.buf = fmt.Appendf(s.buf, "event: snapshot\nid: %d\ndata: {\"lsn\":%d,\"resync\":%t}\n\n", lsn, lsn, resync)
	}
	return s.flush()
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
