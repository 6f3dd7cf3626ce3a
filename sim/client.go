package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Target is the server a run drives: its base URL and one bearer token per
// role (driver, dispatch, warehouse, dashboard, admin).
type Target struct {
	Name   string            // "routehound" or "naive", for reports
	URL    string            // e.g. http://127.0.0.1:8080
	Tokens map[string]string // role → token
}

// newTransport is one keep-alive pool for an actor class: conns bounds the
// connections it keeps, so each simulated client reuses its own.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// answer is a server's reply: status, error code (for refusals), body.
type answer struct {
	status     int
	code       string
	retryAfter time.Duration
	body       []byte
}

// do sends one request and reads the whole answer (so the connection is
// reused). A transport failure is an error; any HTTP status is an answer.
func do(ctx context.Context, c *http.Client, method, url, token string, body []byte, hdr ...string) (answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return answer{}, fmt.Errorf("sim: %s %s: %w", method, url, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Connection" && hdr[i+1] == "close" {
			req.Close = true
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("sim: %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return answer{}, fmt.Errorf("sim: %s %s: reading the answer: %w", method, url, err)
	}
	a := answer{status: resp.StatusCode, body: b}
	if resp.StatusCode >= 300 {
		var e struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			a.code = e.Code
		} else {
			a.code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			a.retryAfter = time.Duration(s) * time.Second
		}
	}
	return a, nil
}

// reason names a failed request for the report: the answer's code, or
// "transport" when no answer came.
func reason(a answer, err error) string {
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "timeout"
		}
		return "transport"
	}
	return a.code
}

// backoff is how long to wait before retrying a refused request: the
// Retry-After it carried (at most 2 s: a simulator must keep the run
// moving) or a short pause.
func backoff(a answer) time.Duration {
	if a.retryAfter > 0 {
		return min(a.retryAfter, 2*time.Second)
	}
	return 200 * time.Millisecond
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sentAt finds the first "<field>":"<RFC 3339>" in a JSON value and parses
// it, without decoding the whole value (the viewers' hot path).
func sentAt(v []byte, field string) (time.Time, bool) {
	pat := make([]byte, 0, len(field)+4)
	pat = append(pat, '"')
	pat = append(pat, field...)
	pat = append(pat, '"', ':', '"')
	i := bytes.Index(v, pat)
	if i < 0 {
		return time.Time{}, false
	}
	rest := v[i+len(pat):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t, err == nil
}
