package sim

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"strings"
)

// WriteHTML writes the comparison as one self-contained HTML page: a table
// per run and an inline SVG chart of p50/p99 latency over time per actor,
// with the SLA and the spike window marked. No external assets.
func (c *Comparison) WriteHTML(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("sim: writing %s: %w", path, err)
	}
	if err := c.RenderHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("sim: writing %s: %w", path, err)
	}
	return f.Close()
}

// RenderHTML writes the page to w.
func (c *Comparison) RenderHTML(w io.Writer) error {
	return page.Execute(w, c)
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"chart": chart,
	"f1":    func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"f2":    func(v float64) string { return fmt.Sprintf("%.2f", v) },
	"f0":    func(v float64) string { return fmt.Sprintf("%.0f", v) },
	"rej":   reasons,
	"gcps":  func(w ServerWindow) string { return fmt.Sprintf("%.1f", w.gcPerSec()) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>routehound sim — {{.Scenario}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.over{color:#b00;font-weight:bold}.ok{color:#070}.lost{color:#b00;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #ddd;padding:.5em}
</style></head><body>
<h1>routehound sim — {{.Scenario}}</h1>
{{with .RatioLine}}<p><b>RouteHound vs naive:</b> {{.}}.</p>{{end}}
{{range .Runs}}
<h2>{{.System}} <small>({{.Target}}, {{f0 .DurationS}} s, run {{.RunID}})</small></h2>
<p>{{.Scenario.Description}}.
Verify: {{if .Verify.OK}}<span class="ok">every acknowledged write read back</span>{{else}}<span class="lost">LOST WRITES</span>{{end}}
({{.Verify.LogRecords}} log records read).{{with .SpikeWindowS}} Spike window: {{index . 0}}–{{index . 1}} s.{{end}}</p>
<table><tr><th>actor</th><th>offered</th><th>accepted</th><th>rejected</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>SLA ms</th><th>checked</th><th>lost</th><th>isolation</th><th>notes</th></tr>
{{range .Actors}}<tr><td>{{.Actor}}</td><td>{{.Offered}}</td><td>{{.Accepted}}</td><td>{{rej .Rejected}}</td>
<td>{{f2 .P50ms}}</td><td>{{f2 .P99ms}}</td><td>{{f1 .MaxMs}}</td>
<td class="{{if .WithinSLA}}ok{{else}}over{{end}}">{{f0 .SLAms}}</td><td>{{.Checked}}</td><td {{if .Lost}}class="lost"{{end}}>{{.Lost}}</td>
<td>{{with .Isolation}}×{{f2 .Ratio}} ({{f1 .P99BeforeMs}} → {{f1 .P99SpikeMs}} ms){{end}}</td>
<td>{{with .Driver}}{{f0 .DurablePerSec}} points/s durable{{if .DurablePerSecSpike}} ({{f0 .DurablePerSecSpike}} in the spike){{end}}, durable p99 {{f1 .DurableP99ms}} ms, {{.Recorded}} recorded{{end}}{{with .Viewers}}{{.Connected}} connected, {{.Events}} changes, connect p99 {{f1 .ConnectP99ms}} ms{{end}}</td></tr>
{{end}}</table>
{{range .Verify.Problems}}<p class="lost">{{.}}</p>{{end}}
{{with .Server}}<h3>Server side (in process)</h3>
<p>The engine's own histograms and the Go runtime, per window: engine p99 (arrival → durable) and queue wait (arrival → taken by the committer) per lane, fsync and scheduler-latency p99, GC, the committer's time per second, and the CPU the process and the machine used (cores). Per second in the JSON (<code>server.series</code>).</p>
<table><tr><th>window</th><th>s</th><th>dispatch p99 ms</th><th>dispatch wait p99 ms</th><th>warehouse p99 ms</th><th>warehouse wait p99 ms</th><th>driver p99 ms</th><th>fsync p99 ms</th><th>sched p99 ms</th><th>GC/s</th><th>GC CPU</th><th>user CPU</th><th>committer busy</th><th>commit</th><th>fsync</th><th>process CPU</th><th>machine CPU</th></tr>
{{range .Windows}}<tr><td>{{.Name}}</td><td>{{f0 .From}}–{{f0 .To}}</td><td>{{f1 .DispatchP99ms}}</td><td>{{f1 .DispatchWaitP99ms}}</td><td>{{f1 .WarehouseP99ms}}</td><td>{{f1 .WarehouseWaitP99ms}}</td><td>{{f1 .DriverP99ms}}</td><td>{{f1 .FsyncP99ms}}</td><td>{{f2 .SchedP99ms}}</td><td>{{gcps .}}</td><td>{{f2 .GCCPU}}</td><td>{{f2 .UserCPU}}</td><td>{{f2 .CommitterBusy}}</td><td>{{f2 .CommitterCommit}}</td><td>{{f2 .CommitterFsync}}</td><td>{{f2 .ProcCPU}}</td><td>{{f2 .MachineCPU}}</td></tr>
{{end}}</table>{{end}}
<div class="charts">{{$r := .}}{{range .Actors}}<div class="chart"><b>{{.Actor}}</b> latency over time (p50 blue, p99 red, SLA dashed)<br>{{chart . $r.SpikeWindowS}}</div>{{end}}</div>
{{end}}
<p><small>Latency: drivers, dispatch, warehouse, tables = request to answer; driver durable = request sent to point committed; viewers = write sent to change received.</small></p>
</body></html>
`))

// chart draws one actor's p50/p99 series as an inline SVG.
func chart(a ActorReport, spike []float64) template.HTML {
	const w, h, pad = 420.0, 160.0, 30.0
	var tmax, ymax float64
	for _, b := range a.Series {
		tmax = math.Max(tmax, b.T+1)
		ymax = math.Max(ymax, b.P99ms)
	}
	ymax = math.Max(ymax, a.SLAms) * 1.1
	if tmax == 0 || ymax == 0 {
		return template.HTML(`<svg width="420" height="160"></svg>`)
	}
	x := func(t float64) float64 { return pad + t/tmax*(w-pad-5) }
	y := func(v float64) float64 { return h - pad + 5 - v/ymax*(h-pad) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, w, h, w, h)
	if len(spike) == 2 {
		fmt.Fprintf(&b, `<rect x="%.1f" y="5" width="%.1f" height="%.1f" fill="#fde9c8"/>`, x(spike[0]), x(spike[1])-x(spike[0]), h-pad)
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#999"/>`, pad, y(0), w-5, y(0))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="5" x2="%.0f" y2="%.1f" stroke="#999"/>`, pad, pad, y(0))
	if a.SLAms > 0 {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#070" stroke-dasharray="4 3"/>`, pad, y(a.SLAms), w-5, y(a.SLAms))
	}
	for _, s := range []struct {
		color string
		val   func(Bucket) float64
	}{{"#1f5fbf", func(b Bucket) float64 { return b.P50ms }}, {"#c0392b", func(b Bucket) float64 { return b.P99ms }}} {
		var pts []string
		for _, bk := range a.Series {
			if bk.Count > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(bk.T+0.5), y(s.val(bk))))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
	}
	fmt.Fprintf(&b, `<text x="2" y="12" font-size="10">%.0f ms</text><text x="2" y="%.1f" font-size="10">0</text>`, ymax, y(0))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" text-anchor="end">%.0f s</text></svg>`, w-5, h-2, tmax)
	return template.HTML(b.String())
}
