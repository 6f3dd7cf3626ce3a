package replica

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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
	if p.fast(b) {
		return nil
	}
	*p = pointValue{}
	if err := json.Unmarshal(b, p); err != nil {
		return err
	}
	if p.Lat == nil || p.Lng == nil {
		return fmt.Errorf("a point needs lat and lng")
	}
	p.LatV, p.LngV, p.TS = *p.Lat, *p.Lng, parseTime(p.TSRaw)
	return nil
}

// fast reads the form the driver endpoint stores — a compact JSON object
// of numbers and strings without escapes — without reflection (json was a
// quarter of the applier's time). It answers false for anything else
// (whitespace, escapes, null, nesting, a key that differs from a field
// only in case), which decode hands to encoding/json.
func (p *pointValue) fast(b []byte) bool {
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	i := 1
	str := func() (string, bool) { // b[i] == '"'
		j := i + 1
		for j < len(b) && b[j] != '"' {
			if b[j] == '\\' || b[j] < 0x20 || b[j] >= 0x80 { // escapes, control, non-ASCII: encoding/json
				return "", false
			}
			j++
		}
		if j >= len(b) {
			return "", false
		}
		v := string(b[i+1 : j])
		i = j + 1
		return v, true
	}
	var lat, lng float64
	var hasLat, hasLng bool
	if b[i] == '}' {
		i++
	}
	for i < len(b) && b[i-1] != '}' {
		if b[i] != '"' {
			return false
		}
		key, ok := str()
		if !ok || i >= len(b) || b[i] != ':' {
			return false
		}
		i++
		if i >= len(b) {
			return false
		}
		var num string
		var sv string
		isStr := b[i] == '"'
		if isStr {
			if sv, ok = str(); !ok {
				return false
			}
		} else {
			if b[i] != '-' && (b[i] < '0' || b[i] > '9') {
				return false
			}
			j := i
			for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
				j++
			}
			num, i = string(b[i:j]), j
			if !jsonNumber(num) {
				return false
			}
		}
		var err error
		switch key {
		case "seq":
			if isStr {
				return false
			}
			p.Seq, err = strconv.ParseUint(num, 10, 64)
		case "lat":
			if isStr {
				return false
			}
			lat, err = strconv.ParseFloat(num, 64)
			hasLat = true
		case "lng":
			if isStr {
				return false
			}
			lng, err = strconv.ParseFloat(num, 64)
			hasLng = true
		case "speed_kmh":
			if isStr {
				return false
			}
			p.SpeedKmh, err = strconv.ParseFloat(num, 64)
		case "heading":
			if isStr {
				return false
			}
			p.Heading, err = strconv.ParseFloat(num, 64)
		case "ts":
			if !isStr {
				return false
			}
			p.TSRaw = sv
		default:
			for _, f := range pointFields {
				if strings.EqualFold(key, f) {
					return false // encoding/json matches field names in any case
				}
			}
		}
		if err != nil || i >= len(b) || (b[i] != ',' && b[i] != '}') {
			return false
		}
		i++
	}
	if i != len(b) || b[i-1] != '}' || !hasLat || !hasLng {
		return false
	}
	p.Lat, p.Lng = &lat, &lng
	p.LatV, p.LngV, p.TS = lat, lng, parseTime(p.TSRaw)
	return true
}

// jsonNumber reports whether s is a number in JSON's grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func jsonNumber(s string) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

var pointFields = []string{"seq", "lat", "lng", "speed_kmh", "heading", "ts"}

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
