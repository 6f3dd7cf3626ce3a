package appliance

import (
	"fmt"
	"path/filepath"
	"time"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/fleetevents"
	"routehound/hub"
	"routehound/internal/netguard"
	"routehound/osmand"
	"routehound/replica"
	"routehound/uplink"
)

// The appliance is the one place that turns the configuration file (plain
// data, package config) into each package's options.

// EngineConfig is the engine's part of the configuration; dataDir is the
// directory watched for free space ("" for none). Open is left for Start.
func EngineConfig(c config.Config, dataDir string) engine.Config {
	lane := func(name engine.Lane, l config.Lane) engine.LaneConfig {
		sla := l.SLA
		if sla == 0 {
			// An older file's "sla = 0s" (for reports only, then): the
			// committer schedules by it now, so the default stands in
			// (ZeroSLAs names them for the start-up warning).
			sla = engine.DefaultConfig().Lanes[name].SLA
		}
		return engine.LaneConfig{Contract: engine.Contract(l.Contract), QueueBound: l.QueueBound,
			FlushWithin: l.FlushWithin, MaxWait: l.MaxWait, SLA: sla}
	}
	return engine.Config{
		Lanes: map[engine.Lane]engine.LaneConfig{
			engine.LaneDriver:    lane(engine.LaneDriver, c.Lanes.Driver),
			engine.LaneDispatch:  lane(engine.LaneDispatch, c.Lanes.Dispatch),
			engine.LaneWarehouse: lane(engine.LaneWarehouse, c.Lanes.Warehouse),
			engine.LaneTables:    lane(engine.LaneTables, c.Lanes.Tables),
			engine.LaneEvents:    lane(engine.LaneEvents, c.Lanes.Events),
		},
		BatchRecords:   engine.DefaultConfig().BatchRecords,
		BatchBytes:     engine.DefaultConfig().BatchBytes,
		IdempotencyTTL: c.Storage.IdempotencyTTL,
		MaxDrivers:     c.Committer.MaxDrivers,
		MaxValueBytes:  c.HTTP.MaxValueBytes,
		Retention:      engine.Retention{MaxAge: c.Storage.RetentionAge, MaxBytes: c.Storage.RetentionMB << 20},
		DataDir:        dataDir,
		MinFreeBytes:   c.Storage.MinFreeMB << 20,
		ReserveBytes:   c.Storage.ReserveMB << 20,
		Quotas: engine.Quotas{MaxTables: c.Tables.MaxTables, MaxKeysPerTable: c.Tables.MaxKeysPerTable,
			MaxTableBytes: c.Tables.MaxTableMB << 20},
		RoomWait: engine.DefaultConfig().RoomWait,
	}
}

// UplinkConfig is the log shipper's configuration; its state file is in
// the data dir.
func UplinkConfig(c config.Config, dataDir string) uplink.Config {
	u := c.Uplink
	return uplink.Config{URL: u.NATSURL, Depot: u.Depot, Stream: u.Stream, MaxInFlight: u.MaxInFlight,
		StateFile: filepath.Join(dataDir, "uplink.json")}
}

// ZeroSLAs names the lanes whose sla the file set to 0: EngineConfig uses
// the default for them.
func ZeroSLAs(c config.Config) []string {
	var out []string
	for _, l := range []struct {
		name string
		sla  time.Duration
	}{{"driver", c.Lanes.Driver.SLA}, {"dispatch", c.Lanes.Dispatch.SLA}, {"warehouse", c.Lanes.Warehouse.SLA}, {"tables", c.Lanes.Tables.SLA}, {"events", c.Lanes.Events.SLA}} {
		if l.sla == 0 {
			out = append(out, "lanes."+l.name+".sla")
		}
	}
	return out
}

// FleetEventsConfig is the fleet-events consumer's configuration.
func FleetEventsConfig(c config.Config) fleetevents.Config {
	return fleetevents.Config{StopRadiusM: c.Fleet.StopRadiusM, FenceDwell: c.Fleet.FenceDwell}
}

// APIConfig is the api server's configuration.
func APIConfig(c config.Config) api.Config {
	return api.Config{MaxBodyBytes: c.HTTP.MaxBodyBytes, RetryAfter: c.HTTP.RetryAfter,
		StreamPing: c.Hub.Heartbeat, StreamIdle: c.HTTP.IdleTimeout, MaxPageBytes: c.HTTP.MaxPageBytes,
		MaxAuthFailures: c.HTTP.MaxAuthFailures, AuthFailureWindow: c.HTTP.AuthFailureWindow}
}

// ReplicaConfig is the read replica's depth of history.
func ReplicaConfig(c config.Config) replica.Options {
	return replica.Options{TrailWindow: c.Replica.TrailWindow, TrailMaxPoints: c.Replica.TrailMaxPoints}
}

// HubConfig is the hub's configuration; its largest WebSocket message is
// the HTTP body limit.
func HubConfig(c config.Config) hub.Config {
	return hub.Config{
		MaxSubscribers:         c.Hub.MaxSubscribers,
		MaxSubscribersPerTable: c.Hub.MaxSubscribersPerTable,
		MaxSubscribersPerConn:  c.Hub.MaxSubscribersPerConn,
		MaxCatchUp:             c.Hub.MaxCatchUp,
		Buffer:                 c.Hub.SubscriberBuffer,
		Heartbeat:              c.Hub.Heartbeat,
		WriteTimeout:           c.Hub.WriteTimeout,
		MaxMessageBytes:        c.HTTP.MaxBodyBytes,
		SnapshotBytes:          c.HTTP.MaxPageBytes,
	}
}

// PhoneConfig is the phone listener's configuration. Without a certificate
// of its own the listener uses the server's ([http] tls_cert/tls_key):
// "HTTPS when TLS is configured".
func PhoneConfig(c config.Config) (osmand.Config, error) {
	o := c.Osmand
	zone, err := time.LoadLocation(o.TimeZone)
	if err != nil {
		return osmand.Config{}, fmt.Errorf("config: osmand.time_zone: %w", err)
	}
	if o.TLSCert == "" && o.TLSKey == "" {
		o.TLSCert, o.TLSKey = c.HTTP.TLSCert, c.HTTP.TLSKey
	}
	devs := make(map[string]string, len(o.Devices))
	for _, d := range o.Devices {
		devs[d.ID] = d.Driver
	}
	return osmand.Config{Listen: o.Listen, PathSecret: o.PathSecret, SpeedUnit: osmand.SpeedUnit(o.SpeedUnit), Zone: zone,
		TLSCert: o.TLSCert, TLSKey: o.TLSKey, Devices: devs, MaxBodyBytes: o.MaxBodyBytes,
		ReadHeaderTimeout: c.HTTP.ReadHeaderTimeout, IdleTimeout: c.HTTP.IdleTimeout, BodyReadTimeout: c.HTTP.BodyReadTimeout,
		Conns:             netguard.Limits{MaxConns: o.MaxConns, MaxConnsPerAddr: o.MaxConnsPerAddr, ExemptLoopback: true},
		MaxUnknownDevices: o.MaxUnknownDevices, UnknownDeviceWindow: o.UnknownDeviceWindow}, nil
}

// Validate checks the whole configuration: the file's own rules
// (config.Validate), then what each package makes of it.
func Validate(c config.Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := EngineConfig(c, "").Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	_, err := PhoneConfig(c)
	return err
}
