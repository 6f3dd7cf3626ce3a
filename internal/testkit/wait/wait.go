// Package wait polls for a state in tests. It imports nothing of the
// project, so that the engine's, the hub's and the wal's internal test
// packages can use it too (testkit, which builds engines, would be an
// import cycle there). Only _test.go files may import it.
package wait

import (
	"testing"
	"time"
)

// Eventually polls cond (a state, not an event) every 2 ms until it holds,
// and fails t with what when it still does not after within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}
