package replica

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the replica's lag and applier counters at scrape time.
type collector struct {
	r                                                              *Replica
	lagRecords, lagSeconds, appliedLSN                             *prometheus.Desc
	applied, batches, applySeconds, bytes, rebuilds, skippedValues *prometheus.Desc
}

// Collector returns a Prometheus collector of the replica's lag
// (routehound_replica_lag_records, routehound_replica_lag_seconds), its
// applied LSN and the applier's counters.
func (r *Replica) Collector() prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("routehound_replica_"+name, help, nil, nil)
	}
	return &collector{
		r:             r,
		lagRecords:    d("lag_records", "Durable log records not yet applied to the read replica."),
		lagSeconds:    d("lag_seconds", "Age of the oldest durable record not yet applied to the read replica (0 when caught up)."),
		appliedLSN:    d("applied_lsn", "Highest LSN applied to the read replica."),
		applied:       d("applied_records_total", "Log records applied to the read replica since start."),
		batches:       d("batches_total", "Read replica transactions committed since start."),
		applySeconds:  d("apply_seconds_total", "Time the replica applier spent reading the log and writing SQLite."),
		bytes:         d("bytes", "Size of the read replica's database."),
		rebuilds:      d("rebuilds_total", "Rebuilds of the read replica from a snapshot (the log was trimmed past it)."),
		skippedValues: d("skipped_records_total", "Records of a built-in table the replica could not read and skipped."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v)
	}
	m(c.lagRecords, prometheus.GaugeValue, float64(s.LagRecords))
	m(c.lagSeconds, prometheus.GaugeValue, s.LagAge.Seconds())
	m(c.appliedLSN, prometheus.GaugeValue, float64(s.LSN))
	m(c.applied, prometheus.CounterValue, float64(s.Applied))
	m(c.batches, prometheus.CounterValue, float64(s.Batches))
	m(c.applySeconds, prometheus.CounterValue, time.Duration(s.ApplyNanos).Seconds())
	m(c.bytes, prometheus.GaugeValue, float64(s.Bytes))
	m(c.rebuilds, prometheus.CounterValue, float64(s.Rebuilds))
	m(c.skippedValues, prometheus.CounterValue, float64(s.Skipped))
}
