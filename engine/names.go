package engine

import (
	"routehound/fleet"
	"routehound/wal"
)

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

// The name rules and the built-in tables live in package fleet; these
// are kept for the callers that still name them through the engine.

// CheckName is fleet.CheckName.
func CheckName(what, v string) error { return fleet.CheckName(what, v) }

// CheckDeviceID is fleet.CheckDeviceID.
func CheckDeviceID(id string) error { return fleet.CheckDeviceID(id) }

// The built-in tables (fleet.TablePositions …), written only by their
// actors.
const (
	TablePositions    = fleet.TablePositions
	TableAssignments  = fleet.TableAssignments
	TableLoading      = fleet.TableLoading
	TableDevices      = fleet.TableDevices
	TableDeviceStatus = fleet.TableDeviceStatus
	TableQuarantine   = fleet.TableQuarantine
)
