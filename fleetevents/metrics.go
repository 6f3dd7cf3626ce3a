package fleetevents

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the consumer's counters to Prometheus
// (routehound_fleet_events_*).
func Collector(c *Consumer) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("routehound_fleet_events_"+name, help, nil, nil)
	}
	return &collector{c: c,
		lag:     d("lag_records", "Durable log records the fleet-events consumer has not evaluated yet."),
		events:  d("written_total", "Fleet events written since start."),
		writes:  d("writes_total", "Writes of the fleet-events consumer (events, progress and cursor together) since start."),
		reloads: d("reloads_total", "Times the consumer read its state again from the store (after a failed write)."),
		errors:  d("errors_total", "Failed reads of the log and writes of the consumer since start."),
		bad:     d("bad_records_total", "Points and assignments the consumer could not decode (they decide nothing)."),
		routes:  d("routes", "Routes the consumer follows."),
		drivers: d("drivers", "Drivers on a route (the consumer keeps state for these only)."),
		latency: d("latency_seconds", "From a deciding point durable to its event durable."),
		p99:     d("latency_p99_seconds", "From a deciding point durable to its event durable: the p99 since start, from the consumer's fine histogram (about 19% resolution)."),
	}
}

type collector struct {
	c                                                          *Consumer
	lag, events, writes, reloads, errors, bad, routes, drivers *prometheus.Desc
	latency, p99                                               *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.Stats()
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v)
	}
	m(c.lag, prometheus.GaugeValue, float64(c.c.Lag()))
	m(c.events, prometheus.CounterValue, float64(s.Events.Load()))
	m(c.writes, prometheus.CounterValue, float64(s.Writes.Load()))
	m(c.reloads, prometheus.CounterValue, float64(s.Reloads.Load()))
	m(c.errors, prometheus.CounterValue, float64(s.Errors.Load()))
	m(c.bad, prometheus.CounterValue, float64(s.BadRecords.Load()))
	m(c.routes, prometheus.GaugeValue, float64(s.Routes.Load()))
	m(c.drivers, prometheus.GaugeValue, float64(s.Drivers.Load()))
	h := s.LatencyHist.Snapshot()
	buckets := map[float64]uint64{}
	h.Buckets(func(le time.Duration, cum uint64) { buckets[le.Seconds()] = cum })
	ch <- prometheus.MustNewConstHistogram(c.latency, h.Count, h.Sum.Seconds(), buckets)
	m(c.p99, prometheus.GaugeValue, h.Quantile(0.99).Seconds())
}
