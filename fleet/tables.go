package fleet

import (
	"errors"
	"fmt"
)

// The built-in tables. Each is written only by its actor's endpoint
// (Writer); clients read them like any table but may not write them
// through the tables API, the WebSocket or the dashboard (CheckUserTable).
const (
	// TablePositions keeps each driver's latest point (key: driver; value:
	// a point, see Point), its history in the log.
	TablePositions = "positions"
	// TableAssignments keeps each route's assignment (key: route; value:
	// an Assignment).
	TableAssignments = "assignments"
	// TableLoading keeps the loading events (key: a ULID; value: a
	// LoadingEvent).
	TableLoading = "loading"
	// TableDevices maps a phone's device id to {"driver": NAME}
	// (DeviceEntry).
	TableDevices = "devices"
	// TableDeviceStatus keeps each device's last report without a
	// position (heartbeat, battery; DeviceStatus).
	TableDeviceStatus = "device_status"
	// TableQuarantine keeps the raw requests of the phone apps that could
	// not be decoded, so that a malformed point is never dropped silently.
	TableQuarantine = "quarantine"
	// TableFences keeps the geofences (key: the fence id; value: a
	// Fence), written by PUT/DELETE /v1/fences/{id} on the dispatch lane.
	TableFences = "fences"
	// TableFleetEvents keeps the fleet events the fleet-events consumer
	// derives from the log: stop arrivals, departures and skips (key:
	// <route>/<stop>/<type>) and geofence entries and exits (key:
	// <fence>/<driver>/<lsn>); value: a fleetevents.Event.
	TableFleetEvents = "fleet_events"
	// TableRouteProgress keeps each route's progress (key: route; value: a
	// fleetevents.Progress).
	TableRouteProgress = "route_progress"
	// TableFleetConsumer keeps the fleet-events consumer's own state: its
	// cursor in the log (key "cursor"), the last point it evaluated for
	// each driver on a route (key "driver:<driver>", as of the LSN under
	// "marks_at"), the places of each route's stops (key "stops:<route>"),
	// the fences and who is inside ("fence:", "in:"). It is written in the
	// same batch as the events it covers, so that a crash never separates
	// them. The replica does not apply it.
	TableFleetConsumer = "fleet_consumer"
)

// Actor is who writes: each actor has its own endpoint and its own lane.
type Actor string

// The actors that write built-in tables.
const (
	// ActorDriver: the driver API (POST /v1/drivers/{driver}/locations,
	// the driver stream) and the phone apps' listener, all on the driver
	// lane.
	ActorDriver Actor = "driver"
	// ActorDispatch: PUT /v1/assignments/{route}, PUT and DELETE
	// /v1/fences/{id}.
	ActorDispatch Actor = "dispatch"
	// ActorWarehouse: POST /v1/loading-events.
	ActorWarehouse Actor = "warehouse"
	// ActorAdmin: the devices API (/v1/devices/{id}).
	ActorAdmin Actor = "admin"
	// ActorFleetEvents: the fleet-events consumer, which derives
	// fleet_events, route_progress and its own state from the log, on the
	// events lane.
	ActorFleetEvents Actor = "events"
)

// writers is the write authority: the one actor of each built-in table.
var writers = map[string]Actor{
	TablePositions:    ActorDriver,
	TableAssignments:  ActorDispatch,
	TableLoading:      ActorWarehouse,
	TableDevices:      ActorAdmin,
	TableDeviceStatus: ActorDriver,
	TableQuarantine:   ActorDriver,

	TableFences: ActorDispatch,

	TableFleetEvents:   ActorFleetEvents,
	TableRouteProgress: ActorFleetEvents,
	TableFleetConsumer: ActorFleetEvents,
}

// IsSecret reports whether table holds phone device ids (as its keys or in
// its values): devices, device_status and quarantine. A device id is a
// phone's only credential, so only the admin role reads these tables, on
// every read path (tables, log, subscriptions, dashboard). A switch, not a
// map: the log and stream paths ask it per record.
func IsSecret(table string) bool {
	switch table {
	case TableDevices, TableDeviceStatus, TableQuarantine:
		return true
	}
	return false
}

// BuiltinTables lists the built-in tables.
func BuiltinTables() []string {
	return []string{TablePositions, TableAssignments, TableLoading, TableDevices, TableDeviceStatus, TableQuarantine,
		TableFences, TableFleetEvents, TableRouteProgress, TableFleetConsumer}
}

// Writer is the actor that alone writes table, and whether table is a
// built-in one (a user table has no single writer).
func Writer(table string) (Actor, bool) {
	a, ok := writers[table]
	return a, ok
}

// IsBuiltin reports whether table is a built-in table, written only by its
// actor's endpoint.
func IsBuiltin(table string) bool {
	_, ok := writers[table]
	return ok
}

// ErrReadOnly matches (errors.Is) every ReadOnlyError.
var ErrReadOnly = errors.New("read-only table")

// ReadOnlyError refuses a client's write to a built-in table.
type ReadOnlyError struct {
	Table  string
	Writer Actor
}

func (e *ReadOnlyError) Error() string {
	return fmt.Sprintf("table %q is written only by its actor's endpoint", e.Table)
}

// Is makes errors.Is(err, ErrReadOnly) hold.
func (e *ReadOnlyError) Is(target error) bool { return target == ErrReadOnly }

// CheckUserTable is the rule of the tables' front doors (the tables API,
// the WebSocket, the dashboard): a client may write name when it is a
// valid table name (a NameError otherwise) and not a built-in table (a
// ReadOnlyError otherwise).
func CheckUserTable(name string) error {
	if err := CheckName("table", name); err != nil {
		return err
	}
	if a, ok := writers[name]; ok {
		return &ReadOnlyError{Table: name, Writer: a}
	}
	return nil
}
