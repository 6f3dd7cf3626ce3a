//go:build linux

package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestDriverStreamSurvivesKill streams points over /v1/drivers/stream, kills
// the server mid-stream with SIGKILL, reconnects and resends everything
// above the last durable_seq received: every point is in the log exactly
// once.
func TestDriverStreamSurvivesKill(t *testing.T) {
	h := newHarness(t, "")
	const driver = "stream-drv"
	var next uint64 = 1 // next seq to send
	var durable uint64  // highest durable_seq received
	var sentTop uint64  // highest seq ever sent
	for round := 0; round < 3; round++ {
		h.start()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, _, err := websocket.Dial(ctx, strings.Replace(h.base, "http", "ws", 1)+"/v1/drivers/stream",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + h.tokens["driver"]}}})
		if err != nil {
			cancel()
			t.Fatalf("round %d: dial: %v", round, err)
		}
		// Resend everything above durable_seq: the client's side of the contract.
		next = durable + 1
		frames := 0
		readErr := make(chan error, 1)
		acks := make(chan uint64, 1024)
		go func() {
			for {
				_, data, err := c.Read(ctx)
				if err != nil {
					readErr <- err
					return
				}
				var m struct {
					Type       string  `json:"type"`
					Code       string  `json:"code"`
					DurableSeq *uint64 `json:"durable_seq"`
				}
				if err := json.Unmarshal(data, &m); err != nil || m.Type == "error" {
					readErr <- fmt.Errorf("frame %s: %v", data, err)
					return
				}
				if m.DurableSeq != nil {
					acks <- *m.DurableSeq
				}
			}
		}()
		killAt := time.Now().Add(time.Duration(300+round*150) * time.Millisecond)
	send:
		for time.Now().Before(killAt) {
			var pts []string
			for i := 0; i < 10; i++ {
				pts = append(pts, fmt.Sprintf(`{"seq":%d,"lat":52.5,"lng":13.4,"ts":%q}`, next, time.Now().UTC().Format(time.RFC3339)))
				sentTop = max(sentTop, next)
				next++
			}
			frame := fmt.Sprintf(`{"driver":%q,"points":[%s]}`, driver, strings.Join(pts, ","))
			if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
				t.Fatalf("round %d: write: %v", round, err)
			}
			frames++
			for drained := false; !drained; {
				select {
				case d := <-acks:
					if d > sentTop {
						t.Fatalf("durable_seq %d above the highest seq sent %d", d, sentTop)
					}
					durable = max(durable, d)
				case err := <-readErr:
					t.Fatalf("round %d: %v", round, err)
					break send
				default:
					drained = true
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		h.kill() // mid-stream: frames may be in flight, points accepted but not yet durable
		for drained := false; !drained; {
			select {
			case d := <-acks:
				durable = max(durable, d)
			default:
				drained = true
			}
		}
		c.CloseNow()
		cancel()
		t.Logf("round %d: %d frames, durable_seq %d of %d sent", round, frames, durable, sentTop)
	}
	// Last round: resend the tail and let it all become durable.
	h.start()
	body := "["
	for s := durable + 1; s <= sentTop; s++ {
		if s > durable+1 {
			body += ","
		}
		body += fmt.Sprintf(`{"seq":%d,"lat":52.5,"lng":13.4,"ts":%q}`, s, time.Now().UTC().Format(time.RFC3339))
	}
	body += "]"
	if sentTop > durable {
		r, err := h.do(context.Background(), http.MethodPost, "/v1/drivers/"+driver+"/locations", "driver", "", json.RawMessage(body))
		if err != nil || r.status != http.StatusAccepted {
			t.Fatalf("resend of %d..%d: %v %v", durable+1, sentTop, r, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	var recs []logRecord
	for {
		recs = readLog(t, h)
		got := 0
		for _, r := range recs {
			if r.Table == "positions" && r.Key == driver {
				got++
			}
		}
		if got >= int(sentTop) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := map[uint64]int{}
	for _, r := range recs {
		if r.Table != "positions" || r.Key != driver {
			continue
		}
		var p struct {
			Seq uint64 `json:"seq"`
		}
		json.Unmarshal(r.Value, &p)
		seen[p.Seq]++
	}
	for s := uint64(1); s <= sentTop; s++ {
		if seen[s] != 1 {
			t.Errorf("seq %d is in the log %d times, want once", s, seen[s])
		}
	}
	if len(seen) != int(sentTop) {
		t.Errorf("log holds %d distinct seqs, %d were sent", len(seen), sentTop)
	}
	h.stop()
}
