package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Point is a driver location update as a driver sends it (the driver API,
// the driver stream): {"seq","lat","lng","ts","speed_kmh","heading"}.
// Pointers tell a missing field from a zero one.
type Point struct {
	Seq      *uint64  `json:"seq"`
	Lat      *float64 `json:"lat"`
	Lng      *float64 `json:"lng"`
	TS       *string  `json:"ts"`
	SpeedKmh *float64 `json:"speed_kmh"`
	Heading  *float64 `json:"heading"`
}

// MaxSeq is the highest seq a driver may send: 2^53, the largest integer
// every JSON reader (a float64) holds exactly. A larger one would make
// every later point of the driver a duplicate, across restarts (an admin
// repairs such a driver with POST /v1/admin/drivers/{driver}/reset).
const MaxSeq = 1 << 53

// Check validates a point: seq in 1..MaxSeq, lat and lng in range, ts an RFC 3339
// time, speed_kmh in 0..1000 and heading in 0..360 when given. i is the
// point's index in an array (its fields are refused as "[i].lat"), or -1
// for a single point.
func (p *Point) Check(i int) error {
	// Field names are built only for an error: this runs once per point.
	at := func(f string) string {
		if i < 0 {
			return f
		}
		return "[" + strconv.Itoa(i) + "]." + f
	}
	switch {
	case p.Seq == nil:
		return Invalid(at("seq"), "required (the driver's sequence number, an integer >= 1)")
	case *p.Seq == 0:
		return Invalid(at("seq"), "must be >= 1")
	case *p.Seq > MaxSeq:
		return Invalid(at("seq"), "%d is above the largest seq, 2^53 (%d)", *p.Seq, uint64(MaxSeq))
	case p.Lat == nil || *p.Lat < -90 || *p.Lat > 90:
		return checkLat(at("lat"), p.Lat)
	case p.Lng == nil || *p.Lng < -180 || *p.Lng > 180:
		return checkLng(at("lng"), p.Lng)
	case p.SpeedKmh != nil && (*p.SpeedKmh < 0 || *p.SpeedKmh > 1000):
		return Invalid(at("speed_kmh"), "%v is outside 0..1000", *p.SpeedKmh)
	case p.Heading != nil && (*p.Heading < 0 || *p.Heading > 360):
		return Invalid(at("heading"), "%v is outside 0..360", *p.Heading)
	}
	if err := checkTime("ts", p.TS, true); err != nil {
		return checkTime(at("ts"), p.TS, true)
	}
	return nil
}

func checkLat(field string, v *float64) error {
	if v == nil {
		return Invalid(field, "required")
	}
	if math.IsNaN(*v) || *v < -90 || *v > 90 {
		return Invalid(field, "latitude %v is outside -90..90", *v)
	}
	return nil
}

func checkLng(field string, v *float64) error {
	if v == nil {
		return Invalid(field, "required")
	}
	if math.IsNaN(*v) || *v < -180 || *v > 180 {
		return Invalid(field, "longitude %v is outside -180..180", *v)
	}
	return nil
}

func checkTime(field string, v *string, required bool) error {
	if v == nil {
		if required {
			return Invalid(field, "required (RFC 3339 time)")
		}
		return nil
	}
	if _, err := time.Parse(time.RFC3339Nano, *v); err != nil {
		return Invalid(field, "%q is not an RFC 3339 time", *v)
	}
	return nil
}

// RawPoint is a validated driver point as the log keeps it: its seq and
// its JSON as sent (compacted).
type RawPoint struct {
	Seq   uint64
	Value []byte
}

// DecodePoints validates a driver body (one point or an array) whole: one
// bad point refuses the batch (a BodyError; too_many_points past
// maxPoints). Each point's value is its JSON as sent (compacted). An array
// is decoded in one pass: each point's bytes are cut from the body at the
// decoder's offsets, not decoded twice.
func DecodePoints(body []byte, maxPoints int) ([]RawPoint, error) {
	if pts, ok := scanPoints(body, maxPoints); ok {
		return pts, nil
	}
	return decodePointsJSON(body, maxPoints)
}

// decodePointsJSON is DecodePoints with encoding/json: every body the fast
// path (pointscan.go) leaves, and every refusal.
func decodePointsJSON(body []byte, maxPoints int) ([]RawPoint, error) {
	if !IsArray(body) {
		var p Point
		if err := Strict(body, &p); err != nil {
			return nil, err
		}
		if err := p.Check(-1); err != nil {
			return nil, err
		}
		return []RawPoint{{Seq: *p.Seq, Value: Compact(body)}}, nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if _, err := d.Token(); err != nil { // [
		return nil, jsonError(err)
	}
	out := make([]RawPoint, 0, 64)
	for i := 0; d.More(); i++ {
		if i >= maxPoints {
			return nil, bodyErrorf(CodeTooManyPoints, "more than %d points in one request", maxPoints)
		}
		start := d.InputOffset()
		var p Point
		if err := d.Decode(&p); err != nil {
			be := jsonError(err)
			be.Message = fmt.Sprintf("point %d: %s", i, be.Message)
			return nil, be
		}
		if err := p.Check(i); err != nil {
			return nil, err
		}
		raw := bytes.TrimLeft(body[start:d.InputOffset()], " \t\r\n,")
		out = append(out, RawPoint{Seq: *p.Seq, Value: Compact(raw)})
	}
	if _, err := d.Token(); err != nil { // ]
		return nil, jsonError(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, bodyErrorf(CodeBadJSON, "the body holds more than one JSON value")
	}
	if len(out) == 0 {
		return nil, bodyErrorf(CodeBadJSON, "empty array: send at least one point")
	}
	return out, nil
}

// PointValue is a stored point read back (positions, the log), or one to
// send: seq, position, time (zero when absent or not RFC 3339), speed and
// heading (0 when absent). Fields a reader does not show are ignored, so
// the writers may add fields (the phone listener does: PhonePoint).
type PointValue struct {
	Seq      uint64
	Lat, Lng float64
	TS       time.Time
	SpeedKmh float64
	Heading  float64
}

// storedPoint is a point as encoding/json reads it: Decode's slow path.
type storedPoint struct {
	Seq      uint64   `json:"seq"`
	Lat      *float64 `json:"lat"`
	Lng      *float64 `json:"lng"`
	TS       string   `json:"ts"`
	SpeedKmh float64  `json:"speed_kmh"`
	Heading  float64  `json:"heading"`
}

// ParseTime is an RFC 3339 time, or the zero time when s is not one.
func ParseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Decode reads a stored point: an error when b is not a JSON object with
// lat and lng. On an error p holds what could be read (as encoding/json
// leaves it).
func (p *PointValue) Decode(b []byte) error {
	if p.fast(b) {
		return nil
	}
	var s storedPoint
	err := json.Unmarshal(b, &s)
	*p = PointValue{Seq: s.Seq, TS: ParseTime(s.TS), SpeedKmh: s.SpeedKmh, Heading: s.Heading}
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

// fast reads the form the driver endpoint stores — a compact JSON object
// of numbers and strings without escapes — without reflection (json was a
// quarter of the replica applier's time). It answers false for anything
// else (whitespace, escapes, null, nesting, a key that differs from a
// field only in case), which Decode hands to encoding/json.
func (p *PointValue) fast(b []byte) bool {
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
	v.TS = ParseTime(ts)
	*p = v
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

// AppendJSON appends p as the driver API's point, at a phone fix's
// resolution: {"seq","lat","lng","ts","speed_kmh","heading"}, lat and lng
// with 6 decimals (about 0.1 m), speed and heading with one, ts in UTC
// with nanoseconds. The form Decode reads without reflection.
func (p *PointValue) AppendJSON(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, p.Seq, 10)
	b = append(b, `,"lat":`...)
	b = strconv.AppendFloat(b, p.Lat, 'f', 6, 64)
	b = append(b, `,"lng":`...)
	b = strconv.AppendFloat(b, p.Lng, 'f', 6, 64)
	b = append(b, `,"ts":`...)
	b = AppendTime(b, p.TS)
	b = append(b, `,"speed_kmh":`...)
	b = strconv.AppendFloat(b, p.SpeedKmh, 'f', 1, 64)
	b = append(b, `,"heading":`...)
	b = strconv.AppendFloat(b, p.Heading, 'f', 1, 64)
	return append(b, '}')
}

// AppendTime appends t as a JSON string: RFC 3339 in UTC with nanoseconds.
func AppendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
