package fleet

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Stop is one stop of an assignment: {"id","lat","lng","eta","radius_m"};
// eta and radius_m are optional. radius_m is how near a driver's point
// must be for the stop to be reached (default [fleet] stop_radius_m).
type Stop struct {
	ID      *string  `json:"id"`
	Lat     *float64 `json:"lat"`
	Lng     *float64 `json:"lng"`
	ETA     *string  `json:"eta"`
	RadiusM *float64 `json:"radius_m"`
}

// MaxStops is the most stops of one assignment: a route's progress
// (route_progress) is one value, written whole in one batch.
const MaxStops = 1000

// MaxRadiusM is the largest radius_m of a stop or a fence (100 km).
const MaxRadiusM = 100000

// The limits of what the fleet-events consumer derives from one record,
// so that what it must write at once always fits one write of the engine
// (its smallest batch is about 1 MB, at the smallest storage.memory_mb):
// a stop's id and eta and a fence's name are short, and a route's
// progress (route_progress, one value written whole) is at most
// MaxProgressBytes as the consumer writes it at its longest (every stop
// departed, with both times and a delay). A point's stop events, up to
// one per stop, are written in parts when they do not fit one write.
const (
	MaxStopID        = 128       // bytes of a stop's id
	MaxETA           = 64        // bytes of a stop's eta (an RFC 3339 time)
	MaxFenceName     = 256       // bytes of a fence's name
	MaxProgressBytes = 256 << 10 // bytes of a route's progress at its longest (route_too_large)
)

// Assignment is a route's assignment as dispatch sends it (PUT
// /v1/assignments/{route}) and the assignments table keeps it:
// {"driver","stops":[Stop],"note"}. Pointers tell a missing field from a
// zero one.
type Assignment struct {
	Driver *string `json:"driver"`
	Stops  *[]Stop `json:"stops"`
	Note   *string `json:"note"`
}

// Check validates an assignment: a driver name (a NameError when it is
// not one), stops present (possibly empty), each with an id, a position
// and an optional RFC 3339 eta.
func (a *Assignment) Check() error {
	if a.Driver == nil {
		return Invalid("driver", "required")
	}
	if err := CheckName("driver", *a.Driver); err != nil {
		return err
	}
	if a.Stops == nil {
		return Invalid("stops", "required (an array, possibly empty)")
	}
	if len(*a.Stops) > MaxStops {
		return Invalid("stops", "%d stops, more than %d", len(*a.Stops), MaxStops)
	}
	for i, st := range *a.Stops {
		f := func(n string) string { return fmt.Sprintf("stops[%d].%s", i, n) }
		if st.ID == nil || *st.ID == "" {
			return Invalid(f("id"), "required")
		}
		if len(*st.ID) > MaxStopID {
			return Invalid(f("id"), "%d bytes, more than %d", len(*st.ID), MaxStopID)
		}
		if st.ETA != nil && len(*st.ETA) > MaxETA {
			return Invalid(f("eta"), "%d bytes, more than %d", len(*st.ETA), MaxETA)
		}
		if err := checkLat(f("lat"), st.Lat); err != nil {
			return err
		}
		if err := checkLng(f("lng"), st.Lng); err != nil {
			return err
		}
		if err := checkTime(f("eta"), st.ETA, false); err != nil {
			return err
		}
		if err := CheckRadius(f("radius_m"), st.RadiusM, false); err != nil {
			return err
		}
	}
	if n := a.ProgressBytes(); n > MaxProgressBytes {
		return &BodyError{Code: CodeRouteTooLarge, Field: "stops",
			Message: fmt.Sprintf("the route's progress would take up to %d bytes, more than %d: fewer stops, or shorter stop ids and etas", n, MaxProgressBytes)}
	}
	return nil
}

// ProgressBytes bounds the JSON of the route's progress as the
// fleet-events consumer writes it (route_progress): every stop departed,
// with its eta, both times (35 bytes each at most, as the drivers' points
// carry them) and a delay of 20 digits; the route's name counted at its
// longest (MaxName). a must have passed its other checks.
func (a *Assignment) ProgressBytes() int {
	const (
		head = len(`{"route":"","version":18446744073709551615,"driver":"","stops":[]}`) + MaxName
		stop = len(`{"id":"","status":"departed","eta":"","arrived_at":"","departed_at":"","delay_s":-9223372036854775808},`) + 2*35
	)
	n := head + len(*a.Driver)
	for _, st := range *a.Stops {
		id, _ := json.Marshal(*st.ID) // escaped as the consumer's encoder escapes it
		n += stop + len(id) - 2
		if st.ETA != nil {
			n += len(*st.ETA)
		}
	}
	return n
}

// DecodeAssignment decodes (Strict) and checks an assignment body.
func DecodeAssignment(body []byte) (Assignment, error) {
	var a Assignment
	if err := Strict(body, &a); err != nil {
		return a, err
	}
	return a, a.Check()
}

// AssignmentValue is a stored assignment read back for display: the
// driver, the stops (not decoded) and the note. Fields it does not show
// are ignored.
type AssignmentValue struct {
	Driver string            `json:"driver"`
	Stops  []json.RawMessage `json:"stops"`
	Note   string            `json:"note"`
}

// Decode reads a stored assignment; on an error v holds what could be
// read.
func (v *AssignmentValue) Decode(b []byte) error { return json.Unmarshal(b, v) }

// AssignmentDriverKey is the key, in the positions table of the box that
// holds the assignment stored under route, of the driver the assignment
// names. On a depot's box that is the driver's name. On a central view
// (docs/design.md §6) every key is <depot>/<key>: the route's key is
// <depot>/<route> and the driver's <depot>/<driver>, while the value
// still names the driver as its depot wrote it. Route and driver names
// hold no slash (CheckName), so a slash in the route's key says it is a
// central view's, and a driver holding one is already a key. Readers
// match an assignment to its driver with this, at read time: the stored
// value stays the depot's own.
func AssignmentDriverKey(route, driver string) string {
	depot, _, central := strings.Cut(route, "/")
	if !central || depot == "" || driver == "" || strings.Contains(driver, "/") {
		return driver
	}
	return depot + "/" + driver
}

// CheckRadius validates a radius in metres: > 0 and at most MaxRadiusM.
func CheckRadius(field string, v *float64, required bool) error {
	if v == nil {
		if required {
			return Invalid(field, "required (metres, > 0)")
		}
		return nil
	}
	if math.IsNaN(*v) || *v <= 0 || *v > MaxRadiusM {
		return Invalid(field, "%v is outside 0..%d metres (> 0)", *v, MaxRadiusM)
	}
	return nil
}

// Fence is a geofence as PUT /v1/fences/{id} takes it and the fences
// table keeps it: {"name","lat","lng","radius_m"}; name is optional.
type Fence struct {
	Name    *string  `json:"name"`
	Lat     *float64 `json:"lat"`
	Lng     *float64 `json:"lng"`
	RadiusM *float64 `json:"radius_m"`
}

// DecodeFence decodes (Strict) and checks a fence body: a position and a
// radius in (0, MaxRadiusM] metres.
func DecodeFence(body []byte) (Fence, error) {
	var f Fence
	if err := Strict(body, &f); err != nil {
		return f, err
	}
	if err := checkLat("lat", f.Lat); err != nil {
		return f, err
	}
	if err := checkLng("lng", f.Lng); err != nil {
		return f, err
	}
	if f.Name != nil && len(*f.Name) > MaxFenceName {
		// Each of the fence's events carries its name.
		return f, Invalid("name", "%d bytes, more than %d", len(*f.Name), MaxFenceName)
	}
	return f, CheckRadius("radius_m", f.RadiusM, true)
}
