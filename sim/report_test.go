package sim

import (
	"bytes"
	"strings"
	"testing"
)

// The text and HTML reports carry what the JSON has (issue 23): the server
// side has a row also without a spike window, and in the HTML too; the text
// table names the refusals' reasons; the comparison with the naive
// baseline says slower when RouteHound was slower and names no spike
// window that the scenario does not have.
func TestReportsSayWhatTheJSONSays(t *testing.T) {
	rh := &Report{System: "routehound", Scenario: Scenario{Name: "peak-shift"}, Verify: &Verification{OK: true},
		Actors: []ActorReport{
			{Actor: ActorDriver, P99ms: 3, WithinSLA: true, Driver: &DriverPoints{DurablePerSec: 900, DurableP99ms: 8}},
			{Actor: ActorDispatch, P99ms: 4, WithinSLA: true, Rejected: map[string]int64{"version_conflict": 2, "lane_full": 5}},
			{Actor: ActorWarehouse, P99ms: 13.0, SLAms: 5, WithinSLA: false},
		},
		Server: &ServerStats{Windows: []ServerWindow{{Name: "run", From: 0, To: 30, ServerBucket: ServerBucket{DispatchP99ms: 2.5, GCCycles: 60}}}},
	}
	nv := &Report{System: "naive", Scenario: rh.Scenario, Verify: &Verification{OK: true},
		Actors: []ActorReport{
			{Actor: ActorDriver, P99ms: 50, Driver: &DriverPoints{DurablePerSec: 300, DurableP99ms: 80}},
			{Actor: ActorDispatch, P99ms: 40},
			{Actor: ActorWarehouse, P99ms: 12.4},
		},
	}
	c := Compare(rh, nv)
	var txt bytes.Buffer
	c.Summary(&txt)
	out := txt.String()
	for _, want := range []string{
		"rejected: lane_full 5, version_conflict 2", // reasons, most frequent first
		"0-30s", // a server-side row without a spike window
		"warehouse p99 13.0 ms vs 12.4 ms (×1.05 slower)",
		"dispatch p99 4.0 ms vs 40.0 ms (×10 faster)",
		"driver durable throughput ×3.0,",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "spike") || strings.Contains(out, "better") {
		t.Errorf("text report speaks of a spike window the scenario lacks, or of better:\n%s", out)
	}
	var html bytes.Buffer
	if err := c.RenderHTML(&html); err != nil {
		t.Fatal(err)
	}
	h := html.String()
	for _, want := range []string{"Server side (in process)", "<td>run</td>", "<td>2.5</td>", "lane_full 5, version_conflict 2", "×1.05 slower"} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	if over := c.Runs[0].Actors[2]; over.WithinSLA {
		t.Fatal("fixture")
	}
}
