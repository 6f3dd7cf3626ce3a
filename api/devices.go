package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"routehound/engine"
	"routehound/fleet"
)

// Devices of the phone apps (DESIGN.md, "Phone apps"): the admin registers
// each phone's device id with the driver its points belong to. The
// entries live in the built-in table `devices` (key = id, value =
// {"driver"}), written through the tables lane; devices listed in the
// config ([[osmand.devices]]) are read-only here.

// SetConfigDevices tells the devices API which ids the config registers
// (id → driver), so that it shows them and refuses to change them.
func (s *Server) SetConfigDevices(m map[string]string) {
	s.configDevices = make(map[string]string, len(m))
	for k, v := range m {
		s.configDevices[k] = v
	}
}

func (s *Server) deviceRoutes() {
	s.mux.HandleFunc("/v1/devices/{id}", s.methods(map[string]http.HandlerFunc{
		"GET":    s.allow(noLane, s.getDevice, RoleAdmin),
		"PUT":    s.allow(engine.LaneTables, s.putDevice, RoleAdmin),
		"DELETE": s.allow(engine.LaneTables, s.deleteDevice, RoleAdmin),
	}))
}

// deviceID reads and checks the {id} of the path.
func deviceID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := fleet.CheckDeviceID(id); err != nil {
		return "", errorf(http.StatusBadRequest, "bad_device_id", "%s", fleet.Message(err))
	}
	return id, nil
}

// inConfig refuses a change to a device the config registers.
func (s *Server) inConfig(id string) error {
	if _, ok := s.configDevices[id]; ok {
		return errorf(http.StatusConflict, "device_in_config", "device %s is registered in the config file ([[osmand.devices]]); change it there", id)
	}
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	id, err := deviceID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if d, ok := s.configDevices[id]; ok {
		writeJSON(w, http.StatusOK, fleet.Device{ID: id, Driver: d, Source: fleet.DeviceSourceConfig})
		return
	}
	snap, err := s.e.Snapshot()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer snap.Close()
	st, ok, err := snap.Get(fleet.TableDevices, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "no device %s", id))
		return
	}
	var v fleet.DeviceEntry
	if err := json.Unmarshal(st.Value, &v); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fleet.Device{ID: id, Driver: v.Driver, Source: fleet.DeviceSourceAPI, Version: st.Version, LSN: st.LSN})
}

func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) {
	id, err := deviceID(r)
	if err == nil {
		err = s.inConfig(id)
	}
	if err != nil {
		s.refuse(w, r, engine.LaneTables, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.refuse(w, r, engine.LaneTables, err)
		return
	}
	var in fleet.DeviceRequest
	if err := strict(body, &in); err != nil {
		s.refuse(w, r, engine.LaneTables, err)
		return
	}
	if err := in.Check(); err != nil {
		s.refuse(w, r, engine.LaneTables, refusal(err))
		return
	}
	value, err := fleet.DeviceEntry{Driver: *in.Driver}.Encode()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.e.PutDevice(r.Context(), id, value)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, fleet.Device{ID: id, Driver: *in.Driver, Source: fleet.DeviceSourceAPI, Version: res.Version, LSN: res.LSN})
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	id, err := deviceID(r)
	if err == nil {
		err = s.inConfig(id)
	}
	if err != nil {
		s.refuse(w, r, engine.LaneTables, err)
		return
	}
	res, err := s.e.PutDevice(r.Context(), id, nil)
	if errors.Is(err, engine.ErrNotFound) {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "no device %s", id))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "lsn": res.LSN})
}

// phoneCollector exports the phone listener's counters (engine.PhoneStats).
type phoneCollector struct {
	e     *engine.Engine
	desc  *prometheus.Desc
	stats []phoneCounter
}

type phoneCounter struct {
	outcome string
	v       func(*engine.PhoneStats) uint64
}

func newPhoneCollector(e *engine.Engine) *phoneCollector {
	return &phoneCollector{
		e: e,
		desc: prometheus.NewDesc("routehound_osmand_requests_total",
			"Requests of the phone apps' listener by outcome: point (stored durable), duplicate (a resend, nothing stored), status (no position: device_status), quarantined (malformed, kept in quarantine), unknown_device (answered 200 like a stored point, nothing stored, counted against its address), no_device (400), bad_secret (404), closed_lane_full, closed_error and closed_throttled (connection closed without a status; throttled: the source address sent too many distinct unknown device ids or wrong secrets, osmand.max_unknown_devices).",
			[]string{"outcome"}, nil),
		stats: []phoneCounter{
			{"point", func(s *engine.PhoneStats) uint64 { return s.Points.Load() }},
			{"duplicate", func(s *engine.PhoneStats) uint64 { return s.Duplicates.Load() }},
			{"status", func(s *engine.PhoneStats) uint64 { return s.Statuses.Load() }},
			{"quarantined", func(s *engine.PhoneStats) uint64 { return s.Quarantined.Load() }},
			{"unknown_device", func(s *engine.PhoneStats) uint64 { return s.Unknown.Load() }},
			{"no_device", func(s *engine.PhoneStats) uint64 { return s.NoDevice.Load() }},
			{"bad_secret", func(s *engine.PhoneStats) uint64 { return s.BadSecret.Load() }},
			{"closed_lane_full", func(s *engine.PhoneStats) uint64 { return s.ClosedFull.Load() }},
			{"closed_error", func(s *engine.PhoneStats) uint64 { return s.ClosedError.Load() }},
			{"closed_throttled", func(s *engine.PhoneStats) uint64 { return s.Throttled.Load() }},
		},
	}
}

func (c *phoneCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *phoneCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Phone()
	for _, st := range c.stats {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(st.v(s)), st.outcome)
	}
}
