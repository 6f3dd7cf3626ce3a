// Package testkit holds the helpers RouteHound's tests share: polling for a
// state (Eventually), percentiles of latency samples (Percentile and its
// two older index rules) and a real wal + engine fixture (Engine).
//
// Only _test.go files may import it (TestOnlyTestsImport checks). The
// engine's and the wal's internal test packages cannot (testkit imports
// both: an import cycle); they poll with its subpackage wait.
package testkit

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"testing"
	"time"

	"routehound/engine"
	"routehound/internal/testkit/wait"
	"routehound/wal"
)

// Eventually polls cond (a state, not an event) every 2 ms until it holds,
// and fails t with what when it still does not after within (wait.Eventually).
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	wait.Eventually(t, within, what, cond)
}

// Percentile is the nearest-rank p-th percentile of ds, p in 0..100: the
// element at index ⌈p/100·n⌉−1 of ds sorted (clamped to 0..n−1), so
// Percentile(ds, 100) is the maximum. 0 when ds is empty; ds is not
// modified. For integer p the index is exact (no float rounding).
func Percentile(ds []time.Duration, p float64) time.Duration {
	return at(ds, func(n int) int { return int(math.Ceil(float64(n)*p/100)) - 1 })
}

// PercentileFloor is the p-th percentile (p in 0..100) by the index rule
// ⌊p/100·n⌋ (clamped to n−1): one rank above Percentile when p/100·n is
// whole. The ui benchmarks report with it; kept so that their figures stay
// comparable with earlier runs.
func PercentileFloor(ds []time.Duration, p float64) time.Duration {
	return at(ds, func(n int) int { return int(p / 100 * float64(n)) })
}

// PercentileLower is the p-th percentile (p in 0..100) by the index rule
// ⌊p/100·(n−1)⌋ (numpy's "lower"). The end-to-end tests log with it; kept
// so that their figures stay comparable with earlier runs.
func PercentileLower(ds []time.Duration, p float64) time.Duration {
	return at(ds, func(n int) int { return int(p / 100 * float64(n-1)) })
}

// at is the element at index(n), clamped to 0..n−1, of a sorted copy of ds;
// 0 when ds is empty.
func at(ds []time.Duration, index func(n int) int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(max(index(len(s)), 0), len(s)-1)]
}

// Store says where and how Engine's wal is opened.
type Store struct {
	// Dir holds the wal; "" means a fresh t.TempDir().
	Dir string
	// MemoryBytes is wal.Options.MemoryBytes; 0 means 32 MiB here (not
	// wal's 96 MiB default).
	MemoryBytes int64
	// Logger goes to wal.Open and engine.New; nil discards.
	Logger *slog.Logger
}

// Engine opens a wal in a fresh t.TempDir() (32 MiB) and starts an engine
// on it with engine.DefaultConfig, MinFreeBytes 0, then mutate (when not
// nil). A cleanup closes the engine (10 s) and then the wal, failing t on
// an error; cleanups registered after Engine run before it.
func Engine(t testing.TB, mutate func(*engine.Config)) (*engine.Engine, *wal.DB) {
	t.Helper()
	return EngineIn(t, Store{}, mutate)
}

// EngineIn is Engine with the wal opened as s says.
func EngineIn(t testing.TB, s Store, mutate func(*engine.Config)) (*engine.Engine, *wal.DB) {
	t.Helper()
	if s.Dir == "" {
		s.Dir = t.TempDir()
	}
	if s.MemoryBytes == 0 {
		s.MemoryBytes = 32 << 20
	}
	db, err := wal.Open(wal.Options{Dir: s.Dir, MemoryBytes: s.MemoryBytes, Logger: s.Logger})
	if err != nil {
		t.Fatalf("wal.Open: %v", err)
	}
	ec := engine.DefaultConfig()
	ec.MinFreeBytes = 0
	if mutate != nil {
		mutate(&ec)
	}
	e, err := engine.New(ec, db, s.Logger)
	if err != nil {
		db.Close()
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("engine.Close: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("wal Close: %v", err)
		}
	})
	return e, db
}
