package replica

import "routehound/fleet"

// The values of the built-in tables as the actors' endpoints store them
// (package fleet reads them). Fields the replica does not show are
// ignored, so the endpoints may add fields.

type decoder interface{ decode([]byte) error }

// assignmentValue is a stored assignment (fleet.AssignmentValue).
type assignmentValue struct{ fleet.AssignmentValue }

func (v *assignmentValue) decode(b []byte) error { return v.Decode(b) }

// loadingValue is a stored loading event (fleet.LoadingValue).
type loadingValue struct{ fleet.LoadingValue }

func (v *loadingValue) decode(b []byte) error { return v.Decode(b) }
