package fleet

import (
	"encoding/json"
	"fmt"
)

// Stop is one stop of an assignment: {"id","lat","lng","eta"}; eta is
// optional.
type Stop struct {
	ID  *string  `json:"id"`
	Lat *float64 `json:"lat"`
	Lng *float64 `json:"lng"`
	ETA *string  `json:"eta"`
}

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
	for i, st := range *a.Stops {
		f := func(n string) string { return fmt.Sprintf("stops[%d].%s", i, n) }
		if st.ID == nil || *st.ID == "" {
			return Invalid(f("id"), "required")
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
	}
	return nil
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
