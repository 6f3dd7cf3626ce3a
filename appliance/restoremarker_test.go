package appliance

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInterruptedRestoreRefused: a restore killed partway (here: after the
// store is loaded, before tokens.toml and the replica) leaves its marker,
// and serve refuses the data dir in one line that says to delete it and
// restore again; a restore that finishes leaves no marker and serves.
func TestInterruptedRestoreRefused(t *testing.T) {
	cfg := loopbackConfig(t)
	a, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, b := httpDo(t, "PUT", a.URL()+"/v1/devices/dev-abcdefgh-1", a.Token("admin"), `{"driver":"anna"}`); st/100 != 2 {
		t.Fatalf("device: %d %s", st, b)
	}
	file := filepath.Join(t.TempDir(), "rh.backup")
	if _, err := FetchBackup(context.Background(), http.DefaultClient, a.URL(), a.Token("admin"), file); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Killed partway: the hook panics out of Restore, so nothing after it
	// runs (no cleanup, as after a kill).
	rcfg := loopbackConfig(t)
	rcfg.DataDir = filepath.Join(t.TempDir(), "interrupted")
	func() {
		restoreStoreLoaded = func() { panic("killed") }
		defer func() {
			restoreStoreLoaded = nil
			if r := recover(); r != "killed" {
				t.Fatalf("the restore was not interrupted: %v", r)
			}
		}()
		Restore(rcfg, file, nil)
	}()
	if _, err := os.Stat(filepath.Join(rcfg.DataDir, RestoringMarker)); err != nil {
		t.Fatalf("an interrupted restore left no marker: %v", err)
	}
	if _, err := os.Stat(filepath.Join(rcfg.DataDir, "store")); err != nil {
		t.Fatalf("the interrupted restore loaded no store (the test plays it wrong): %v", err)
	}
	b, err := Start(rcfg, nil)
	if err == nil {
		b.Shutdown(context.Background())
		t.Fatal("serve opened the data dir of an interrupted restore")
	}
	if !errors.Is(err, ErrUnfinishedRestore) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "delete the directory") || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("serve on an interrupted restore: %v", err)
	}
	// Restoring into it again is refused too (not empty): the way out is
	// to delete it.
	if _, err := Restore(rcfg, file, nil); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into an interrupted restore's dir: %v", err)
	}
	if err := os.RemoveAll(rcfg.DataDir); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(rcfg, file, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(rcfg.DataDir, RestoringMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished restore left its marker: %v", err)
	}
	b, err = Start(rcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	if st, body := httpDo(t, "GET", b.URL()+"/v1/devices/dev-abcdefgh-1", b.Token("admin"), ""); st != http.StatusOK || !strings.Contains(string(body), "dev-abcdefgh-1") {
		t.Fatalf("the restored devices: %d %s", st, body)
	}
}
