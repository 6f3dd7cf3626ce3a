package sim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// driverStream is a phone reporting over GET /v1/drivers/stream: one
// WebSocket, one frame {"driver","points":[…]} per report, answered in
// order by {"driver","accepted","duplicates","durable_seq"}; the server
// also pushes {"driver","durable_seq"} as points become durable. A reader
// goroutine owns the socket's reads and hands answers to the driver.
type driverStream struct {
	c       *websocket.Conn
	answers chan streamFrame // cap 1: one frame in flight per driver
	done    chan struct{}    // closed when the reader has stopped
}

// streamFrame is an answer or an error frame.
type streamFrame struct {
	Type       string  `json:"type"`
	Code       string  `json:"code"`
	Accepted   *uint64 `json:"accepted"`
	DurableSeq uint64  `json:"durable_seq"`
}

func dialStream(ctx context.Context, t Target, d *driverSim) (*driverStream, error) {
	u := "ws" + strings.TrimPrefix(t.URL, "http") + "/v1/drivers/stream"
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + t.Tokens["driver"]}}})
	if err != nil {
		return nil, err
	}
	s := &driverStream{c: c, answers: make(chan streamFrame, 1), done: make(chan struct{})}
	go s.read(d)
	return s, nil
}

// read runs until the socket fails or is closed: durable frames raise the
// driver's durable_seq; answers and errors go to the waiting send.
func (s *driverStream) read(d *driverSim) {
	defer close(s.done)
	defer close(s.answers)
	for {
		_, data, err := s.c.Read(context.Background())
		if err != nil {
			return
		}
		var f streamFrame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		d.seeDurable(f.DurableSeq)
		if f.Accepted != nil || f.Type == "error" {
			select {
			case s.answers <- f:
			default: // no send waits for it (it gave up): drop
			}
		}
	}
}

// close ends the socket and waits for the reader.
func (s *driverStream) close() {
	s.c.CloseNow()
	<-s.done
}

var errStreamClosed = errors.New("sim: driver stream closed")

// exchange sends one frame and waits (at most 10 s) for its answer.
func (s *driverStream) exchange(ctx context.Context, driver string, points []byte) (streamFrame, error) {
	frame := make([]byte, 0, len(points)+len(driver)+24)
	frame = append(frame, `{"driver":"`...)
	frame = append(frame, driver...)
	frame = append(frame, `","points":`...)
	frame = append(frame, points...)
	frame = append(frame, '}')
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.c.Write(wctx, websocket.MessageText, frame); err != nil {
		return streamFrame{}, err
	}
	select {
	case f, ok := <-s.answers:
		if !ok {
			return streamFrame{}, errStreamClosed
		}
		return f, nil
	case <-wctx.Done():
		return streamFrame{}, wctx.Err()
	}
}
