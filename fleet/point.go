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
	"unsafe"
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
// The form the driver endpoint's clients and AppendJSON write, UTC with
// "Z", is read by hand (time.Parse was the largest part of reading a
// stored point); anything else goes to time.Parse.
func ParseTime(s string) time.Time {
	if t, ok := parseTimeZ(s); ok {
		return t
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// parseTimeZ reads "2006-01-02T15:04:05Z", with 1 to 9 digits of a
// fraction of a second or none, every field in range: the time
// time.Parse(time.RFC3339Nano, s) answers, to the bit (in UTC, no
// monotonic reading; FuzzParseTimeAgrees). ok is false for anything else
// (an offset, a comma, a longer fraction, a field out of range), which
// the caller hands to time.Parse.
func parseTimeZ(s string) (t time.Time, ok bool) {
	const n = len("2006-01-02T15:04:05Z")
	if len(s) < n || s[len(s)-1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	ok = true
	num := func(from, to int) int {
		v := 0
		for _, c := range []byte(s[from:to]) {
			if c < '0' || c > '9' {
				ok = false
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 7), num(8, 10)
	hour, min, sec := num(11, 13), num(14, 16), num(17, 19)
	nsec := 0
	if frac := s[19 : len(s)-1]; frac != "" {
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return time.Time{}, false
		}
		nsec = num(20, len(s)-1)
		for range 10 - len(frac) {
			nsec *= 10
		}
	}
	if !ok || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || min > 59 || sec > 59 {
		return time.Time{}, false
	}
	// Days since 1970-01-01 of the proleptic Gregorian date (the civil
	// calendar's algorithm, H. Hinnant): what time.Date computes.
	y := int64(year)
	if month <= 2 {
		y--
	}
	era := y / 400 // year >= 0, so y >= -1: floor only matters at -1
	if y < 0 {
		era = -1
	}
	yoe := y - era*400
	m := int64(month)
	if m > 2 {
		m -= 3
	} else {
		m += 9
	}
	doy := (153*m+2)/5 + int64(day) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	days := era*146097 + doe - 719468
	return time.Unix(days*86400+int64(hour*3600+min*60+sec), int64(nsec)).UTC(), true
}

// daysIn is the number of days of month (1..12) in year.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
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
// of numbers and strings without escapes — by hand, without reflection
// or allocation (reading each point was a third of the replica
// applier's time). It answers false for anything else (whitespace,
// escapes, null, nesting, a key that differs from a field only in case),
// which Decode hands to encoding/json; what it takes, it reads as the
// decoder before it did (FuzzPointValueAgrees), and as encoding/json
// does (FuzzPointDecode).
func (p *PointValue) fast(b []byte) bool {
	if len(b) < 3 || b[0] != '{' || b[1] == '}' {
		return false
	}
	// plain is the end of the string whose opening quote is at b[i]: ASCII
	// from 0x20 without a backslash, or -1.
	plain := func(i int) int {
		for j := i + 1; j < len(b); j++ {
			switch c := b[j]; {
			case c == '"':
				return j
			case c == '\\' || c < 0x20 || c >= 0x80: // escapes, control, non-ASCII: encoding/json
				return -1
			}
		}
		return -1
	}
	var v PointValue
	var ts []byte
	var hasLat, hasLng bool
	i := 1
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		j := plain(i)
		if j < 0 || j+2 >= len(b) || b[j+1] != ':' {
			return false
		}
		key := b[i+1 : j]
		i = j + 2
		if b[i] == '"' {
			j = plain(i)
			if j < 0 {
				return false
			}
			switch string(key) {
			case "ts":
				ts = b[i+1 : j]
			case "seq", "lat", "lng", "speed_kmh", "heading":
				return false
			default:
				if isPointField(key) {
					return false
				}
			}
			i = j + 1
		} else {
			j = i
			for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
				j++
			}
			num := b[i:j]
			if !jsonNumber(num) {
				return false
			}
			ok := true
			switch string(key) {
			case "seq":
				v.Seq, ok = parseUint(num)
			case "lat":
				v.Lat, ok = parseFloat(num)
				hasLat = true
			case "lng":
				v.Lng, ok = parseFloat(num)
				hasLng = true
			case "speed_kmh":
				v.SpeedKmh, ok = parseFloat(num)
			case "heading":
				v.Heading, ok = parseFloat(num)
			case "ts":
				return false
			default:
				ok = !isPointField(key)
			}
			if !ok {
				return false
			}
			i = j
		}
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return false
		}
		i++
	}
	if i+1 != len(b) || !hasLat || !hasLng {
		return false
	}
	// ParseTime keeps nothing of its argument: no copy of the bytes.
	v.TS = ParseTime(unsafe.String(unsafe.SliceData(ts), len(ts)))
	*p = v
	return true
}

// isPointField reports whether key is a field of a point in another case
// (encoding/json matches field names in any case).
func isPointField(key []byte) bool {
	for _, f := range pointFields {
		if len(key) == len(f) && strings.EqualFold(unsafe.String(unsafe.SliceData(key), len(key)), f) {
			return true
		}
	}
	return false
}

// parseUint is strconv.ParseUint(num, 10, 64) of a JSON number: ok false
// for a sign, a fraction, an exponent or an overflow.
func parseUint(num []byte) (uint64, bool) {
	var v uint64
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, len(num) > 0
}

// float64pow10 are the powers of ten a float64 holds exactly.
var float64pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// parseFloat is strconv.ParseFloat(num, 64) of a JSON number, to the bit:
// a number of at most 15 digits and no exponent is an integer below 2^53
// divided by a power of ten, both exact in a float64, so one IEEE
// division rounds it correctly (strconv's own exact case); anything else
// goes to strconv. ok is false where strconv fails (out of range).
func parseFloat(num []byte) (float64, bool) {
	i, neg := 0, false
	if len(num) > 0 && num[0] == '-' {
		i, neg = 1, true
	}
	var mant uint64
	digits, frac, dot := 0, 0, false
	for ; i < len(num); i++ {
		c := num[i]
		switch {
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if dot {
				frac++
			}
		case c == '.' && !dot:
			dot = true
		default:
			digits = 16 // an exponent, or not a number: strconv
		}
		if digits > 15 {
			break
		}
	}
	if digits == 0 || digits > 15 {
		v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(num), len(num)), 64)
		return v, err == nil
	}
	f := float64(mant)
	if neg {
		f = -f
	}
	return f / float64pow10[frac], true
}

// jsonNumber reports whether s is a number in JSON's grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func jsonNumber(s []byte) bool {
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
