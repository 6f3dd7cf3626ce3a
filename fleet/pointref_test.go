package fleet

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// refDecode is PointValue.Decode as it was before issue 16's scanner
// (commit 9574d43), copied with only its names changed, as the oracle of FuzzPointValueAgrees.
// It reads a stored point: an error when b is not a JSON object with
// lat and lng. On an error p holds what could be read (as encoding/json
// leaves it).
func refDecode(p *PointValue, b []byte) error {
	if refFast(p, b) {
		return nil
	}
	var s storedPoint
	err := json.Unmarshal(b, &s)
	*p = PointValue{Seq: s.Seq, TS: refParseTime(s.TS), SpeedKmh: s.SpeedKmh, Heading: s.Heading}
	if s.Lat != nil {
		p.Lat = *s.Lat
	}
	if s.Lng != nil {
		p.Lng = *s.Lng
	}
	if err != nil {
		return err
	}
	if s.Lat == nil || s.Lng == nil {
		return fmt.Errorf("a point needs lat and lng")
	}
	return nil
}

// refFast is the fast path of that version. It reads the form the driver endpoint stores — a compact JSON object
// of numbers and strings without escapes — without reflection (json was a
// quarter of the replica applier's time). It answers false for anything
// else (whitespace, escapes, null, nesting, a key that differs from a
// field only in case), which Decode hands to encoding/json.
func refFast(p *PointValue, b []byte) bool {
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
	var v PointValue
	var ts string
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
			if !refJSONNumber(num) {
				return false
			}
		}
		var err error
		switch key {
		case "seq":
			if isStr {
				return false
			}
			v.Seq, err = strconv.ParseUint(num, 10, 64)
		case "lat":
			if isStr {
				return false
			}
			v.Lat, err = strconv.ParseFloat(num, 64)
			hasLat = true
		case "lng":
			if isStr {
				return false
			}
			v.Lng, err = strconv.ParseFloat(num, 64)
			hasLng = true
		case "speed_kmh":
			if isStr {
				return false
			}
			v.SpeedKmh, err = strconv.ParseFloat(num, 64)
		case "heading":
			if isStr {
				return false
			}
			v.Heading, err = strconv.ParseFloat(num, 64)
		case "ts":
			if !isStr {
				return false
			}
			ts = sv
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
	v.TS = refParseTime(ts)
	*p = v
	return true
}

// refJSONNumber reports whether s is a number in JSON's grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func refJSONNumber(s string) bool {
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

// refParseTime is ParseTime of that version.
func refParseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
