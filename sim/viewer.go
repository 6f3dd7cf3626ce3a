package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"routehound/fleet"
)

// viewerStats counts what the dashboard viewers saw beyond latencies.
type viewerStats struct {
	connected atomic.Int64          // subscriptions whose snapshot arrived
	events    atomic.Int64          // changes received
	connect   *recorder             // time from dialing to the end of the snapshot
	drivers   map[string]*driverSim // by name, read-only during the run
}

// timeField is the value field that carries a write's send time, per table.
// "" means a driver point (positions): see pointSent.
func timeField(table string) string {
	switch table {
	case fleet.TableAssignments:
		return "note"
	case fleet.TablePositions:
		return ""
	}
	return "ts"
}

// viewer is one dashboard viewer subscribed to one table until ctx ends,
// over SSE or WebSocket. A cut stream is resumed from the last LSN seen
// (counted as "disconnected"). A refusal at subscribe time (429
// too_many_subscribers) ends the viewer: it is expected at the limits.
func viewer(ctx context.Context, t Target, c *http.Client, table string, ws bool, rec *recorder, vs *viewerStats) {
	var from string
	for ctx.Err() == nil {
		rec.offered.Add(1)
		var err error
		var refused bool
		if ws {
			refused, err = viewWS(ctx, t, table, &from, rec, vs)
		} else {
			refused, err = viewSSE(ctx, t, c, table, &from, rec, vs)
		}
		if ctx.Err() != nil {
			return
		}
		if refused {
			return
		}
		if err != nil {
			rec.reject("disconnected")
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// change records one received change: latency from the write's send time
// to now. Assignments, loading events and table puts carry their send time
// in the value; a driver point carries when it was recorded, so its send
// time is looked up from the driver that sent it.
func change(data []byte, field string, rec *recorder, vs *viewerStats) {
	vs.events.Add(1)
	if vs.drivers != nil && field == "" {
		if t0, ok := pointSent(data, vs.drivers); ok {
			rec.observe(t0, time.Since(t0))
		}
		return
	}
	if t0, ok := sentAt(data, field); ok {
		rec.observe(t0, time.Since(t0))
	}
}

// pointSent finds the driver ("key") and "seq" of a positions change and
// the time that point was sent.
func pointSent(data []byte, drivers map[string]*driverSim) (time.Time, bool) {
	k := bytes.Index(data, []byte(`"key":"`))
	if k < 0 {
		return time.Time{}, false
	}
	rest := data[k+7:]
	e := bytes.IndexByte(rest, '"')
	if e < 0 {
		return time.Time{}, false
	}
	d, ok := drivers[string(rest[:e])]
	if !ok {
		return time.Time{}, false
	}
	i := bytes.Index(data, []byte(`"seq":`))
	if i < 0 {
		return time.Time{}, false
	}
	var seq uint64
	for _, c := range data[i+6:] {
		if c < '0' || c > '9' {
			break
		}
		seq = seq*10 + uint64(c-'0')
	}
	return d.sentAt(seq)
}

func viewSSE(ctx context.Context, t Target, c *http.Client, table string, from *string, rec *recorder, vs *viewerStats) (bool, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL+"/v1/tables/"+table+"/events", nil)
	if err != nil {
		return true, err
	}
	req.Header.Set("Authorization", "Bearer "+t.Tokens["dashboard"])
	if *from != "" {
		req.Header.Set("Last-Event-ID", *from)
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct {
			Code string `json:"code"`
		}
		json.Unmarshal(b, &e)
		if e.Code == "" {
			e.Code = "http_" + resp.Status[:3]
		}
		rec.reject(e.Code)
		return true, nil
	}
	rec.accepted.Add(1)
	field := timeField(table)
	rd := bufio.NewReaderSize(resp.Body, 64<<10)
	var id, event string
	var data []byte
	snapshotDone := *from != ""
	if snapshotDone {
		vs.connected.Add(1)
		vs.connect.ok(t0, time.Now())
	}
	for {
		line, err := rd.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return false, errors.New("sse: line longer than 64 KiB")
			}
			return false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0: // end of event
			switch {
			case event == "snapshot" && !snapshotDone:
				snapshotDone = true
				vs.connected.Add(1)
				vs.connect.ok(t0, time.Now())
			case event == "put" && id != "":
				change(data, field, rec, vs)
			case event == "close":
				return false, errors.New("sse: closed by the server: " + string(data))
			}
			if id != "" {
				*from = id
			}
			id, event, data = "", "", data[:0]
		case bytes.HasPrefix(line, []byte("id: ")):
			id = string(line[4:])
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[7:])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[6:]...)
		}
	}
}

func viewWS(ctx context.Context, t Target, table string, from *string, rec *recorder, vs *viewerStats) (bool, error) {
	t0 := time.Now()
	u := "ws" + strings.TrimPrefix(t.URL, "http") + "/v1/ws"
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + t.Tokens["dashboard"]}}})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			rec.reject("http_" + resp.Status[:3])
			return true, nil
		}
		return false, err
	}
	defer c.CloseNow()
	c.SetReadLimit(64 << 20)
	sub := map[string]any{"op": "subscribe", "table": table}
	if *from != "" {
		sub["from"] = json.Number(*from)
	}
	b, _ := json.Marshal(sub)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		return false, err
	}
	field := timeField(table)
	snapshotDone := false
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return false, err
		}
		switch {
		case bytes.HasPrefix(data, []byte(`{"type":"change"`)):
			if !snapshotDone { // resumed with from: no snapshot
				snapshotDone = true
				rec.accepted.Add(1)
				vs.connected.Add(1)
				vs.connect.ok(t0, time.Now())
			}
			change(data, field, rec, vs)
			if i := bytes.LastIndex(data, []byte(`"lsn":`)); i >= 0 {
				j := i + 6
				k := j
				for k < len(data) && data[k] >= '0' && data[k] <= '9' {
					k++
				}
				*from = string(data[j:k])
			}
		default: // snapshot, error, close: rare, decoded whole (the server may order keys any way)
			var m struct {
				Type   string `json:"type"`
				Code   string `json:"code"`
				Reason string `json:"reason"`
				LSN    uint64 `json:"lsn"`
				Last   bool   `json:"last"`
			}
			if json.Unmarshal(data, &m) != nil {
				continue
			}
			switch m.Type {
			case "snapshot":
				if m.Last && !snapshotDone {
					snapshotDone = true
					*from = strconv.FormatUint(m.LSN, 10)
					rec.accepted.Add(1)
					vs.connected.Add(1)
					vs.connect.ok(t0, time.Now())
				}
			case "error":
				rec.reject(m.Code)
				if !snapshotDone {
					return true, nil
				}
			case "close":
				return false, errors.New("ws: closed by the server: " + m.Reason)
			}
		}
	}
}
