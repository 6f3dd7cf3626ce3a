package ceiling

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestBadger(t *testing.T) {
	dir := t.TempDir()
	rate, err := Badger(context.Background(), dir, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if rate <= 0 {
		t.Fatalf("badger rate %v, want > 0", rate)
	}
	t.Logf("badger: %.0f records/s", rate)
	assertEmpty(t, dir)
}

func TestFsync(t *testing.T) {
	dir := t.TempDir()
	rate, err := Fsync(context.Background(), dir, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if rate <= 0 {
		t.Fatalf("fsync rate %v, want > 0", rate)
	}
	t.Logf("fsync: %.0f/s", rate)
	assertEmpty(t, dir)
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	if _, err := Badger(ctx, t.TempDir(), 0); err == nil {
		t.Error("Badger with duration 0: no error")
	}
	if _, err := Fsync(ctx, t.TempDir(), -time.Second); err == nil {
		t.Error("Fsync with a negative duration: no error")
	}
	if _, err := Fsync(ctx, "/nonexistent/ceiling", time.Second); err == nil {
		t.Error("Fsync in a missing directory: no error")
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Badger(done, t.TempDir(), time.Second); err == nil {
		t.Error("Badger with a cancelled context: no error")
	}
}

// assertEmpty checks that a ceiling left nothing behind.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%s holds %d entries after the run, want none", dir, len(ents))
	}
}
