package fleet

import (
	"encoding/json"
	"strings"
	"time"
)

// LoadingKinds are the kinds of a loading event.
var LoadingKinds = []string{"arrived", "loaded", "unloaded", "departed", "exception"}

var loadingKinds = func() map[string]bool {
	m := make(map[string]bool, len(LoadingKinds))
	for _, k := range LoadingKinds {
		m[k] = true
	}
	return m
}()

// LoadingEvent is a warehouse event as a terminal sends it (POST
// /v1/loading-events) and the loading table keeps it:
// {"terminal","dock","shipment","kind","pallets","ts"}. Pointers tell a
// missing field from a zero one.
type LoadingEvent struct {
	Terminal *string `json:"terminal"`
	Dock     *string `json:"dock"`
	Shipment *string `json:"shipment"`
	Kind     *string `json:"kind"`
	Pallets  *int64  `json:"pallets"`
	TS       *string `json:"ts"`
}

// Check validates a loading event: terminal, dock and shipment of 1 to 256
// characters, a kind of LoadingKinds, pallets >= 0 and an RFC 3339 ts.
func (e *LoadingEvent) Check() error {
	for _, f := range []struct {
		name string
		v    *string
	}{{"terminal", e.Terminal}, {"dock", e.Dock}, {"shipment", e.Shipment}} {
		if f.v == nil || *f.v == "" {
			return Invalid(f.name, "required (a non-empty string)")
		}
		if len(*f.v) > 256 {
			return Invalid(f.name, "longer than 256 characters")
		}
	}
	if e.Kind == nil || !loadingKinds[*e.Kind] {
		return Invalid("kind", "must be one of %s", strings.Join(LoadingKinds, ", "))
	}
	if e.Pallets == nil || *e.Pallets < 0 {
		return Invalid("pallets", "required (an integer >= 0)")
	}
	return checkTime("ts", e.TS, true)
}

// DecodeLoadingEvent decodes (Strict) and checks a loading event body.
func DecodeLoadingEvent(body []byte) (LoadingEvent, error) {
	var e LoadingEvent
	if err := Strict(body, &e); err != nil {
		return e, err
	}
	return e, e.Check()
}

// LoadingValue is a stored loading event read back; TS as stored (Time
// parses it). Fields it does not show are ignored.
type LoadingValue struct {
	Terminal string `json:"terminal"`
	Dock     string `json:"dock"`
	Shipment string `json:"shipment"`
	Kind     string `json:"kind"`
	Pallets  int64  `json:"pallets"`
	TS       string `json:"ts"`
}

// Decode reads a stored loading event; on an error v holds what could be
// read.
func (v *LoadingValue) Decode(b []byte) error { return json.Unmarshal(b, v) }

// Time is the event's ts, or the zero time when it is not RFC 3339.
func (v *LoadingValue) Time() time.Time { return ParseTime(v.TS) }
