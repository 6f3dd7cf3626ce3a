// Package config is RouteHound's configuration: one struct with TOML tags,
// its defaults in one function (Default), and the loader that lays a TOML
// file over them. config.example.toml at the repository root documents every
// setting; a test keeps the two equal.
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"routehound/fleet"
)

// Roles a token can have.
var Roles = []string{"driver", "dispatch", "warehouse", "dashboard", "admin"}

// Token maps one bearer token to one role.
type Token struct {
	Role  string `toml:"role"`
	Token string `toml:"token"`
}

// Config is every setting of `routehound serve`.
type Config struct {
	Listen  string  `toml:"listen"`
	DataDir string  `toml:"data_dir"`
	Tokens  []Token `toml:"tokens"`
	// MemoryLimitMB is the Go runtime's soft memory limit (GOMEMLIMIT):
	// near it the collector works harder instead of letting the heap grow.
	MemoryLimitMB int64 `toml:"memory_limit_mb"`

	HTTP      HTTP      `toml:"http"`
	Storage   Storage   `toml:"storage"`
	Committer Committer `toml:"committer"`
	Lanes     Lanes     `toml:"lanes"`
	Hub       Hub       `toml:"hub"`
	Tables    Tables    `toml:"tables"`
	Osmand    Osmand    `toml:"osmand"`
	UI        UI        `toml:"ui"`
	Uplink    Uplink    `toml:"uplink"`
	Central   Central   `toml:"central"`
	Fleet     Fleet     `toml:"fleet"`
	Replica   Replica   `toml:"replica"`

	// Ignored lists the deprecated settings the file held (Load): the
	// server logs them once at start.
	Ignored []string `toml:"-"`
}

// Fleet configures the fleet events derived from the log (issue 21).
type Fleet struct {
	// Events runs the fleet-events consumer. Off, fleet_events and
	// route_progress stay as they are; on again, the consumer resumes
	// from its cursor and derives what it missed (while the log holds it).
	Events bool `toml:"events"`
	// StopRadiusM is how near (metres) a driver's point must be to a
	// stop without its own radius_m for the stop to be arrived at.
	StopRadiusM float64 `toml:"stop_radius_m"`
	// FenceDwell is how long a driver must stay inside (outside) a
	// geofence before it enters (exits) it: a driver on the boundary
	// does not flap.
	FenceDwell time.Duration `toml:"fence_dwell"`
}

// UI configures the operations dashboard (/ui/).
type UI struct {
	// SessionTTL is how long a dashboard login lasts.
	SessionTTL time.Duration `toml:"session_ttl"`
	// MaxSessions bounds the sessions kept; past it the oldest is ended.
	MaxSessions int `toml:"max_sessions"`
	// MaxLive bounds the dashboard's open live connections (SSE); past it a
	// page stays static and its live endpoint answers 429.
	MaxLive int `toml:"max_live"`
	// FrameInterval is the shortest time between two live frames of one
	// view: changes in between are coalesced (latest value per key).
	FrameInterval time.Duration `toml:"frame_interval"`
	// MapTiles is an MBTiles file (a SQLite database of map tiles) the
	// dashboard serves at /ui/tiles/{z}/{x}/{y} and draws its maps on;
	// "": no basemap (the pages keep their SVG plot).
	MapTiles string `toml:"map_tiles"`
}

// Replica configures the SQLite read replica's depth of history.
type Replica struct {
	// TrailWindow is how long a driver's trail points are kept, by their
	// commit time (GET /v1/drivers/{driver}/trail answers from them).
	TrailWindow time.Duration `toml:"trail_window"`
	// TrailMaxPoints is the most trail points kept per driver, the newest
	// by arrival; 64 bytes each on disk.
	TrailMaxPoints int `toml:"trail_max_points"`
}

// Uplink ships the committed log to a NATS JetStream stream (off while
// NATSURL is empty).
type Uplink struct {
	// NATSURL is the NATS server URL (several, comma-separated, for a
	// cluster); empty: the uplink is off.
	NATSURL string `toml:"nats_url"`
	// Depot names this box in the subjects (routehound.<depot>.<table>)
	// and message ids (<depot>/<lsn>).
	Depot string `toml:"depot"`
	// Stream is the JetStream stream; when absent it is created over
	// routehound.<depot>.> (file storage, one replica).
	Stream string `toml:"stream"`
	// MaxInFlight bounds the records published and not yet acknowledged.
	MaxInFlight int `toml:"max_in_flight"`
	// BudgetMB is the log size up to which retention keeps records not
	// yet shipped (past retention_age and retention_mb); past it the
	// oldest of them go, counted in routehound_uplink_dropped_records_total.
	BudgetMB int64 `toml:"budget_mb"`
	// Follow starts the box as the depot's warm standby (issue 20): it
	// rebuilds every table from the stream (nats_url, depot, stream) and
	// keeps following it, serves reads and subscriptions, and refuses
	// writes (503 not_primary) until promoted (POST /v1/admin/promote),
	// when it starts shipping as the depot's writer. `serve --follow URL
	// --depot NAME` sets it.
	Follow bool `toml:"follow"`
	// Replicate names the lanes ("dispatch", "warehouse", "tables")
	// whose writes are answered only once JetStream acknowledged them
	// (issue 20 part 2): losing this box loses none of them. A write not
	// acknowledged within ReplicateTimeout answers 503 not_replicated (it
	// is durable here; a retry with its Idempotency-Key answers it once
	// it is in the stream).
	Replicate        []string      `toml:"replicate"`
	ReplicateTimeout time.Duration `toml:"replicate_timeout"`
}

// HTTP configures the API server.
type HTTP struct {
	MaxBodyBytes      int64         `toml:"max_body_bytes"`
	ReadHeaderTimeout time.Duration `toml:"read_header_timeout"`
	IdleTimeout       time.Duration `toml:"idle_timeout"`
	RetryAfter        time.Duration `toml:"retry_after"`
	ShutdownTimeout   time.Duration `toml:"shutdown_timeout"`
	// BodyReadTimeout bounds the time a request's body takes to arrive,
	// from the end of its headers (on the phone listener too); past it
	// the connection is closed.
	BodyReadTimeout time.Duration `toml:"body_read_timeout"`
	// MaxConns and MaxConnsPerAddr bound the listener's open connections
	// in total and from one source address (loopback is exempt from the
	// latter); past them a new connection is closed at once.
	MaxConns        int `toml:"max_conns"`
	MaxConnsPerAddr int `toml:"max_conns_per_addr"`
	// MaxPageBytes cuts every page (table listing, log, WebSocket
	// snapshot, dashboard table) at about this many bytes of rows; the
	// page's next cursor continues it.
	MaxPageBytes int64 `toml:"max_page_bytes"`
	// MaxValueBytes is the largest value of a user table's key (413
	// value_too_large).
	MaxValueBytes int64 `toml:"max_value_bytes"`
	// TLSCert and TLSKey are PEM file paths; when both are set the server
	// speaks HTTPS only (and dashboard cookies are Secure).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// MaxAuthFailures bounds the failed authentications (API 401s,
	// refused dashboard logins) per source address within
	// AuthFailureWindow; past it the address is answered 429
	// too_many_failures until its window ends. 0: no limit.
	MaxAuthFailures   int           `toml:"max_auth_failures"`
	AuthFailureWindow time.Duration `toml:"auth_failure_window"`
}

// Storage configures the wal.
type Storage struct {
	MemoryMB       int64         `toml:"memory_mb"`
	MinFreeMB      int64         `toml:"min_free_mb"`
	RetentionAge   time.Duration `toml:"retention_age"`
	RetentionMB    int64         `toml:"retention_mb"`
	IdempotencyTTL time.Duration `toml:"idempotency_ttl"`

	// ReserveMB is free disk kept for the fleet's writes (dispatch,
	// warehouse, drivers, phones, devices): below min_free_mb + reserve_mb
	// writes to user tables are refused (507 disk_reserved) while the
	// fleet's lanes go on down to min_free_mb.
	ReserveMB int64 `toml:"reserve_mb"`
}

// Committer holds the committer's one setting. Its batches are sized at
// run time from the lanes' SLAs and measured costs.
type Committer struct {
	MaxDrivers int `toml:"max_drivers"`
	// Deprecated, ignored: the committer derives its batch size. Still
	// read, so that an older config file loads; Ignored names them.
	BatchRecords int   `toml:"batch_records,omitzero"`
	BatchBytes   int64 `toml:"batch_bytes,omitzero"`
}

// Lanes configures each actor's lane.
type Lanes struct {
	Driver    Lane `toml:"driver"`
	Dispatch  Lane `toml:"dispatch"`
	Warehouse Lane `toml:"warehouse"`
	Tables    Lane `toml:"tables"`
	// Events is the fleet-events consumer's lane: what it derives from
	// the log (fleet_events, route_progress) and its cursor.
	Events Lane `toml:"events"`
}

// Lane is one actor's contract and bounds, as the file says them; the
// appliance hands them to the engine, which checks them.
type Lane struct {
	Contract    string        `toml:"contract"`     // sync, ack or async
	QueueBound  int           `toml:"queue_bound"`  // units (driver: points; others: writes) queued + in flight
	FlushWithin time.Duration `toml:"flush_within"` // longest delay from commit to fsync
	MaxWait     time.Duration `toml:"max_wait"`     // longest queue wait before refusal (0: no bound)
	SLA         time.Duration `toml:"sla"`          // latency target: the committer schedules by it
	// Deprecated, ignored: the committer derives batch shares from the
	// contracts and SLAs. Still read, so that an older file loads.
	BatchBound int `toml:"batch_bound,omitzero"`
	Weight     int `toml:"weight,omitzero"`
}

// Hub configures subscriptions.
type Hub struct {
	// MaxSubscribers bounds the subscribers of all tables together (SSE,
	// WebSocket and the dashboard's live pages); past it: 429.
	MaxSubscribers         int           `toml:"max_subscribers"`
	MaxSubscribersPerTable int           `toml:"max_subscribers_per_table"`
	SubscriberBuffer       int           `toml:"subscriber_buffer"`
	Heartbeat              time.Duration `toml:"heartbeat"`
	WriteTimeout           time.Duration `toml:"write_timeout"`
	// MaxSubscribersPerConn bounds the subscriptions one client
	// connection holds at once (HTTP/2 multiplexes many event streams on
	// one connection); past it: 429. At least 2: a WebSocket switching
	// tables holds its old subscription until the new one is taken.
	MaxSubscribersPerConn int `toml:"max_subscribers_per_conn"`
	// MaxCatchUp bounds the log records a subscription resuming from an
	// LSN (?from=, Last-Event-ID, "from") replays: further behind, it gets
	// a resync (a fresh snapshot) instead.
	MaxCatchUp int `toml:"max_catch_up"`
}

// Tables bounds the user tables (the quotas): past a bound a write that
// would grow them is refused with 403 quota_exceeded; deletes and writes
// that do not grow are always taken.
type Tables struct {
	MaxTables       int   `toml:"max_tables"`         // user tables holding keys
	MaxKeysPerTable int64 `toml:"max_keys_per_table"` // keys of one user table
	MaxTableMB      int64 `toml:"max_table_mb"`       // keys and values of one user table, in MiB
}

// Osmand configures the listener for the phone apps (Traccar Client,
// OsmAnd). It is off by default: it opens a second port that answers
// anyone who knows a device id, so a depot turns it on knowingly.
type Osmand struct {
	Enabled bool   `toml:"enabled"`
	Listen  string `toml:"listen"`
	// PathSecret, when set, must be the first path segment after /osmand/
	// (the apps keep the server URL's path): /osmand/<secret>/.
	PathSecret string `toml:"path_secret"`
	// SpeedUnit of the query/form speed: knots, kmh, mps or mph.
	SpeedUnit string `toml:"speed_unit"`
	// TimeZone of a "yyyy-MM-dd HH:mm:ss" timestamp (IANA name).
	TimeZone string `toml:"time_zone"`
	// TLSCert and TLSKey (PEM files), both set: the listener speaks HTTPS.
	TLSCert      string `toml:"tls_cert"`
	TLSKey       string `toml:"tls_key"`
	MaxBodyBytes int64  `toml:"max_body_bytes"`
	// MaxConns and MaxConnsPerAddr bound the phone listener's open
	// connections in total and from one source address (loopback is
	// exempt from the latter); its body deadline is [http]
	// body_read_timeout.
	MaxConns        int `toml:"max_conns"`
	MaxConnsPerAddr int `toml:"max_conns_per_addr"`
	// MaxUnknownDevices is how many distinct unknown device ids (and
	// wrong path secrets) one source address may send within
	// UnknownDeviceWindow; past it the address's requests are closed
	// without an answer until the window ends. 0: no limit.
	MaxUnknownDevices   int           `toml:"max_unknown_devices"`
	UnknownDeviceWindow time.Duration `toml:"unknown_device_window"`
	// Devices registered in the file, besides those of the devices API.
	Devices []Device `toml:"devices"`
}

// Device maps a phone's device id to the driver its points belong to.
type Device struct {
	ID     string `toml:"id"`
	Driver string `toml:"driver"`
}

// Default is the configuration with nothing set. The storage, committer
// and lane values are the engine's defaults (a test in appliance keeps the
// two equal).
func Default() Config {
	return Config{
		Listen:        ":8080",
		DataDir:       "./data",
		MemoryLimitMB: 192,
		HTTP: HTTP{
			MaxBodyBytes:      1 << 20,
			ReadHeaderTimeout: 10 * time.Second,
			BodyReadTimeout:   30 * time.Second,
			MaxConns:          4096,
			MaxConnsPerAddr:   256,
			MaxPageBytes:      4 << 20,
			MaxValueBytes:     256 << 10,
			IdleTimeout:       2 * time.Minute,
			RetryAfter:        time.Second,
			ShutdownTimeout:   10 * time.Second,
			MaxAuthFailures:   20,
			AuthFailureWindow: time.Minute,
		},
		Storage: Storage{
			MemoryMB:       96,
			MinFreeMB:      256,
			ReserveMB:      512,
			RetentionAge:   7 * 24 * time.Hour,
			RetentionMB:    2048,
			IdempotencyTTL: 24 * time.Hour,
		},
		Committer: Committer{MaxDrivers: 100000},
		Lanes: Lanes{
			Driver:    Lane{Contract: "async", QueueBound: 16384, FlushWithin: 10 * time.Millisecond, SLA: 50 * time.Millisecond},
			Dispatch:  Lane{Contract: "sync", QueueBound: 1024, SLA: 5 * time.Millisecond},
			Warehouse: Lane{Contract: "ack", QueueBound: 4096, FlushWithin: 2 * time.Millisecond, MaxWait: 2 * time.Second, SLA: 20 * time.Millisecond},
			Tables:    Lane{Contract: "sync", QueueBound: 4096, SLA: 20 * time.Millisecond},
			Events:    Lane{Contract: "ack", QueueBound: 4096, FlushWithin: 10 * time.Millisecond, SLA: 100 * time.Millisecond},
		},
		Fleet: Fleet{Events: true, StopRadiusM: 75, FenceDwell: 30 * time.Second},
		Hub: Hub{
			MaxSubscribers:         10000,
			MaxSubscribersPerTable: 100,
			SubscriberBuffer:       1024,
			Heartbeat:              15 * time.Second,
			WriteTimeout:           5 * time.Second,
			MaxSubscribersPerConn:  4,
			MaxCatchUp:             10000,
		},
		Tables: Tables{MaxTables: 64, MaxKeysPerTable: 100000, MaxTableMB: 64},
		UI:     UI{SessionTTL: 12 * time.Hour, MaxSessions: 1000, MaxLive: 64, FrameInterval: 250 * time.Millisecond},
		Uplink: Uplink{Stream: "ROUTEHOUND", MaxInFlight: 1024, BudgetMB: 4096, Replicate: []string{}, ReplicateTimeout: 5 * time.Second},
		// The replica's defaults (replica.DefaultTrailWindow and
		// replica.DefaultTrailMaxPoints; a test in appliance keeps them equal).
		Replica: Replica{TrailWindow: 24 * time.Hour, TrailMaxPoints: 10000},
		Central: Central{Depots: []string{}, Streams: []string{}},
		Osmand: Osmand{
			Listen:       ":5055",
			SpeedUnit:    "knots",
			TimeZone:     "UTC",
			MaxBodyBytes: 64 << 10,
			MaxConns:     4096, MaxConnsPerAddr: 64,
			MaxUnknownDevices: 20, UnknownDeviceWindow: 10 * time.Minute,
		},
	}
}

// Load lays the TOML file at path over the defaults. An unknown setting is
// an error, so that a misspelt key does not silently keep its default.
func Load(path string) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("config: %s: %w", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config: %s: unknown settings: %s", path, strings.Join(keys, ", "))
	}
	for _, k := range md.Keys() {
		if deprecated[k[len(k)-1]] && (len(k) == 2 && k[0] == "committer" || len(k) == 3 && k[0] == "lanes") {
			c.Ignored = append(c.Ignored, k.String())
		}
	}
	return c, c.Validate()
}

// MinEventsQueueBound is the smallest [lanes.events] queue_bound with the
// fleet-events consumer running.
const MinEventsQueueBound = 64

// deprecated are the scheduling settings the committer now derives: a file
// may still hold them (Ignored lists those it held), and they do nothing.
var deprecated = map[string]bool{"batch_records": true, "batch_bytes": true, "batch_bound": true, "weight": true}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	first := map[string]int{} // token → the index of its first entry
	for i, t := range c.Tokens {
		if !validRole(t.Role) {
			return fmt.Errorf("config: tokens[%d]: role %q is not one of %s", i, t.Role, strings.Join(Roles, ", "))
		}
		if len(t.Token) < 16 {
			return fmt.Errorf("config: tokens[%d] (%s): token shorter than 16 characters", i, t.Role)
		}
		// A token has one role: the same token under two roles would
		// leave which one applies to the order of the file. The message
		// names the entries, never the token.
		if j, ok := first[t.Token]; ok && c.Tokens[j].Role != t.Role {
			return fmt.Errorf("config: tokens[%d] (%s) has the same token as tokens[%d] (%s): a token has one role; give each role its own token",
				i, t.Role, j, c.Tokens[j].Role)
		} else if !ok {
			first[t.Token] = i
		}
	}
	if c.HTTP.MaxAuthFailures < 0 || c.HTTP.MaxAuthFailures > 0 && c.HTTP.AuthFailureWindow <= 0 {
		return errors.New("config: http.max_auth_failures must be >= 0 (0: no limit) and http.auth_failure_window > 0")
	}
	if c.HTTP.MaxBodyBytes <= 0 {
		return errors.New("config: http.max_body_bytes must be > 0")
	}
	if c.HTTP.BodyReadTimeout <= 0 || c.HTTP.MaxConns <= 0 || c.HTTP.MaxConnsPerAddr <= 0 {
		return errors.New("config: http.body_read_timeout, http.max_conns and http.max_conns_per_addr must be > 0")
	}
	if c.HTTP.MaxPageBytes <= 0 || c.HTTP.MaxValueBytes <= 0 {
		return errors.New("config: http.max_page_bytes and http.max_value_bytes must be > 0")
	}
	if c.Hub.MaxSubscribers <= 0 || c.Hub.MaxSubscribersPerTable <= 0 || c.Hub.SubscriberBuffer <= 0 ||
		c.Hub.MaxSubscribersPerConn < 2 || c.Hub.MaxCatchUp <= 0 {
		return errors.New("config: hub limits must be > 0 (max_subscribers_per_conn at least 2: a WebSocket switching tables holds the old subscription until the new one is taken)")
	}
	if c.Tables.MaxTables <= 0 || c.Tables.MaxKeysPerTable <= 0 || c.Tables.MaxTableMB <= 0 {
		return errors.New("config: tables.max_tables, tables.max_keys_per_table and tables.max_table_mb must be > 0")
	}
	if c.Storage.ReserveMB < 0 {
		return errors.New("config: storage.reserve_mb must be >= 0")
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		return errors.New("config: http.tls_cert and http.tls_key must be set together")
	}
	if math.IsNaN(c.Fleet.StopRadiusM) || c.Fleet.StopRadiusM <= 0 || c.Fleet.StopRadiusM > fleet.MaxRadiusM || c.Fleet.FenceDwell < 0 {
		return fmt.Errorf("config: fleet.stop_radius_m must be in (0, %d] and fleet.fence_dwell >= 0", fleet.MaxRadiusM)
	}
	if c.UI.SessionTTL <= 0 || c.UI.MaxSessions <= 0 || c.UI.MaxLive <= 0 || c.UI.FrameInterval <= 0 {
		return errors.New("config: ui settings must be > 0")
	}
	if c.Replica.TrailWindow <= 0 || c.Replica.TrailMaxPoints <= 0 {
		return errors.New("config: replica.trail_window and replica.trail_max_points must be > 0")
	}
	if err := c.Uplink.Validate(c.Storage); err != nil {
		return err
	}
	if err := c.Central.Validate(c.Uplink); err != nil {
		return err
	}
	if c.Fleet.Events && c.Central.NATSURL == "" && c.Lanes.Events.QueueBound < MinEventsQueueBound { // a central view runs no consumer
		// The consumer's writes are bounded at 3/4 of the lane's bound,
		// and at least 16 records (a fence's state and event, a route's
		// progress, its places, a mark, the cursor): a smaller lane
		// refuses them for ever.
		return fmt.Errorf("config: lanes.events.queue_bound is %d; the fleet-events consumer needs at least %d ([fleet] events = false runs none)", c.Lanes.Events.QueueBound, MinEventsQueueBound)
	}
	if c.Central.NATSURL != "" && c.Lanes.Events.QueueBound < 2 {
		// A central view applies each depot record with its cursor, in
		// one item of the events lane: a bound of 1 refuses every one.
		return fmt.Errorf("config: lanes.events.queue_bound is %d; a central view needs at least 2 (a record and its depot's cursor)", c.Lanes.Events.QueueBound)
	}
	// The lanes and the committer are checked by the engine, through
	// appliance.Validate.
	return c.Osmand.Validate()
}

// Validate reports the first [osmand] setting that cannot work.
func (o Osmand) Validate() error {
	switch o.SpeedUnit {
	case "knots", "kmh", "mps", "mph":
	default:
		return fmt.Errorf("config: osmand.speed_unit %q is not knots, kmh, mps or mph", o.SpeedUnit)
	}
	if _, err := time.LoadLocation(o.TimeZone); err != nil {
		return fmt.Errorf("config: osmand.time_zone: %w", err)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("config: osmand.tls_cert and osmand.tls_key go together")
	}
	if o.MaxBodyBytes <= 0 {
		return errors.New("config: osmand.max_body_bytes must be > 0")
	}
	if o.MaxConns <= 0 || o.MaxConnsPerAddr <= 0 {
		return errors.New("config: osmand.max_conns and osmand.max_conns_per_addr must be > 0")
	}
	if o.MaxUnknownDevices < 0 || o.MaxUnknownDevices > 0 && o.UnknownDeviceWindow <= 0 {
		return errors.New("config: osmand.max_unknown_devices must be >= 0 (0: no limit) and osmand.unknown_device_window > 0")
	}
	if o.PathSecret != "" {
		if err := fleet.CheckName("osmand.path_secret", o.PathSecret); err != nil || len(o.PathSecret) < 8 {
			return fmt.Errorf("config: osmand.path_secret: 8 to 128 letters, digits and . _ - : @ ~")
		}
	}
	seen := map[string]bool{}
	for i, d := range o.Devices {
		if err := fleet.CheckDeviceID(d.ID); err != nil {
			return fmt.Errorf("config: osmand.devices[%d]: %w", i, err)
		}
		if err := fleet.CheckName("driver", d.Driver); err != nil {
			return fmt.Errorf("config: osmand.devices[%d] (%s): %w", i, d.ID, err)
		}
		if seen[d.ID] {
			return fmt.Errorf("config: osmand.devices[%d]: device %s is listed twice", i, d.ID)
		}
		seen[d.ID] = true
	}
	return nil
}

// Validate reports the first [uplink] setting that cannot work.
func (u Uplink) Validate(st Storage) error {
	for _, l := range u.Replicate {
		if l != "dispatch" && l != "warehouse" && l != "tables" {
			return fmt.Errorf("config: uplink.replicate: %q is not a lane that can wait for JetStream (dispatch, warehouse, tables)", l)
		}
	}
	if u.NATSURL == "" {
		if u.Follow {
			return errors.New("config: uplink.follow needs uplink.nats_url (and depot): the stream the standby follows")
		}
		if len(u.Replicate) > 0 {
			return errors.New("config: uplink.replicate needs uplink.nats_url: the stream its writes wait for")
		}
		return nil
	}
	if len(u.Replicate) > 0 && u.ReplicateTimeout <= 0 {
		return errors.New("config: uplink.replicate_timeout must be > 0 with uplink.replicate")
	}
	if u.Depot == "" || len(u.Depot) > 64 || strings.Trim(u.Depot, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return errors.New("config: uplink.depot must be 1 to 64 letters, digits, - and _ when uplink.nats_url is set (it is a token of the NATS subject)")
	}
	if u.Stream == "" || strings.ContainsAny(u.Stream, " .*>") {
		return errors.New("config: uplink.stream must be set, without spaces, '.', '*' or '>'")
	}
	if u.MaxInFlight <= 0 {
		return errors.New("config: uplink.max_in_flight must be > 0")
	}
	if u.BudgetMB < st.RetentionMB {
		return fmt.Errorf("config: uplink.budget_mb (%d) must be at least storage.retention_mb (%d): the log keeps unshipped records up to it", u.BudgetMB, st.RetentionMB)
	}
	return nil
}

func validRole(r string) bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// ensureDir creates the data dir (mode 0700: it holds tokens.toml).
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("config: data dir %s: %w", dir, err)
	}
	return nil
}
