package appliance

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"routehound/config"
)

// A first start on a taken port fails in one line that names the cause and
// the way out (keeping the words "address already in use", which the
// end-to-end harness and bench ingest look for to retry on another port),
// and writes nothing under the data dir: no tokens.toml that
// the next start would read without ever printing it (issue 23).
func TestStartOnTakenPortLeavesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := loopbackConfig(t)
	cfg.DataDir += "/data"
	cfg.Listen = ln.Addr().String()
	a, err := Start(cfg, nil)
	if err == nil {
		a.Shutdown(context.Background())
		t.Fatal("started on a taken port")
	}
	msg := err.Error()
	if !errors.Is(err, syscall.EADDRINUSE) || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, "address already in use") || !strings.Contains(msg, "--listen") {
		t.Fatalf("error %q", msg)
	}
	if _, err := os.Stat(cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data dir was created by a start that failed: %v", err)
	}
}

// A second server on a data dir in use says so in one line, not in Badger's
// words, and leaves the first one serving.
func TestSecondServerOnSameDataDir(t *testing.T) {
	cfg := loopbackConfig(t)
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	b, err := Start(cfg, nil)
	if err == nil {
		b.Shutdown(context.Background())
		t.Fatal("a second server opened the same data dir")
	}
	msg := err.Error()
	if strings.Contains(msg, "Badger") || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, "in use by another RouteHound") || !strings.Contains(msg, "--data") {
		t.Fatalf("error %q", msg)
	}
	resp, err := http.Get(a.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the first server after the second's failed start: %s", resp.Status)
	}
}

// A start that fails after generating the tokens (here: the phone port is
// taken) removes them, so the next start generates and prints them again.
func TestFailedStartRemovesGeneratedTokens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := loopbackConfig(t)
	cfg.Osmand.Enabled = true
	cfg.Osmand.Listen = ln.Addr().String()
	a, err := Start(cfg, nil)
	if err == nil {
		a.Shutdown(context.Background())
		t.Fatal("started with the phone port taken")
	}
	if msg := err.Error(); !strings.Contains(msg, "[osmand] listen") || !strings.Contains(msg, "address already in use") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q", msg)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, config.TokensFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tokens.toml left by a failed start: %v", err)
	}
	cfg.Osmand.Enabled = false
	a, err = Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	if !a.Generated {
		t.Fatal("the next start did not generate (and so print) the tokens")
	}
}
