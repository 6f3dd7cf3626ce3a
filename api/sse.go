package api

import (
	"bufio"
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
		sink := &sseSink{w: bufio.NewWriterSize(w, 16<<10), rc: rc, timeout: h.Config().WriteTimeout,
			redact: role != RoleAdmin && table == fleet.TablePositions}
		if err := sink.flush(); err != nil {
			return
		}
		err = h.Stream(r.Context(), sub, from, sink)
		var ce *hub.ClosedError
		if errors.As(err, &ce) {
			fmt.Fprintf(sink.w, "event: close\ndata: {\"reason\":%q}\n\n", ce.Reason)
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
	w       *bufio.Writer
	rc      *http.ResponseController
	timeout time.Duration
	redact  bool // positions for a non-admin: no legacy device id (fleet.StripLegacyDevice)
}

// flush writes what is buffered within the write timeout: a subscriber
// that stops reading is cut off, never waited for.
func (s *sseSink) flush() error {
	s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if err := s.w.Flush(); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sseSink) Snapshot(lsn uint64, rows []hub.Row, first, last, resync bool) error {
	if first && resync {
		fmt.Fprintf(s.w, "event: resync\ndata: {\"lsn\":%d}\n\n", lsn)
	}
	for i := range rows {
		s.w.WriteString("event: put\ndata: ")
		row := rows[i]
		if s.redact {
			row.Value = fleet.StripLegacyDevice(row.Value)
		}
		s.w.Write(row.AppendJSON(nil))
		s.w.WriteString("\n\n")
	}
	if last {
		fmt.Fprintf(s.w, "event: snapshot\nid: %d\ndata: {\"lsn\":%d,\"resync\":%t}\n\n", lsn, lsn, resync)
	}
	return s.flush()
}

func (s *sseSink) Change(ev *hub.Event) error {
	s.w.WriteString("id: ")
	s.w.WriteString(strconv.FormatUint(ev.LSN, 10))
	s.w.WriteString("\nevent: ")
	s.w.WriteString(ev.OpName())
	s.w.WriteString("\ndata: ")
	s.w.Write(redactedData(ev, s.redact))
	_, err := s.w.WriteString("\n\n")
	return err
}

func (s *sseSink) Flush() error { return s.flush() }

func (s *sseSink) Heartbeat() error {
	s.w.WriteString(": ping\n\n")
	return s.flush()
}
