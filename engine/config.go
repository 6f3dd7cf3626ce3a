package engine

import (
	"fmt"
	"time"

	"routehound/wal"
)

// Contract is what a writer's answer means.
type Contract string

const (
	Sync  Contract = "sync"  // answered after the fsync covering the write
	Ack   Contract = "ack"   // answered once durable; the fsync may wait FlushWithin
	Async Contract = "async" // answered at once; durable within FlushWithin
)

// Lane is one writing actor's channel into the engine. Its values are in
// priority order (first drained first).
type Lane uint8

const (
	LaneDispatch Lane = iota
	LaneTables
	LaneWarehouse
	LaneDriver
	// LaneEvents is the fleet-events consumer's lane: the events, route
	// progress and cursor it derives from the log (WriteDerived). Last,
	// and with the loosest SLA: it never delays the writers it follows.
	LaneEvents
	numLanes
)

// Lanes lists the lanes in priority order (first drained first).
var Lanes = []Lane{LaneDispatch, LaneTables, LaneWarehouse, LaneDriver, LaneEvents}

var laneNames = [numLanes]string{"dispatch", "tables", "warehouse", "driver", "events"}

// String is the lane's name, as in the config, the metrics and the log's
// records.
func (l Lane) String() string {
	if l < numLanes {
		return laneNames[l]
	}
	return fmt.Sprintf("lane(%d)", uint8(l))
}

// ParseLane returns the lane of a name.
func ParseLane(name string) (Lane, error) {
	for i, n := range laneNames {
		if n == name {
			return Lane(i), nil
		}
	}
	return 0, fmt.Errorf("engine: no lane %q (one of dispatch, tables, warehouse, driver, events)", name)
}

// MarshalText writes the lane's name (JSON keys and values).
func (l Lane) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// LaneConfig configures one lane.
type LaneConfig struct {
	Contract    Contract      `toml:"contract"`
	QueueBound  int           `toml:"queue_bound"`  // units (driver: points; others: writes) queued + in flight
	FlushWithin time.Duration `toml:"flush_within"` // longest delay from commit to fsync
	MaxWait     time.Duration `toml:"max_wait"`     // longest queue wait before refusal (0: no bound)
	SLA         time.Duration `toml:"sla"`          // end-to-end latency target, for reports
}

// Config configures the engine.
type Config struct {
	Lanes         map[Lane]LaneConfig
	BatchRecords  int // records in one batch: the hard cap; the committer derives its own below it (sched.go)
	FixedBatchCap int // tests: cap ack and async records per batch at this instead of deriving it (0: derive)
	// RoomWait is how long a driver's submission that finds its lane full
	// waits for room (for exactly its new points) before ErrLaneFull: the
	// backpressure is latency first, a refusal after (0: refuse at once).
	RoomWait       time.Duration
	BatchBytes     int64         // bytes in one batch; capped below the wal's transaction limit
	IdempotencyTTL time.Duration // how long an Idempotency-Key answers its first answer
	MaxDrivers     int           // distinct drivers tracked for seq dedup
	MaxValueBytes  int64         // largest value of a user table's key (PutKey; 0: no limit)
	Retention      Retention
	DataDir        string // watched for free space
	MinFreeBytes   int64  // below this, writes are refused (0: no check)
	// ReserveBytes is free space above MinFreeBytes kept for the fleet's
	// writes: below MinFreeBytes+ReserveBytes writes that grow a user
	// table are refused (ErrDiskReserved) while the fleet's lanes go on.
	ReserveBytes int64
	// Quotas bound the user tables (quota.go; zero: no bound).
	Quotas Quotas
	// Open reopens the store after a storage failure (see recover.go). With
	// Open nil a storage failure stops the engine for good and Fatal tells
	// the caller to exit for a supervisor's restart.
	Open func() (*wal.DB, error)
}

// DefaultConfig is the engine's configuration when nothing is set.
func DefaultConfig() Config {
	return Config{
		Lanes: map[Lane]LaneConfig{
			LaneDispatch:  {Contract: Sync, QueueBound: 1024, SLA: 5 * time.Millisecond},
			LaneTables:    {Contract: Sync, QueueBound: 4096, SLA: 20 * time.Millisecond},
			LaneWarehouse: {Contract: Ack, QueueBound: 4096, FlushWithin: 2 * time.Millisecond, MaxWait: 2 * time.Second, SLA: 20 * time.Millisecond},
			LaneDriver:    {Contract: Async, QueueBound: 16384, FlushWithin: 10 * time.Millisecond, SLA: 50 * time.Millisecond},
			LaneEvents:    {Contract: Ack, QueueBound: 4096, FlushWithin: 10 * time.Millisecond, SLA: 100 * time.Millisecond},
		},
		BatchRecords:   4096,
		BatchBytes:     2 << 20,
		IdempotencyTTL: 24 * time.Hour,
		MaxDrivers:     100000,
		MaxValueBytes:  256 << 10,
		Retention:      Retention{MaxAge: 7 * 24 * time.Hour, MaxBytes: 2 << 30},
		MinFreeBytes:   256 << 20,
		ReserveBytes:   512 << 20,
		Quotas:         Quotas{MaxTables: 64, MaxKeysPerTable: 100000, MaxTableBytes: 64 << 20},
		RoomWait:       500 * time.Millisecond,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	for _, n := range Lanes {
		l, ok := c.Lanes[n]
		if !ok {
			return fmt.Errorf("engine: lane %s: not configured", n)
		}
		switch l.Contract {
		case Sync, Ack, Async:
		default:
			return fmt.Errorf("engine: lane %s: contract %q is not sync, ack or async", n, l.Contract)
		}
		if l.QueueBound <= 0 {
			return fmt.Errorf("engine: lane %s: queue_bound must be > 0", n)
		}
		if l.SLA <= 0 {
			return fmt.Errorf("engine: lane %s: sla must be > 0: the committer schedules by it", n)
		}
		if l.FlushWithin < 0 || l.MaxWait < 0 {
			return fmt.Errorf("engine: lane %s: durations must be >= 0", n)
		}
		if l.Contract == Async && l.MaxWait > 0 {
			// An async write is accepted before it is queued; refusing it
			// later would lose it silently.
			return fmt.Errorf("engine: lane %s: max_wait needs a sync or ack contract", n)
		}
		if l.Contract == Sync && l.FlushWithin > 0 {
			return fmt.Errorf("engine: lane %s: a sync contract fsyncs at once; flush_within must be 0", n)
		}
	}
	if c.BatchRecords <= 0 || c.BatchBytes <= 0 {
		return fmt.Errorf("engine: batch_records and batch_bytes must be > 0")
	}
	if c.MaxDrivers <= 0 {
		return fmt.Errorf("engine: max_drivers must be > 0")
	}
	if c.ReserveBytes < 0 || c.Quotas.MaxTables < 0 || c.Quotas.MaxKeysPerTable < 0 || c.Quotas.MaxTableBytes < 0 {
		return fmt.Errorf("engine: reserve and quotas must be >= 0")
	}
	return nil
}
