package naive

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"routehound/fleet"
)

// subscribe counts a subscriber of table against the limit.
func (s *Server) subscribe(table string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[table] >= s.cfg.MaxSubscribersPerTable {
		return false
	}
	s.subs[table]++
	return true
}

func (s *Server) unsubscribe(table string) {
	s.mu.Lock()
	s.subs[table]--
	s.mu.Unlock()
}

// snapshot reads a table's rows and the LSN they are at. The naive design
// has no snapshot isolation across the two queries: a write between them
// is sent twice at worst (its change follows), never missed.
func (s *Server) snapshot(ctx context.Context, table string) ([]row, uint64, error) {
	lsn, err := s.st.lastLSN(ctx)
	if err != nil {
		return nil, 0, err
	}
	var all []row
	after := ""
	for {
		rows, more, err := s.st.rows(ctx, table, after, 1000)
		if err != nil {
			return nil, 0, err
		}
		all = append(all, rows...)
		if !more {
			return all, lsn, nil
		}
		after = rows[len(rows)-1].Key
	}
}

// poll calls emit with the table's log records after from, every poll
// interval, until ctx ends or emit fails.
func (s *Server) poll(ctx context.Context, table string, from uint64, emit func([]logRecord) error) error {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return nil
		case <-t.C:
		}
		for {
			recs, err := s.st.log(ctx, from, 1000, table)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				break
			}
			if err := emit(recs); err != nil {
				return err
			}
			from = recs[len(recs)-1].LSN
			if len(recs) < 1000 {
				break
			}
		}
	}
}

func (s *Server) sse(w http.ResponseWriter, r *http.Request) {
	table := r.PathValue("table")
	from := r.URL.Query().Get("from")
	if from == "" {
		from = r.Header.Get("Last-Event-ID")
	}
	if !s.subscribe(table) {
		fail(w, http.StatusTooManyRequests, "too_many_subscribers", "this table has the maximum number of subscribers")
		return
	}
	defer s.unsubscribe(table)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 16<<10)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	var after uint64
	if from != "" {
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil {
			return
		}
		after = n
	} else {
		rows, lsn, err := s.snapshot(r.Context(), table)
		if err != nil {
			return
		}
		for _, rw := range rows {
			b, _ := json.Marshal(rw)
			fmt.Fprintf(bw, "event: put\ndata: %s\n\n", b)
		}
		fmt.Fprintf(bw, "event: snapshot\nid: %d\ndata: {\"lsn\":%d,\"resync\":false}\n\n", lsn, lsn)
		after = lsn
	}
	if flush() != nil {
		return
	}
	s.poll(r.Context(), table, after, func(recs []logRecord) error {
		for _, rec := range recs {
			b, _ := json.Marshal(row{Key: rec.Key, Value: rec.Value, Version: rec.Version, LSN: rec.LSN})
			fmt.Fprintf(bw, "id: %d\nevent: %s\ndata: %s\n\n", rec.LSN, rec.Op, b)
		}
		return flush()
	})
}

// ws serves one subscription per socket: {"op":"subscribe","table"[,"from"]}
// answered by one snapshot message and then changes, the same frames as
// RouteHound's /v1/ws.
func (s *Server) ws(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	var m struct {
		Op    string  `json:"op"`
		Table string  `json:"table"`
		From  *uint64 `json:"from"`
	}
	_, data, err := c.Read(r.Context())
	if err != nil {
		return
	}
	send := func(v any) error {
		b, _ := json.Marshal(v)
		wctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, b)
	}
	if json.Unmarshal(data, &m) != nil || m.Op != "subscribe" || m.Table == "" {
		send(wsError{Type: "error", Code: "bad_request", Message: "send {\"op\":\"subscribe\",\"table\":...}"})
		return
	}
	if !s.subscribe(m.Table) {
		send(wsError{Type: "error", Code: "too_many_subscribers", Message: "this table has the maximum number of subscribers"})
		return
	}
	defer s.unsubscribe(m.Table)
	var after uint64
	if m.From != nil {
		after = *m.From
	} else {
		rows, lsn, err := s.snapshot(r.Context(), m.Table)
		if err != nil {
			return
		}
		if rows == nil {
			rows = []row{}
		}
		if send(wsSnapshot{Type: "snapshot", Table: m.Table, LSN: lsn, Rows: rows, Last: true}) != nil {
			return
		}
		after = lsn
	}
	go func() { // the rest of the client's messages are ignored; a close ends the stream
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				c.CloseNow()
				return
			}
		}
	}()
	s.poll(r.Context(), m.Table, after, func(recs []logRecord) error {
		for _, rec := range recs {
			if err := send(wsChange{Type: "change", Table: m.Table, Op: rec.Op, Key: rec.Key,
				Value: rec.Value, Version: rec.Version, LSN: rec.LSN}); err != nil {
				return err
			}
		}
		return nil
	})
}

// The frames, as structs so that "type" comes first as in RouteHound's.
type wsError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type wsSnapshot struct {
	Type   string `json:"type"`
	Table  string `json:"table"`
	LSN    uint64 `json:"lsn"`
	Rows   []row  `json:"rows"`
	Last   bool   `json:"last"`
	Resync bool   `json:"resync"`
}

type wsChange struct {
	Type    string  `json:"type"`
	Table   string  `json:"table"`
	Op      string  `json:"op"`
	Key     string  `json:"key"`
	Value   rawJSON `json:"value"`
	Version uint64  `json:"version"`
	LSN     uint64  `json:"lsn"`
}

// driverStream serves GET /v1/drivers/stream like RouteHound's: frames
// {"driver","points":[…]} answered in order by {"driver","accepted",
// "duplicates","durable_seq"} once every point is committed (here the
// answer is durable already, so no later durable frames are needed), or by
// {"type":"error","code","message","driver"}.
func (s *Server) driverStream(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(s.cfg.MaxBodyBytes)
	ctx := r.Context()
	send := func(v any) error {
		b, _ := json.Marshal(v)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, b)
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		var f struct {
			Driver string          `json:"driver"`
			Points json.RawMessage `json:"points"`
		}
		if err := json.Unmarshal(data, &f); err != nil || f.Driver == "" || len(f.Points) == 0 {
			if send(wsError{Type: "error", Code: "bad_json", Message: "send {\"driver\",\"points\"}"}) != nil {
				return
			}
			continue
		}
		pts, err := fleet.DecodePoints(f.Points, 16384)
		if err != nil {
			if send(wsError{Type: "error", Code: "bad_json", Message: err.Error()}) != nil {
				return
			}
			continue
		}
		ans, err := s.storePoints(ctx, f.Driver, pts)
		if err != nil {
			s.log.Error("naive: driver stream", "driver", f.Driver, "err", err)
			send(wsError{Type: "error", Code: "internal", Message: "internal error"})
			return
		}
		ans.Driver = f.Driver
		if send(ans) != nil {
			return
		}
	}
}
