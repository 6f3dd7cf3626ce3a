package appliance

import (
	"fmt"
	"log/slog"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/ui"
	"routehound/uplink"
)

// The central view (issue 20, part 4): `serve --central NATS_URL` follows
// several depots' shipped logs (uplink/central.go) into this box's engine,
// which refuses every other write (503 central_read_only). Its tables,
// subscriptions, dashboard, replica and /v1/log serve the depots' keys as
// <depot>/<key>; GET /v1/uplink answers the depots' cursors.

// CentralConfig is a central view's follower configuration ([central]).
func CentralConfig(c config.Config) uplink.CentralConfig {
	return uplink.CentralConfig{URL: c.Central.NATSURL, Depots: c.Central.Depots, Streams: c.Central.Streams}
}

// startCentral makes eng a central view's and starts following the depots'
// streams.
func startCentral(cfg config.Config, eng *engine.Engine, r *role, log *slog.Logger) error {
	cv, err := uplink.OpenCentral(CentralConfig(cfg), log)
	if err != nil {
		return err
	}
	if err := cv.Start(eng); err != nil {
		return err
	}
	r.central = cv
	log.Info("central view: following the depots' streams; writes answer 503 central_read_only", "depots", cfg.Central.Depots, "streams", cfg.Central.Streams)
	return nil
}

// mountCentral serves the central view's status (GET /v1/uplink) and
// metrics.
func mountCentral(srv *api.Server, cv *uplink.Central) error {
	srv.SetUplink(func() any { return cv.Status() })
	return srv.MountCollector(cv.Collector())
}

// closeCentral stops following, before the engine closes (an apply in
// flight completes).
func (r *role) closeCentral() {
	if r.central != nil {
		r.central.Close()
	}
}

// centralView adapts a central view's status for the dashboard's System
// page.
func centralView(cv *uplink.Central) func() ui.UplinkView {
	return func() ui.UplinkView {
		s := cv.Status()
		v := ui.UplinkView{Role: "central", Enabled: true, Connected: len(s.Streams) > 0, AckedLSN: s.DurableLSN, LastError: s.LastError}
		for _, st := range s.Streams {
			v.Connected = v.Connected && st.Connected
			v.LagRecords += st.Pending
		}
		for _, d := range s.Depots {
			ud := ui.UplinkDepot{Name: d.Depot, Stream: d.Stream, LSN: d.LSN, Missing: d.Missing, Rejected: d.Rejected}
			if r := d.LastRejected; r != nil {
				ud.LastRejected = fmt.Sprintf("lsn %d (stream seq %d), table %q, key %q: %s", r.LSN, r.StreamSeq, r.Table, r.Key, r.Error)
			}
			v.Depots = append(v.Depots, ud)
		}
		return v
	}
}
