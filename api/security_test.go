package api_test

// Tests of issue 18's hardening (part B): seq bounds and the admin's
// driver reset, request body deadlines and connection caps, byte-bounded
// pages and the per-value limit, and the driver stream's admission.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"routehound/api"
	"routehound/config"
	"routehound/internal/testkit"
)

const maxSeq = uint64(1) << 53

func seqPoint(seq uint64) string {
	return fmt.Sprintf(`{"seq":%d,"lat":52.5,"lng":13.4,"ts":"2026-11-23T08:00:00Z"}`, seq)
}

// TestSeqAboveMaxRefused: a seq above 2^53 is refused with invalid_field
// on the HTTP path (alone, in a batch, on the fast and the JSON path) and
// nothing of it is stored, so it cannot poison the driver's later points.
func TestSeqAboveMaxRefused(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		seqPoint(maxSeq + 1),
		seqPoint(18446744073709551615),
		"[" + seqPoint(1) + "," + seqPoint(maxSeq+1) + "]",
		"[ " + seqPoint(1) + " , " + strings.Replace(seqPoint(maxSeq+1), ":", ": ", 1) + " ]", // the JSON path
	} {
		r := f.do(t, "POST", "/v1/drivers/van-9/locations", tok(api.RoleDriver), body)
		wantError(t, r, http.StatusBadRequest, "invalid_field")
		if !strings.Contains(string(r.body), "seq") {
			t.Fatalf("%s: refusal %s does not name seq", body, r.body)
		}
	}
	r := f.do(t, "POST", "/v1/drivers/van-9/locations", tok(api.RoleDriver), seqPoint(5))
	wantStatus(t, r, http.StatusAccepted)
	if a := num[int](t, object(t, r)["accepted"]); a != 1 {
		t.Fatalf("seq 5 after the refusals: accepted %d, want 1", a)
	}
}

// TestAdminResetsDriver: a driver whose seq jumped to 2^53 gets every
// later point answered as a duplicate; POST /v1/admin/drivers/{d}/reset
// (admin only) makes its next point count again.
func TestAdminResetsDriver(t *testing.T) {
	f := newFixture(t)
	post := func(seq uint64) (accepted, dups int) {
		t.Helper()
		r := f.do(t, "POST", "/v1/drivers/van-7/locations", tok(api.RoleDriver), seqPoint(seq))
		wantStatus(t, r, http.StatusAccepted)
		m := object(t, r)
		return num[int](t, m["accepted"]), num[int](t, m["duplicates"])
	}
	if a, _ := post(maxSeq); a != 1 {
		t.Fatalf("seq 2^53: accepted %d, want 1", a)
	}
	f.waitDurableSeq(t, "van-7", maxSeq)
	if _, d := post(3); d != 1 {
		t.Fatalf("seq 3 after 2^53: duplicates %d, want 1", d)
	}
	wantError(t, f.do(t, "POST", "/v1/admin/drivers/van-7/reset", tok(api.RoleDispatch), nil), http.StatusForbidden, "forbidden")
	wantError(t, f.do(t, "POST", "/v1/admin/drivers/no-such-driver/reset", tok(api.RoleAdmin), nil), http.StatusNotFound, "not_found")
	wantError(t, f.do(t, "POST", "/v1/admin/drivers/bad%20name/reset", tok(api.RoleAdmin), nil), http.StatusBadRequest, "bad_name")
	r := f.do(t, "POST", "/v1/admin/drivers/van-7/reset", tok(api.RoleAdmin), nil)
	wantStatus(t, r, http.StatusOK)
	if m := object(t, r, "driver", "lsn"); string(m["driver"]) != `"van-7"` {
		t.Fatalf("reset answer %s", r.body)
	}
	if a, _ := post(3); a != 1 {
		t.Fatalf("seq 3 after the reset: accepted %d, want 1", a)
	}
}

// waitDurableSeq waits until the driver's durable seq reaches seq.
func (f *fixture) waitDurableSeq(t testing.TB, driver string, seq uint64) {
	t.Helper()
	testkit.Eventually(t, streamWait, "driver "+driver+"'s durable seq", func() bool {
		cur, err := f.eng.DriverDurableSeq(driver)
		return err == nil && cur >= seq
	})
}

// TestDriverStreamSeqAboveMaxRefused: the driver stream refuses a frame
// with a seq above 2^53 (invalid_field) and takes the next frame.
func TestDriverStreamSeqAboveMaxRefused(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	for _, pts := range []string{seqPoint(maxSeq + 1), seqPoint(2)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-3","points":`+pts+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	var m struct {
		Code     string `json:"code"`
		Accepted *int   `json:"accepted"`
	}
	_, b, err := c.Read(ctx)
	if err != nil || json.Unmarshal(b, &m) != nil || m.Code != "invalid_field" {
		t.Fatalf("first frame answered %s (%v), want invalid_field", b, err)
	}
	_, b, err = c.Read(ctx)
	m.Code = ""
	if err != nil || json.Unmarshal(b, &m) != nil || m.Accepted == nil || *m.Accepted != 1 {
		t.Fatalf("second frame answered %s (%v), want accepted 1", b, err)
	}
}

// TestDriverStreamRefusesBeforeDecodingWhenLaneFull: with the driver lane
// full, a stream frame is refused lane_full before its points are decoded
// (a malformed frame too), as POST /v1/drivers/{d}/locations refuses it:
// a flood over the stream costs no decoding CPU.
func TestDriverStreamRefusesBeforeDecodingWhenLaneFull(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.Lanes.Driver.QueueBound = 50
		c.Lanes.Driver.FlushWithin = time.Minute // nothing drains: the lane stays full
	}})
	ctx, cancel := context.WithTimeout(context.Background(), streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	bad := `[{"seq":1,"lat":999,"lng":13.4,"ts":"2026-11-23T08:00:00Z"}]` // invalid_field when decoded
	for _, frame := range []string{pointsJSON(1, 50), bad} {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-1","points":`+frame+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"accepted":50`) {
		t.Fatalf("first frame: %s (%v), want accepted 50", b, err)
	}
	_, b, err := c.Read(ctx)
	var m struct {
		Code string `json:"code"`
	}
	if err != nil || json.Unmarshal(b, &m) != nil || m.Code != "lane_full" {
		t.Fatalf("malformed frame on a full lane answered %s (%v), want lane_full before decoding", b, err)
	}
	// The same body over HTTP: the same answer.
	wantError(t, f.do(t, "POST", "/v1/drivers/van-2/locations", tok(api.RoleDriver), bad), http.StatusTooManyRequests, "lane_full")
}

// TestDriverStreamIdleTimeout: a driver stream that keeps sending frames
// stays open past the idle timeout; one that goes silent is closed.
func TestDriverStreamIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	f := newFixtureWith(t, fixtureOpts{config: func(c *config.Config) {
		c.HTTP.IdleTimeout = idle
		c.Hub.Heartbeat = 100 * time.Millisecond // pings, answered by the reading client
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*streamWait)
	defer cancel()
	c := f.dialDriverStream(t, ctx)
	frames := make(chan error, 64)
	go func() {
		for {
			_, _, err := c.Read(ctx)
			frames <- err
			if err != nil {
				return
			}
		}
	}()
	// Busy for 3 idle timeouts: a frame every idle/4.
	start := time.Now()
	for seq := uint64(1); time.Since(start) < 3*idle; seq++ {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"driver":"van-4","points":`+seqPoint(seq)+`}`)); err != nil {
			t.Fatalf("write after %v: %v (closed while busy)", time.Since(start), err)
		}
		time.Sleep(idle / 4)
	}
	// Silent: closed within a few idle timeouts.
	deadline := time.After(streamWait)
	for {
		select {
		case err := <-frames:
			if err == nil {
				continue
			}
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("stream ended with %v, want a policy-violation close (idle)", err)
			}
			return
		case <-deadline:
			t.Fatal("a silent driver stream is still open after the idle timeout")
		}
	}
}
