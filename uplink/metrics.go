package uplink

import "github.com/prometheus/client_golang/prometheus"

// collector exports the uplink's position and lag at scrape time.
type collector struct {
	u                                        *Uplink
	connected, acked, lagRecords, lagSeconds *prometheus.Desc
	refused, fenced, epoch                   *prometheus.Desc
	shipped, dropped, sessions, failures     *prometheus.Desc
}

// Collector returns a Prometheus collector of the uplink
// (routehound_uplink_*): its lag in records and seconds, the last LSN
// JetStream acknowledged, and its counters; routehound_uplink_dropped_records_total
// counts records retention removed before they were shipped.
func (u *Uplink) Collector() prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("routehound_uplink_"+name, help, nil, nil)
	}
	return &collector{
		u:          u,
		connected:  d("connected", "1 while the uplink holds a JetStream session."),
		refused:    d("refused", "1 when the stream holds another history of this depot (another box ships as it, or this store was restored from an older backup): nothing is shipped."),
		fenced:     d("fenced", "1 when a standby was promoted in this box's place (the stream's epoch of the depot is newer): nothing is shipped and writes are refused (not_primary)."),
		epoch:      d("epoch", "This box's epoch as the depot's writer in the stream (0: none claimed yet)."),
		acked:      d("acked_lsn", "Last LSN JetStream acknowledged (every record up to it is in the stream)."),
		lagRecords: d("lag_records", "Durable log records not yet acknowledged by JetStream."),
		lagSeconds: d("lag_seconds", "Age of the oldest durable record not yet acknowledged by JetStream (0 when caught up)."),
		shipped:    d("shipped_records_total", "Records JetStream acknowledged since start."),
		dropped:    d("dropped_records_total", "Records retention removed before they were shipped (the log passed [uplink] budget_mb): they are not in the stream."),
		sessions:   d("sessions_total", "JetStream sessions opened since start."),
		failures:   d("session_failures_total", "JetStream sessions that ended in an error (connection lost, publish refused, ack timeout)."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.u.Status()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	k := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	conn := 0.0
	if s.Connected {
		conn = 1
	}
	g(c.connected, conn)
	ref := 0.0
	if s.Refused {
		ref = 1
	}
	g(c.refused, ref)
	fen := 0.0
	if s.Fenced {
		fen = 1
	}
	g(c.fenced, fen)
	g(c.epoch, float64(s.Epoch))
	g(c.acked, float64(s.AckedLSN))
	g(c.lagRecords, float64(s.LagRecords))
	g(c.lagSeconds, s.LagSeconds)
	k(c.shipped, float64(s.Shipped))
	k(c.dropped, float64(s.Dropped))
	k(c.sessions, float64(s.Sessions))
	k(c.failures, float64(s.Failures))
}

// followCollector exports a standby's follower (routehound_standby_*).
type followCollector struct {
	f                                     *Follower
	connected, appliedLSN, pending, epoch *prometheus.Desc
	applied, primary                      *prometheus.Desc
}

// Collector returns a Prometheus collector of the follower: where it is
// in the depot's stream, and whether it was promoted.
func (f *Follower) Collector() prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("routehound_standby_"+name, help, nil, nil)
	}
	return &followCollector{
		f:          f,
		connected:  d("connected", "1 while the standby follows the depot's stream."),
		appliedLSN: d("applied_lsn", "Last LSN applied from the stream and durable on this box."),
		pending:    d("pending_messages", "Messages of the depot in the stream not yet applied (as of the last one read)."),
		epoch:      d("epoch", "The depot's writer epoch the standby follows (its own once promoted)."),
		applied:    d("applied_records_total", "Records applied from the stream since start."),
		primary:    d("promoted", "1 once this standby was promoted: it is the depot's writer."),
	}
}

func (c *followCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *followCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.f.Status()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	g(c.connected, b(s.Connected))
	g(c.appliedLSN, float64(s.AppliedLSN))
	g(c.pending, float64(s.Pending))
	g(c.epoch, float64(s.Epoch))
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.CounterValue, float64(s.Applied))
	g(c.primary, b(s.Role == "primary"))
}
