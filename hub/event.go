package hub

import (
	"encoding/json"
	"strconv"
	"sync"

	"routehound/engine"
)

// Event is one committed change, shared by every subscriber of its table.
// Its JSON is encoded once, lazily, by the first transport that needs it,
// on that transport's goroutine (not on the hub's fan-out goroutine).
type Event struct {
	LSN     uint64
	Table   string
	Key     string
	Op      engine.Op
	Value   []byte
	Version uint64

	// durable and offered are when the change became durable and when the
	// fan-out offered it, on Hub.clock (0: not timed, e.g. read from the
	// log by a catch-up); the streams measure their delays from them.
	durable, offered int64

	once sync.Once
	data []byte // {"key","value","version","lsn"}
}

func newEvent(r *engine.Record) *Event {
	return &Event{LSN: r.LSN, Table: r.Table, Key: r.Key, Op: r.Op, Value: r.Value, Version: r.Version}
}

// OpName is "put" or "delete".
func (e *Event) OpName() string { return e.Op.String() }

// Data is the event's JSON object {"key","value","version","lsn"}.
func (e *Event) Data() []byte {
	e.once.Do(func() { e.data = appendRow(nil, e.Key, e.Value, e.Version, e.LSN) })
	return e.data
}

// Row is one key of a snapshot.
type Row struct {
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Version uint64          `json:"version"`
	LSN     uint64          `json:"lsn"`
}

// AppendJSON appends the row's JSON object {"key","value","version","lsn"}
// to b, encoded as a change's Data is.
func (r *Row) AppendJSON(b []byte) []byte {
	return appendRow(b, r.Key, r.Value, r.Version, r.LSN)
}

// appendRow encodes {"key","value","version","lsn"}; a nil value is null.
func appendRow(b []byte, key string, value []byte, version, lsn uint64) []byte {
	k, _ := json.Marshal(key)
	b = append(b, `{"key":`...)
	b = append(b, k...)
	b = append(b, `,"value":`...)
	if value == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, value...)
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, version, 10)
	b = append(b, `,"lsn":`...)
	b = strconv.AppendUint(b, lsn, 10)
	return append(b, '}')
}
