package sim

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"routehound/appliance"
	"routehound/config"
	"routehound/engine"
	"routehound/fleet"
)

// startServer runs an in-process RouteHound on a temp dir with a small
// subscriber limit, so that subscriber-flood reaches it in a short test.
func startServer(t *testing.T) (*appliance.Appliance, Options) {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Storage.MinFreeMB = 0
	cfg.Hub.MaxSubscribersPerTable = 4
	a, err := appliance.Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	tokens := map[string]string{}
	for _, r := range config.Roles {
		tokens[r] = a.Token(r)
	}
	o := Options{
		Target:          Target{Name: "routehound", URL: a.URL(), Tokens: tokens},
		SLA:             SLAs(cfg),
		SubscriberLimit: cfg.Hub.MaxSubscribersPerTable,
		Engine:          a.Engine,
	}
	return a, o
}

// short scales a scenario down to a couple of seconds of light load.
func short(t *testing.T, name string) Scenario {
	t.Helper()
	s, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	s = s.Scaled(0.02)
	s.Duration = 2500 * time.Millisecond
	s.DriverInterval = 200 * time.Millisecond
	s.OfflineShare = 0.02
	s.DispatchRate, s.WarehouseRate = 30, 30
	s.Viewers = 3 // one per built-in table
	s.StreamShare = 0.25
	if s.SendEvery > 0 {
		s.SendEvery = s.DriverInterval / 2
	}
	if s.UserTables > 0 {
		s.TableWriteRate = 20
	}
	return s
}

func TestEveryScenario(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			_, o := startServer(t)
			o.Scenario = short(t, name)
			var progress strings.Builder
			o.Progress = &progress
			res, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			r := res.Report
			var sum strings.Builder
			Compare(r, nil).Summary(&sum)
			t.Log(sum.String())
			checkReport(t, r, res.Acks, o.Scenario)
			checkOutputs(t, Compare(r, nil))
			if !strings.Contains(progress.String(), "["+"routehound "+name+"]") {
				t.Errorf("no progress line: %q", progress.String())
			}
		})
	}
}

// checkReport asserts the structure every report has, and lost = 0.
func checkReport(t *testing.T, r *Report, acks *Acks, s Scenario) {
	t.Helper()
	if !r.Verify.OK || r.Lost() != 0 {
		t.Fatalf("verify failed: lost %d: %v", r.Lost(), r.Verify.Problems)
	}
	want := []string{ActorDriver, ActorDispatch, ActorWarehouse, ActorViewer}
	if s.UserTables > 0 {
		want = append(want, ActorTables)
	}
	for _, name := range want {
		a := r.Actor(name)
		if a == nil {
			t.Fatalf("no %s in the report", name)
		}
		if a.Offered == 0 || a.Accepted == 0 {
			t.Errorf("%s: offered %d accepted %d", name, a.Offered, a.Accepted)
		}
		if a.Samples == 0 || a.P99ms <= 0 || a.P50ms > a.P99ms || a.P99ms > a.MaxMs {
			t.Errorf("%s: latencies p50 %.3f p99 %.3f max %.3f over %d samples", name, a.P50ms, a.P99ms, a.MaxMs, a.Samples)
		}
		if a.SLAms <= 0 {
			t.Errorf("%s: no SLA", name)
		}
		if len(a.Series) == 0 {
			t.Errorf("%s: no series", name)
		}
		if name != ActorViewer && a.Checked == 0 {
			t.Errorf("%s: nothing read back", name)
		}
	}
	streamed := 0
	for _, dr := range acks.drivers {
		if dr.useStream && dr.accepted > 0 && dr.durable.Load() > 0 {
			streamed++
		}
	}
	if streamed == 0 {
		t.Error("no driver reported over /v1/drivers/stream")
	}
	d := r.Actor(ActorDriver).Driver
	if d == nil || d.Durable == 0 || d.DurablePerSec <= 0 || d.DurableP99ms <= 0 || d.Unconfirmed != 0 {
		t.Errorf("driver points: %+v", d)
	}
	if v := r.Actor(ActorViewer).Viewers; v == nil || v.Connected == 0 || v.Events == 0 {
		t.Errorf("viewers: %+v", v)
	}
	if s.Spike != "" {
		if s.Spike == ActorDriver && d.DurablePerSecSpike <= 0 {
			t.Errorf("driver-spike: no durable throughput in the window: %+v", d)
		}
		if len(r.SpikeWindowS) != 2 {
			t.Errorf("spike window %v", r.SpikeWindowS)
		}
		for _, name := range []string{ActorDispatch, ActorWarehouse} {
			if name == s.Spike {
				continue
			}
			if iso := r.Actor(name).Isolation; iso == nil || iso.During == 0 || iso.Before == 0 {
				t.Errorf("%s: isolation %+v", name, iso)
			}
		}
	}
	checkServer(t, r, s)
	if s.UserTables > 0 && r.Actor(ActorViewer).Rejected["too_many_subscribers"] != int64(s.UserTables) {
		t.Errorf("subscriber-flood: want one too_many_subscribers per table, got %v", r.Actor(ActorViewer).Rejected)
	}
	if s.StormViewers > 0 && r.Actor(ActorViewer).Rejected["too_many_subscribers"] > 0 {
		t.Errorf("dashboard-storm: viewers refused: %v", r.Actor(ActorViewer).Rejected)
	}
	if s.StormViewers > 0 && r.Actor(ActorViewer).Viewers.Connected < int64(s.Viewers+s.StormViewers) {
		t.Errorf("dashboard-storm: %d connected, want %d", r.Actor(ActorViewer).Viewers.Connected, s.Viewers+s.StormViewers)
	}
}

// TestVerifierDetectsLoss deletes committed records behind the simulator's
// back and expects the verifier to report them lost.
func TestVerifierDetectsLoss(t *testing.T) {
	a, o := startServer(t)
	o.Scenario = short(t, "peak-shift")
	o.Scenario.Duration = 1500 * time.Millisecond
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Report.Verify.OK {
		t.Fatalf("clean run did not verify: %v", res.Report.Verify.Problems)
	}
	ctx := context.Background()
	del := func(table, key string) {
		t.Helper()
		var err error
		switch table {
		case fleet.TableAssignments:
			_, err = a.Engine.DeleteAssignment(ctx, key, engine.WriteOptions{IfVersion: engine.AnyVersion})
		case fleet.TableLoading:
			_, err = a.Engine.DeleteLoadingEvent(ctx, key, engine.WriteOptions{IfVersion: engine.AnyVersion})
		default:
			t.Fatalf("no delete command for %s", table)
		}
		if err != nil {
			t.Fatalf("deleting %s/%s: %v", table, key, err)
		}
	}
	da := res.Acks.Keyed(ActorDispatch)
	wa := res.Acks.Keyed(ActorWarehouse)
	if len(da) == 0 || len(wa) == 0 {
		t.Fatal("nothing acknowledged to delete")
	}
	del(da[0].Table, da[0].Key)
	del(wa[0].Table, wa[0].Key)
	var drv string
	for _, d := range res.Acks.drivers {
		if d.durable.Load() > 0 {
			drv = d.name
			break
		}
	}
	if _, err := a.Engine.ResetDriver(ctx, drv); err != nil { // the one way to delete a position
		t.Fatalf("deleting the position of %s: %v", drv, err)
	}

	v, err := Verify(ctx, o.Target, res.Acks, res.Since, res.OfferEnd)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK {
		t.Fatal("verifier passed after committed records were deleted")
	}
	for _, actor := range []string{ActorDispatch, ActorWarehouse, ActorDriver} {
		if v.Lost[actor] == 0 {
			t.Errorf("%s: deleted record not detected (lost %v, problems %v)", actor, v.Lost, v.Problems)
		}
	}
	if !strings.Contains(strings.Join(v.Problems, "\n"), da[0].Key) {
		t.Errorf("problems do not name the deleted route %s: %v", da[0].Key, v.Problems)
	}
}

// checkOutputs writes the JSON and HTML and checks both: the JSON reads
// back into the same structure, the HTML has a chart per actor and loads
// nothing from elsewhere.
func checkOutputs(t *testing.T, c *Comparison) {
	t.Helper()
	dir := t.TempDir()
	jp, hp := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	if err := c.WriteJSON(jp); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteHTML(hp); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	var back Comparison
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Runs) != 1 || len(back.Runs[0].Actors) != len(c.Runs[0].Actors) || back.Runs[0].Verify == nil {
		t.Fatalf("JSON did not read back: %s", b[:min(len(b), 300)])
	}
	h, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	page := string(h)
	if n := strings.Count(page, "<svg"); n != len(c.Runs[0].Actors) {
		t.Errorf("HTML has %d charts for %d actors", n, len(c.Runs[0].Actors))
	}
	if !strings.Contains(page, "<polyline") {
		t.Error("HTML charts have no lines")
	}
	for _, ext := range []string{"src=", "href=", "@import", "url("} {
		if strings.Contains(page, ext) {
			t.Errorf("HTML refers to an external asset (%s)", ext)
		}
	}
}

// checkServer asserts the in-process server's readings: a bucket per
// second with the engine's batches and fsyncs, and for a spike the
// windows before and in it.
func checkServer(t *testing.T, r *Report, s Scenario) {
	t.Helper()
	st := r.Server
	if st == nil || len(st.Series) < 2 {
		t.Fatalf("server stats: %+v", st)
	}
	var batches, fsyncs uint64
	var dispatch, sched, heap, proc, mach float64
	for _, b := range st.Series {
		proc, mach = max(proc, b.ProcCPU), max(mach, b.MachineCPU)
		batches += b.Batches
		fsyncs += b.Fsyncs
		dispatch = max(dispatch, b.DispatchP99ms)
		sched = max(sched, b.SchedP99ms)
		heap = max(heap, b.HeapMB)
		if b.CommitterBusy < 0 || b.CommitterFsync > b.CommitterBusy+0.01 {
			t.Errorf("committer time at %.0fs: busy %.3f fsync %.3f", b.T, b.CommitterBusy, b.CommitterFsync)
		}
	}
	if batches == 0 || fsyncs == 0 || dispatch <= 0 || sched <= 0 || heap <= 0 {
		t.Errorf("server series: batches %d fsyncs %d dispatch p99 %.3f sched p99 %.3f heap %.1f", batches, fsyncs, dispatch, sched, heap)
	}
	if runtime.GOOS == "linux" && (proc <= 0 || mach <= 0) {
		t.Errorf("no CPU readings from /proc: process %.2f machine %.2f", proc, mach)
	}
	if s.Spike == "" {
		if len(st.Windows) != 1 || st.Windows[0].Name != "run" || st.Windows[0].Batches == 0 {
			t.Errorf("without a spike, one window for the whole run: %+v", st.Windows)
		}
		return
	}
	names := map[string]ServerWindow{}
	for _, w := range st.Windows {
		names[w.Name] = w
	}
	sp, ok := names["spike"]
	if !ok || sp.To <= sp.From || sp.Batches == 0 {
		t.Errorf("spike window: %+v (all %+v)", sp, st.Windows)
	}
	if b, ok := names["before"]; !ok || b.To > sp.From+0.01 {
		t.Errorf("before window: %+v", b)
	}
}
