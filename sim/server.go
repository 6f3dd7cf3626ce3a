package sim

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"routehound/engine"
)

// The server probe: when the server runs in the simulator's process
// (Options.Engine set), the run samples, once a second, the engine's own
// per-lane histograms (arrival → taken by the committer, arrival → durable),
// its fsync histogram, and the Go runtime's scheduler and GC instruments.
// They tell apart what an actor's end-to-end p99 is made of: time in the
// engine's queue and fsync, or time waiting for a CPU (runnable goroutines
// not running: the scheduler latency) and GC.

// ServerStats is what the server and the process measured during the run.
type ServerStats struct {
	// Series: one bucket per second.
	Series []ServerBucket `json:"series"`
	// Windows compare the time before the spike window (after the warm-up),
	// the window itself and the time after it; without a spike, one window
	// "run" covers the whole run.
	Windows []ServerWindow `json:"windows,omitempty"`
}

// ServerBucket is one second (or window) of server-side readings.
type ServerBucket struct {
	T float64 `json:"t_s"`
	// Engine p99s per lane: arrival → durable (Latency) and arrival →
	// taken by the committer (QueueWait).
	DispatchP99ms      float64 `json:"dispatch_p99_ms"`
	DispatchWaitP99ms  float64 `json:"dispatch_wait_p99_ms"`
	WarehouseP99ms     float64 `json:"warehouse_p99_ms"`
	WarehouseWaitP99ms float64 `json:"warehouse_wait_p99_ms"`
	DriverP99ms        float64 `json:"driver_p99_ms"`
	Fsyncs             uint64  `json:"fsyncs"`
	Batches            uint64  `json:"batches"`
	// The committer's time per second of wall time: busy (apply + commit
	// + fsync; 1.0 = never idle), of which commit (Badger write) and fsync.
	CommitterBusy   float64 `json:"committer_busy"`
	CommitterCommit float64 `json:"committer_commit"`
	CommitterFsync  float64 `json:"committer_fsync"`
	FsyncP99ms      float64 `json:"fsync_p99_ms"`
	FsyncMaxMs      float64 `json:"fsync_max_ms"`
	// SchedP99ms is the p99 time a goroutine waited runnable for a CPU.
	SchedP99ms float64 `json:"sched_p99_ms"`
	GCCycles   uint64  `json:"gc_cycles"`
	// CPU seconds of the process by class, per second of wall time (2.0 =
	// both cores of this machine busy with this process).
	GCCPU      float64 `json:"gc_cpu"`
	UserCPU    float64 `json:"user_cpu"`
	IdleCPU    float64 `json:"idle_cpu"`
	GCPauseMax float64 `json:"gc_pause_max_ms"`
	HeapMB     float64 `json:"heap_mb"`
	// ProcCPU is the CPU this process really got (cores, from
	// /proc/self/stat; the runtime's user_cpu counts time its threads held
	// a P, also while the OS ran another process instead). MachineCPU is
	// the busy cores of the whole machine (/proc/stat): the rest of
	// MachineCPU - ProcCPU went to other processes.
	ProcCPU    float64 `json:"proc_cpu"`
	MachineCPU float64 `json:"machine_cpu"`
}

// ServerWindow is a named stretch of the run.
type ServerWindow struct {
	Name string  `json:"name"` // before | spike | after
	From float64 `json:"from_s"`
	To   float64 `json:"to_s"`
	ServerBucket
}

// serverSnap is a cumulative reading.
type serverSnap struct {
	at      time.Duration
	lat     map[string]engine.HistogramSnapshot
	wait    map[string]engine.HistogramSnapshot
	fsync   engine.HistogramSnapshot
	fsyncs  uint64
	busy    int64 // committer nanoseconds: apply + commit + fsync
	commit  int64
	sync    int64
	batches uint64
	rt      []metrics.Sample
	heapNow float64
	// Linux only (zero elsewhere): this process's CPU (user + system) and
	// the machine's busy and total CPU time, in clock ticks.
	procTicks, machBusy, machTotal uint64
}

var runtimeMetrics = []string{
	"/sched/latencies:seconds",
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
	"/cpu/classes/user:cpu-seconds",
	"/cpu/classes/idle:cpu-seconds",
	"/sched/pauses/total/gc:seconds",
	"/memory/classes/heap/objects:bytes",
}

var probeLanes = []engine.Lane{engine.LaneDispatch, engine.LaneWarehouse, engine.LaneDriver}

func takeSnap(e *engine.Engine, at time.Duration) serverSnap {
	s := serverSnap{at: at, lat: map[string]engine.HistogramSnapshot{}, wait: map[string]engine.HistogramSnapshot{}}
	for _, l := range probeLanes {
		if st := e.Lane(l); st != nil {
			s.lat[l.String()], s.wait[l.String()] = st.Latency.Snapshot(), st.QueueWait.Snapshot()
		}
	}
	tot := e.Totals()
	s.fsync, s.fsyncs = tot.SyncTime.Snapshot(), tot.Fsyncs.Load()
	s.busy, s.commit, s.sync, s.batches = tot.BusyNanos.Load(), tot.CommitNanos.Load(), tot.SyncNanos.Load(), tot.Batches.Load()
	s.rt = make([]metrics.Sample, len(runtimeMetrics))
	for i, n := range runtimeMetrics {
		s.rt[i].Name = n
	}
	metrics.Read(s.rt)
	s.procTicks, s.machBusy, s.machTotal = procCPU()
	// Histograms are returned by reference to reused memory only when the
	// caller reuses samples; these are fresh, so the copy is ours.
	return s
}

// probe samples once a second until ctx ends.
func probe(ctx context.Context, e *engine.Engine, start time.Time) []serverSnap {
	snaps := []serverSnap{takeSnap(e, 0)}
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return append(snaps, takeSnap(e, time.Since(start)))
		case now := <-tk.C:
			snaps = append(snaps, takeSnap(e, now.Sub(start)))
		}
	}
}

// between is the reading of what happened from a to b.
func between(a, b serverSnap) ServerBucket {
	wall := (b.at - a.at).Seconds()
	if wall <= 0 {
		wall = 1
	}
	q := func(m1, m0 map[string]engine.HistogramSnapshot, l string) float64 {
		return ms(m1[l].Sub(m0[l]).Quantile(0.99))
	}
	fs := b.fsync.Sub(a.fsync)
	out := ServerBucket{T: a.at.Seconds(),
		DispatchP99ms: q(b.lat, a.lat, "dispatch"), DispatchWaitP99ms: q(b.wait, a.wait, "dispatch"),
		WarehouseP99ms: q(b.lat, a.lat, "warehouse"), WarehouseWaitP99ms: q(b.wait, a.wait, "warehouse"),
		DriverP99ms: q(b.lat, a.lat, "driver"),
		Fsyncs:      b.fsyncs - a.fsyncs, Batches: b.batches - a.batches,
		CommitterBusy:   float64(b.busy-a.busy) / 1e9 / wall,
		CommitterCommit: float64(b.commit-a.commit) / 1e9 / wall,
		CommitterFsync:  float64(b.sync-a.sync) / 1e9 / wall, FsyncP99ms: ms(fs.Quantile(0.99)), FsyncMaxMs: ms(maxBucket(fs)),
		SchedP99ms: histQ(b.rt[0], a.rt[0], 0.99) * 1000,
		GCCycles:   b.rt[1].Value.Uint64() - a.rt[1].Value.Uint64(),
		GCCPU:      (b.rt[2].Value.Float64() - a.rt[2].Value.Float64()) / wall,
		UserCPU:    (b.rt[3].Value.Float64() - a.rt[3].Value.Float64()) / wall,
		IdleCPU:    (b.rt[4].Value.Float64() - a.rt[4].Value.Float64()) / wall,
		GCPauseMax: histQ(b.rt[5], a.rt[5], 1) * 1000,
		HeapMB:     float64(b.rt[6].Value.Uint64()) / (1 << 20),
		ProcCPU:    float64(b.procTicks-a.procTicks) / clockTicks / wall,
	}
	if dt := b.machTotal - a.machTotal; dt > 0 {
		out.MachineCPU = float64(b.machBusy-a.machBusy) / float64(dt) * float64(runtime.NumCPU())
	}
	return out
}

// maxBucket is the upper bound of the highest non-empty bucket of a delta
// (the snapshot's Max is since start, not since the last reading).
func maxBucket(h engine.HistogramSnapshot) time.Duration { return h.Quantile(1) }

// histQ is the q-quantile of the runtime histogram's growth from a to b,
// in seconds (the bucket's upper bound; its lower bound for the open top).
func histQ(b, a metrics.Sample, q float64) float64 {
	hb, ha := b.Value.Float64Histogram(), a.Value.Float64Histogram()
	var total uint64
	d := make([]uint64, len(hb.Counts))
	for i := range hb.Counts {
		d[i] = hb.Counts[i] - ha.Counts[i]
		total += d[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var cum uint64
	for i, c := range d {
		cum += c
		if cum >= rank {
			if up := hb.Buckets[i+1]; !math.IsInf(up, 1) {
				return up
			}
			return hb.Buckets[i]
		}
	}
	return 0
}

// serverStats turns the snapshots into the per-second series and the
// windows before, during and after the spike (nearest whole seconds), or
// one window "run" when the scenario has no spike.
func serverStats(snaps []serverSnap, warm, from, to time.Duration, hasSpike bool) *ServerStats {
	if len(snaps) < 2 {
		return nil
	}
	st := &ServerStats{}
	for i := 1; i < len(snaps); i++ {
		st.Series = append(st.Series, between(snaps[i-1], snaps[i]))
	}
	last := snaps[len(snaps)-1]
	if !hasSpike {
		// One window, the whole run: the report always has a row under
		// its "server side" header.
		st.Windows = []ServerWindow{{Name: "run", From: snaps[0].at.Seconds(), To: last.at.Seconds(), ServerBucket: between(snaps[0], last)}}
		return st
	}
	near := func(t time.Duration) serverSnap {
		best := snaps[0]
		for _, s := range snaps {
			if (s.at - t).Abs() < (best.at - t).Abs() {
				best = s
			}
		}
		return best
	}
	for _, w := range []struct {
		name string
		a, b serverSnap
	}{{"before", near(warm), near(from)}, {"spike", near(from), near(to)}, {"after", near(to), last}} {
		if w.b.at <= w.a.at {
			continue
		}
		st.Windows = append(st.Windows, ServerWindow{Name: w.name, From: w.a.at.Seconds(), To: w.b.at.Seconds(), ServerBucket: between(w.a, w.b)})
	}
	return st
}

// summary writes the windows as a few lines.
func (st *ServerStats) summary(w io.Writer) {
	if st == nil {
		return
	}
	fmt.Fprintf(w, "  server side (in process): %-6s %11s %11s %11s %11s %11s %9s %9s %6s %6s %6s %8s %6s %6s %7s %7s\n",
		"window", "disp p99", "disp wait", "wh p99", "wh wait", "drv p99", "fsync p99", "sched p99", "GC/s", "gcCPU", "usrCPU", "commBusy", "commit", "fsync", "procCPU", "machCPU")
	for _, x := range st.Windows {
		fmt.Fprintf(w, "  %-26s %-6s %9.1fms %9.1fms %9.1fms %9.1fms %9.1fms %7.1fms %7.2fms %6.1f %6.2f %6.2f %8.2f %6.2f %6.2f %7.2f %7.2f\n",
			fmt.Sprintf("%.0f-%.0fs", x.From, x.To), x.Name, x.DispatchP99ms, x.DispatchWaitP99ms, x.WarehouseP99ms,
			x.WarehouseWaitP99ms, x.DriverP99ms, x.FsyncP99ms, x.SchedP99ms, x.gcPerSec(), x.GCCPU, x.UserCPU, x.CommitterBusy, x.CommitterCommit, x.CommitterFsync, x.ProcCPU, x.MachineCPU)
	}
}

// gcPerSec is the window's GC cycles per second (0 for an empty window).
func (x ServerWindow) gcPerSec() float64 {
	if x.To <= x.From {
		return 0
	}
	return float64(x.GCCycles) / (x.To - x.From)
}

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// procCPU reads this process's user + system CPU and the machine's busy
// and total CPU time in clock ticks; zeros where /proc is absent.
func procCPU() (proc, busy, total uint64) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command (which may hold spaces) in parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseUint(f[11], 10, 64) // utime: field 14
				s, _ := strconv.ParseUint(f[12], 10, 64) // stime: field 15
				proc = u + s
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) > 5 && f[0] == "cpu" {
			for i, v := range f[1:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				if i >= 8 { // guest time is already in user
					break
				}
				total += n
				if i != 3 && i != 4 { // idle, iowait
					busy += n
				}
			}
		}
	}
	return proc, busy, total
}
