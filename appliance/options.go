package appliance

import (
	"fmt"
	"time"

	"routehound/config"
	"routehound/engine"
	"routehound/hub"
	"routehound/osmand"
)

// The appliance is the one place that turns the configuration file (plain
// data, package config) into each package's options.

// EngineConfig is the engine's part of the configuration; dataDir is the
// directory watched for free space ("" for none). Open is left for Start.
func EngineConfig(c config.Config, dataDir string) engine.Config {
	lane := func(l config.Lane) engine.LaneConfig {
		return engine.LaneConfig{Contract: engine.Contract(l.Contract), QueueBound: l.QueueBound,
			FlushWithin: l.FlushWithin, MaxWait: l.MaxWait, SLA: l.SLA}
	}
	return engine.Config{
		Lanes: map[engine.Lane]engine.LaneConfig{
			engine.LaneDriver:    lane(c.Lanes.Driver),
			engine.LaneDispatch:  lane(c.Lanes.Dispatch),
			engine.LaneWarehouse: lane(c.Lanes.Warehouse),
			engine.LaneTables:    lane(c.Lanes.Tables),
		},
		BatchRecords:   engine.DefaultConfig().BatchRecords,
		BatchBytes:     engine.DefaultConfig().BatchBytes,
		IdempotencyTTL: c.Storage.IdempotencyTTL,
		MaxDrivers:     c.Committer.MaxDrivers,
		Retention:      engine.Retention{MaxAge: c.Storage.RetentionAge, MaxBytes: c.Storage.RetentionMB << 20},
		DataDir:        dataDir,
		MinFreeBytes:   c.Storage.MinFreeMB << 20,
	}
}

// HubConfig is the hub's configuration; its largest WebSocket message is
// the HTTP body limit.
func HubConfig(c config.Config) hub.Config {
	return hub.Config{
		MaxSubscribers:         c.Hub.MaxSubscribers,
		MaxSubscribersPerTable: c.Hub.MaxSubscribersPerTable,
		Buffer:                 c.Hub.SubscriberBuffer,
		Heartbeat:              c.Hub.Heartbeat,
		WriteTimeout:           c.Hub.WriteTimeout,
		MaxMessageBytes:        c.HTTP.MaxBodyBytes,
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
		ReadHeaderTimeout: c.HTTP.ReadHeaderTimeout, IdleTimeout: c.HTTP.IdleTimeout}, nil
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
