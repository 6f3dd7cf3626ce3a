package appliance

import (
	"context"
	"runtime"
	"testing"
	"time"

	"routehound/config"
)

// TestShutdownLeavesNoGoroutine: every goroutine the server starts (the
// serving loop, the Failed watcher, the engine's committer and feed, the
// hub's fan-out, the replica's applier, the dashboard) has an owner that
// waits for it, so none is left after Shutdown.
func TestShutdownLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := loopbackConfig(t)
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	failed := a.Failed() // its watcher must end with the server
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		t.Fatalf("Failed reported %v after a clean shutdown", err)
	default:
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before Start, %d after Shutdown:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loopbackConfig is the defaults on a loopback port and a fresh data dir,
// with no free-space watermark: the appliance tests' server.
func loopbackConfig(tb testing.TB) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = tb.TempDir()
	cfg.Storage.MinFreeMB = 0
	return cfg
}
