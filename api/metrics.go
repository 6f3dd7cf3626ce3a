package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"routehound/engine"
	"routehound/hub"
)

// ledgerCollector exports the engine's cost ledger at scrape time: the
// engine keeps its own atomic counters (they also feed the dashboard), and
// this reads them, so nothing is counted twice.
type ledgerCollector struct {
	e   *engine.Engine
	h   *hub.Hub             // nil until mounted
	reg *prometheus.Registry // /metrics' registry, for MountCollector

	subs, published, delivered, dropped, resyncs, refusedSubs, subClosed *prometheus.Desc
	catchUpResyncs, driversEvicted                                       *prometheus.Desc
	hubDelay                                                             *prometheus.Desc

	arrivals, accepted, duplicates, rejected, depth, bound *prometheus.Desc
	roomWaits                                              *prometheus.Desc
	records, bytes, batches, fsyncs, committer             *prometheus.Desc
	queueWait, latency, waitMax, latMax                    *prometheus.Desc
	totFsyncs, totBatches, busy, syncSecs, durable, first  *prometheus.Desc
	logBytes, storeBytes, trimmed, syncTime, uptime        *prometheus.Desc
	journalTime, journalNoRoom, journalPublished           *prometheus.Desc
	refusing, storeFails, recovered                        *prometheus.Desc
	schedCap, schedTarget, schedCost, schedInfeasible      *prometheus.Desc
	driverRateLimit, driverRateShare, schedLatencyP99      *prometheus.Desc
	driverRateRefused                                      *prometheus.Desc
}

func newLedgerCollector(e *engine.Engine) *ledgerCollector {
	lane := []string{"lane"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("routehound_"+name, help, labels, nil)
	}
	return &ledgerCollector{
		e:                 e,
		arrivals:          d("lane_arrivals_total", "Requests that reached the lane, accepted or not.", lane...),
		accepted:          d("lane_accepted_total", "Units accepted (driver: new points; others: writes).", lane...),
		duplicates:        d("lane_duplicates_total", "Units answered from an earlier write (seq or Idempotency-Key).", lane...),
		rejected:          d("lane_rejected_total", "Requests refused, by reason.", "lane", "reason"),
		depth:             d("lane_queue_depth", "Units queued or in flight to the committer.", lane...),
		bound:             d("lane_queue_bound", "The lane's admission bound in units now (the driver lane's is derived from its measured capacity and SLA, at most its queue_bound).", lane...),
		roomWaits:         d("lane_room_waits_total", "Requests that found the lane full and waited for room (backpressure by latency) before being taken or refused.", lane...),
		records:           d("lane_records_total", "Log records written for the lane.", lane...),
		bytes:             d("lane_bytes_written_total", "Bytes the lane added to the store (log, state, idempotency; estimate).", lane...),
		batches:           d("lane_batches_total", "Batches that held a write of the lane.", lane...),
		fsyncs:            d("lane_fsyncs_total", "Fsyncs that covered a write of the lane (shared with other lanes).", lane...),
		committer:         d("lane_committer_seconds_total", "Committer time spent on the lane: apply plus its share of commits and fsyncs.", lane...),
		queueWait:         d("lane_queue_wait_seconds", "Arrival to being taken by the committer.", lane...),
		latency:           d("lane_latency_seconds", "Arrival to durable (the answer of sync and ack writers).", lane...),
		waitMax:           d("lane_queue_wait_max_seconds", "Longest queue wait seen since start.", lane...),
		latMax:            d("lane_latency_max_seconds", "Longest arrival-to-durable latency seen since start.", lane...),
		schedCap:          d("sched_batch_cap", "Derived: ack and async records the committer puts in one batch."),
		schedTarget:       d("sched_target_seconds", "The tightest sync SLA the committer schedules for."),
		schedCost:         d("sched_cost_seconds", "Measured costs the batch cap is derived from (fsync: the one it used, the journal's while measured, else the log's; log_fsync and journal_sync: each).", "cost"),
		schedInfeasible:   d("sched_infeasible", "1 when the fsync alone takes the target: sync SLAs cannot be met on this disk."),
		driverRateLimit:   d("driver_rate_limit_points_per_second", "Derived: the elastic limit on accepted driver points (0: none), from the Go scheduler's latency."),
		driverRateShare:   d("driver_rate_share_points_per_second", "Derived: one driver's max-min share of the elastic limit (0: no limit)."),
		driverRateRefused: d("driver_rate_refused_total", "Driver submissions the elastic limit refused (429 lane_full): the heaviest sources past their share."),
		schedLatencyP99:   d("sched_latency_p99_seconds", "The Go scheduler's latency p99 over the last 100 ms, which the driver rate limit follows."),
		totFsyncs:         d("fsyncs_total", "Fsyncs of the store (group commits)."),
		totBatches:        d("batches_total", "Batches committed."),
		busy:              d("committer_busy_seconds_total", "Time the committer spent applying, committing and syncing."),
		syncSecs:          d("fsync_seconds_total", "Time spent in fsync."),
		syncTime:          d("fsync_seconds", "Duration of one fsync."),
		journalTime:       d("journal_sync_seconds", "Duration of one journal write and fdatasync (the waited-for writes' own durability)."),
		journalNoRoom:     d("journal_no_room_total", "Journal frames that found no room and were answered by the log's fsync."),
		journalPublished:  d("journal_published_total", "Batches published to readers once their journal frame was durable, before the log's fsync covered them."),
		durable:           d("durable_lsn", "Highest LSN durable and published."),
		first:             d("log_first_lsn", "Oldest LSN retained in the log."),
		logBytes:          d("log_bytes", "Bytes of retained log records."),
		storeBytes:        d("store_bytes", "Badger's on-disk size.", "kind"),
		trimmed:           d("log_trimmed_records_total", "Log records removed by retention."),
		uptime:            d("uptime_seconds", "Seconds since start."),
		refusing:          d("writes_refused", "1 while the engine refuses writes, with the reason (storage_failed, disk_low, closing).", "reason"),
		storeFails:        d("store_failures_total", "Failed commits or fsyncs of the store; each stops writes until the store is reopened."),
		recovered:         d("store_recoveries_total", "Store reopens after a failure that resumed writes."),

		subs:           d("hub_subscribers", "Open table subscriptions."),
		published:      d("hub_published_total", "Records offered to at least one subscriber."),
		delivered:      d("hub_delivered_total", "Events written to subscribers."),
		dropped:        d("hub_dropped_total", "Events not buffered because the subscriber was behind (it resyncs)."),
		resyncs:        d("hub_resyncs_total", "Subscribers moved to a fresh snapshot."),
		refusedSubs:    d("hub_refused_total", "Subscriptions refused at a limit (per table, per connection or in all)."),
		catchUpResyncs: d("hub_catchup_resyncs_total", "Resumes from an LSN more than hub.max_catch_up records behind, answered with a resync snapshot instead of a replay of the log."),
		driversEvicted: d("drivers_evicted_total", "Idle drivers forgotten at committer.max_drivers (reloaded from their stored position on their next point)."),
		subClosed:      d("hub_closed_total", "Subscribers closed by the hub, by reason.", "reason"),
		hubDelay: d("hub_delay_seconds", "Where a live change waits between its commit and a subscriber's socket, per change delivered to one subscriber: "+
			"feed (durable → offered by the fan-out), queue (offered → taken by the subscriber's stream), write (taken → written to the socket), total (durable → written).", "stage"),
	}
}

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func histogram(desc *prometheus.Desc, h engine.HistogramSnapshot, labels ...string) prometheus.Metric {
	buckets := map[float64]uint64{}
	h.Buckets(func(le time.Duration, cum uint64) { buckets[le.Seconds()] = cum })
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum.Seconds(), buckets, labels...)
}

// delayHistogram exports a hub delay histogram with every bucket (two per
// doubling): its quantiles are read at the fan-out's scale, milliseconds.
func delayHistogram(desc *prometheus.Desc, h hub.DelaySnapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Counts))
	var cum uint64
	for b, n := range h.Counts[:len(h.Counts)-1] { // the last one is +Inf's
		cum += n
		buckets[hub.DelayBound(b).Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum.Seconds(), buckets, labels...)
}

func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, lane := range engine.Lanes {
		s, name := c.e.Lane(lane), lane.String()
		counter(c.arrivals, float64(s.Arrivals.Load()), name)
		counter(c.accepted, float64(s.Accepted.Load()), name)
		counter(c.duplicates, float64(s.Duplicates.Load()), name)
		for _, r := range s.Rejected() {
			counter(c.rejected, float64(r.Count), name, r.Reason)
		}
		gauge(c.depth, float64(s.Depth.Load()), name)
		counter(c.roomWaits, float64(s.RoomWaits.Load()), name)
		gauge(c.bound, float64(c.e.LaneBound(lane)), name)
		counter(c.records, float64(s.Records.Load()), name)
		counter(c.bytes, float64(s.BytesWritten.Load()), name)
		counter(c.batches, float64(s.Batches.Load()), name)
		counter(c.fsyncs, float64(s.Fsyncs.Load()), name)
		counter(c.committer, time.Duration(s.CommitterNanos.Load()).Seconds(), name)
		qw, lat := s.QueueWait.Snapshot(), s.Latency.Snapshot()
		ch <- histogram(c.queueWait, qw, name)
		ch <- histogram(c.latency, lat, name)
		gauge(c.waitMax, qw.Max.Seconds(), name)
		gauge(c.latMax, lat.Max.Seconds(), name)
	}
	t := c.e.Totals()
	counter(c.totFsyncs, float64(t.Fsyncs.Load()))
	counter(c.totBatches, float64(t.Batches.Load()))
	counter(c.busy, time.Duration(t.BusyNanos.Load()).Seconds())
	counter(c.syncSecs, time.Duration(t.SyncNanos.Load()).Seconds())
	ch <- histogram(c.syncTime, t.SyncTime.Snapshot())
	ch <- histogram(c.journalTime, t.JournalTime.Snapshot())
	counter(c.journalNoRoom, float64(t.JournalNoRoom.Load()))
	counter(c.journalPublished, float64(t.JournalPublished.Load()))
	counter(c.trimmed, float64(t.Trimmed.Load()))
	gauge(c.durable, float64(c.e.DurableLSN()))
	st := c.e.StoreStats()
	gauge(c.first, float64(st.FirstLSN))
	gauge(c.logBytes, float64(st.LogBytes))
	gauge(c.storeBytes, float64(st.LSMBytes), "lsm")
	gauge(c.storeBytes, float64(st.VlogBytes), "vlog")
	gauge(c.uptime, c.e.Uptime().Seconds())
	for _, r := range []string{engine.RefusingStorage, engine.RefusingDisk, engine.RefusingClosing} {
		v := 0.0
		if c.e.Refusing() == r {
			v = 1
		}
		gauge(c.refusing, v, r)
	}
	ss := c.e.Sched()
	gauge(c.schedCap, float64(ss.BatchCap))
	gauge(c.schedTarget, ss.Target.Seconds())
	gauge(c.schedCost, ss.Sync.Seconds(), "fsync")
	gauge(c.schedCost, ss.LogSync.Seconds(), "log_fsync")
	gauge(c.schedCost, ss.JournalSync.Seconds(), "journal_sync")
	gauge(c.schedCost, ss.CommitFixed.Seconds(), "commit_fixed")
	gauge(c.schedCost, ss.CommitPerRecord.Seconds(), "commit_per_record")
	infeasible := 0.0
	if ss.Infeasible {
		infeasible = 1
	}
	gauge(c.schedInfeasible, infeasible)
	limit, share, p99 := c.e.DriverRateLimit()
	gauge(c.driverRateLimit, limit)
	gauge(c.driverRateShare, share)
	counter(c.driverRateRefused, float64(c.e.DriverRateRefused()))
	gauge(c.schedLatencyP99, p99.Seconds())
	counter(c.storeFails, float64(t.StoreFailures.Load()))
	counter(c.recovered, float64(t.Recoveries.Load()))
	counter(c.driversEvicted, float64(c.e.DriversEvicted()))
	if c.h != nil {
		hs := c.h.Stats()
		gauge(c.subs, float64(hs.Subscribers.Load()))
		counter(c.published, float64(hs.Published.Load()))
		counter(c.delivered, float64(hs.Delivered.Load()))
		counter(c.dropped, float64(hs.Dropped.Load()))
		counter(c.resyncs, float64(hs.Resyncs.Load()))
		counter(c.refusedSubs, float64(hs.Refused.Load()))
		counter(c.catchUpResyncs, float64(hs.CatchUpResyncs.Load()))
		for reason, n := range hs.Closes() {
			counter(c.subClosed, float64(n), reason)
		}
		for _, st := range hub.DelayStages {
			ch <- delayHistogram(c.hubDelay, hs.Delay(st.Stage), st.Name)
		}
	}
}

// metricsHandler serves the ledger plus the Go runtime and process metrics.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	s.ledger = newLedgerCollector(s.e)
	s.ledger.reg = reg
	reg.MustRegister(s.ledger, newPhoneCollector(s.e), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// MountCollector adds the metrics of another part (the read replica, …) to
// /metrics. It fails when c exports a metric already there.
func (s *Server) MountCollector(c prometheus.Collector) error {
	if err := s.ledger.reg.Register(c); err != nil {
		return fmt.Errorf("api: mount metrics collector: %w", err)
	}
	return nil
}
