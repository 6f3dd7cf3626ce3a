package apptest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"routehound/config"
	"routehound/internal/testkit"
)

// TestStart: the appliance answers on loopback with a token per role, the
// config hook reaches the engine, and the cleanup shuts it down.
func TestStart(t *testing.T) {
	var s *Server
	t.Run("running", func(t *testing.T) {
		s = Start(t, Options{Config: func(c *config.Config) { c.Lanes.Driver.QueueBound = 77 }})
		for _, role := range config.Roles {
			if s.Token(t, role) == "" {
				t.Errorf("empty token of role %s", role)
			}
		}
		if s.Engine == nil || s.Hub == nil || s.Replica == nil || s.App.Addr.IP.String() != "127.0.0.1" {
			t.Fatalf("incomplete server %+v", s)
		}
		if got := s.App.Config.Lanes.Driver.QueueBound; got != 77 {
			t.Errorf("driver queue_bound %d: the config hook did not reach the appliance", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		body := `[{"seq":1,"lat":52.1,"lng":13.1,"ts":"2026-11-23T10:00:00Z"}]`
		req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/drivers/van-1/locations", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.Token(t, "driver"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := s.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST a point: %s", resp.Status)
		}
		testkit.Eventually(t, 5*time.Second, "the point to be durable in the harness's engine", func() bool {
			seq, _ := s.Engine.DriverDurableSeq("van-1")
			return seq >= 1
		})
	})
	// The subtest's cleanup has shut the appliance down.
	if _, err := http.Get(s.URL + "/healthz"); err == nil {
		t.Error("the appliance still answers after its test's cleanup")
	}
}
