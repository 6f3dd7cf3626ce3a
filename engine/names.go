package engine

import "routehound/wal"

// Record and State are the wal's types, re-exported for readers above the
// engine (hub, api, ui), which do not import the wal.
type (
	Record = wal.Record
	State  = wal.State
	Op     = wal.Op
	// TableInfo and Retention are named here so that readers above the
	// engine (ui) need not import wal (DESIGN.md: ui imports engine and hub).
	TableInfo = wal.TableInfo
	Snapshot  = wal.Snapshot
	Retention = wal.Retention
)

// Op values of a Record.
const (
	OpPut    = wal.OpPut
	OpDelete = wal.OpDelete
)

// AnyVersion makes a Write unconditional.
const AnyVersion = wal.AnyVersion
