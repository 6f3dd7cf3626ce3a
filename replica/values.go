package replica

import (
	"encoding/json"
	"fmt"
	"time"
)

// The values of the built-in tables as the actors' endpoints store them
// (DESIGN.md, interface contract). Fields the replica does not show are
// ignored, so the endpoints may add fields.

type decoder interface{ decode([]byte) error }

// pointValue is a driver point: {"seq","lat","lng","ts","speed_kmh","heading"}.
type pointValue struct {
	Seq      uint64   `json:"seq"`
	Lat      *float64 `json:"lat"`
	Lng      *float64 `json:"lng"`
	TSRaw    string   `json:"ts"`
	SpeedKmh float64  `json:"speed_kmh"`
	Heading  float64  `json:"heading"`

	LatV, LngV float64   `json:"-"`
	TS         time.Time `json:"-"`
}

func (p *pointValue) decode(b []byte) error {
	if err := json.Unmarshal(b, p); err != nil {
		return err
	}
	if p.Lat == nil || p.Lng == nil {
		return fmt.Errorf("a point needs lat and lng")
	}
	p.LatV, p.LngV, p.TS = *p.Lat, *p.Lng, parseTime(p.TSRaw)
	return nil
}

// assignmentValue is {"driver","stops":[{"id","lat","lng","eta"}],"note"}.
type assignmentValue struct {
	Driver string            `json:"driver"`
	Stops  []json.RawMessage `json:"stops"`
	Note   string            `json:"note"`
}

func (v *assignmentValue) decode(b []byte) error { return json.Unmarshal(b, v) }

// loadingValue is {"terminal","dock","shipment","kind","pallets","ts"}.
type loadingValue struct {
	Terminal string `json:"terminal"`
	Dock     string `json:"dock"`
	Shipment string `json:"shipment"`
	Kind     string `json:"kind"`
	Pallets  int64  `json:"pallets"`
	TS       string `json:"ts"`
}

func (v *loadingValue) decode(b []byte) error { return json.Unmarshal(b, v) }
