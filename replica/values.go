package replica

import (
	"time"

	"routehound/fleet"
)

// The values of the built-in tables as the actors' endpoints store them
// (package fleet reads them). Fields the replica does not show are
// ignored, so the endpoints may add fields.

type decoder interface{ decode([]byte) error }

// pointValue is a driver point (fleet.PointValue) in the applier's terms.
type pointValue struct {
	Seq                           uint64
	LatV, LngV, SpeedKmh, Heading float64
	TS                            time.Time
}

func (p *pointValue) decode(b []byte) error {
	var v fleet.PointValue
	if err := v.Decode(b); err != nil {
		return err
	}
	*p = pointValue{Seq: v.Seq, LatV: v.Lat, LngV: v.Lng, SpeedKmh: v.SpeedKmh, Heading: v.Heading, TS: v.TS}
	return nil
}

// assignmentValue is a stored assignment (fleet.AssignmentValue).
type assignmentValue struct{ fleet.AssignmentValue }

func (v *assignmentValue) decode(b []byte) error { return v.Decode(b) }

// loadingValue is a stored loading event (fleet.LoadingValue).
type loadingValue struct{ fleet.LoadingValue }

func (v *loadingValue) decode(b []byte) error { return v.Decode(b) }
