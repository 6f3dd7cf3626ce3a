package fleet

import (
	"strconv"
	"strings"
	"unsafe"
)

// The driver body's fast path. Nearly every body a driver sends is an
// array of compact objects with the six known fields, plain numbers and an
// ASCII ts: scanPoints decodes exactly those, by hand, and gives up on
// anything else (whitespace inside an object, escapes, null, an unknown or
// repeated key, a number JSON allows but a field does not, any syntax
// error), leaving the body to the encoding/json path (decodePointsJSON),
// which gives every refusal its message. So the fast path only ever says
// "yes, and here are the points"; it never refuses, and what it accepts
// is what the JSON path accepts, with the same seqs and values
// (FuzzScanPointsAgrees).

// scanPoints decodes body (one point or an array of them) on the fast
// path. ok is false when it gave up: the caller decodes body with
// encoding/json instead. A point the fast path decoded but that fails
// Check is also left to the JSON path, which refuses it.
func scanPoints(body []byte, maxPoints int) (pts []RawPoint, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) {
		return nil, false
	}
	if body[i] == '{' {
		p, end, ok := scanPoint(body, i, -1)
		if !ok || skipSpace(body, end) != len(body) {
			return nil, false
		}
		return []RawPoint{p}, true
	}
	if body[i] != '[' {
		return nil, false
	}
	// One point is about 100 bytes: allocate once for the common case.
	pts = make([]RawPoint, 0, max(0, min(maxPoints, len(body)/64+1)))
	i = skipSpace(body, i+1)
	for n := 0; ; n++ {
		if n >= maxPoints || i >= len(body) || body[i] != '{' {
			return nil, false // too many, empty, or not an object
		}
		p, end, ok := scanPoint(body, i, n)
		if !ok {
			return nil, false
		}
		pts = append(pts, p)
		i = skipSpace(body, end)
		if i >= len(body) {
			return nil, false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case ']':
			if skipSpace(body, i+1) != len(body) {
				return nil, false
			}
			return pts, true
		default:
			return nil, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// Field bits of a scanned point: each field at most once.
const (
	fSeq = 1 << iota
	fLat
	fLng
	fTS
	fSpeed
	fHeading
)

// scanPoint decodes the compact object at body[start] (body[start] is
// '{'): the point, the offset just past its '}', and ok. idx is its index
// in the array (-1: a single point), for Check.
func scanPoint(body []byte, start, idx int) (RawPoint, int, bool) {
	var (
		seq                   uint64
		lat, lng, speed, head float64
		ts                    string
		seen                  int
		i                     = start + 1
	)
	if i < len(body) && body[i] == '}' {
		return RawPoint{}, 0, false // {}: the JSON path says what is missing
	}
	for {
		// "key":
		if i >= len(body) || body[i] != '"' {
			return RawPoint{}, 0, false
		}
		k := i + 1
		j := k
		for j < len(body) && body[j] >= 'a' && body[j] <= 'z' || j < len(body) && body[j] == '_' {
			j++
		}
		if j >= len(body) || body[j] != '"' || j+1 >= len(body) || body[j+1] != ':' {
			return RawPoint{}, 0, false
		}
		key := body[k:j]
		i = j + 2
		var bit int
		switch string(key) {
		case "seq":
			bit = fSeq
		case "lat":
			bit = fLat
		case "lng":
			bit = fLng
		case "ts":
			bit = fTS
		case "speed_kmh":
			bit = fSpeed
		case "heading":
			bit = fHeading
		default:
			return RawPoint{}, 0, false // unknown, or another case: encoding/json folds case
		}
		if seen&bit != 0 {
			return RawPoint{}, 0, false
		}
		seen |= bit
		var ok bool
		switch bit {
		case fSeq:
			seq, i, ok = scanUint(body, i)
		case fTS:
			ts, i, ok = scanASCIIString(body, i)
		default:
			var v float64
			v, i, ok = scanFloat(body, i)
			switch bit {
			case fLat:
				lat = v
			case fLng:
				lng = v
			case fSpeed:
				speed = v
			case fHeading:
				head = v
			}
		}
		if !ok || i >= len(body) {
			return RawPoint{}, 0, false
		}
		switch body[i] {
		case ',':
			i++
			continue
		case '}':
		default:
			return RawPoint{}, 0, false
		}
		break
	}
	end := i + 1
	p := Point{}
	if seen&fSeq != 0 {
		p.Seq = &seq
	}
	if seen&fLat != 0 {
		p.Lat = &lat
	}
	if seen&fLng != 0 {
		p.Lng = &lng
	}
	if seen&fTS != 0 {
		p.TS = &ts
	}
	if seen&fSpeed != 0 {
		p.SpeedKmh = &speed
	}
	if seen&fHeading != 0 {
		p.Heading = &head
	}
	if p.Check(idx) != nil {
		return RawPoint{}, 0, false
	}
	return RawPoint{Seq: seq, Value: body[start:end:end]}, end, true
}

// scanUint reads a JSON integer that fits a uint64 (what encoding/json
// takes for a uint64: no sign, fraction or exponent).
func scanUint(b []byte, i int) (uint64, int, bool) {
	s := i
	var v uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		d := uint64(b[i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, i, false // overflows: the JSON path refuses it
		}
		v = v*10 + d
		i++
	}
	if i == s || (b[s] == '0' && i-s > 1) {
		return 0, i, false // no digits, or a leading zero (invalid JSON)
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, i, false
	}
	return v, i, true
}

// scanFloat reads a JSON number (its exact grammar) and parses it as
// encoding/json does: strconv.ParseFloat, 64 bits.
func scanFloat(b []byte, i int) (float64, int, bool) {
	s := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	d := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == d || (b[d] == '0' && i-d > 1) {
		return 0, i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		f := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == f {
			return 0, i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		f := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == f {
			return 0, i, false
		}
	}
	num := b[s:i]
	// ParseFloat does not keep its argument: no copy of the bytes.
	v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(num), len(num)), 64)
	if err != nil {
		return 0, i, false // out of range: the JSON path refuses it
	}
	return v, i, true
}

// scanASCIIString reads a JSON string of printable ASCII without escapes
// (an RFC 3339 time is one); anything else is left to the JSON path.
func scanASCIIString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	i++
	s := i
	for i < len(b) && b[i] != '"' {
		if c := b[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return "", i, false
		}
		i++
	}
	if i >= len(b) {
		return "", i, false
	}
	// The string is only read by Check while body is alive and unchanged.
	return unsafe.String(unsafe.SliceData(b[s:i]), i-s), i + 1, true
}

// ScanPlace reads lat, lng and ts (as sent) of a stored point — the
// compact object the driver endpoint and the phone listener store — by
// hand, for the fleet-events consumer, which reads every point of a
// driver on a route. It gives up (ok false) on anything it does not take
// exactly as encoding/json would read it into {"lat": *float64, "lng":
// *float64, "ts": *string} with the other keys ignored: whitespace,
// escapes, non-ASCII, null, nesting, a key repeated or not all lowercase
// ASCII, lat, lng or ts missing or of another type, anything after the
// object. The caller then uses encoding/json; what ScanPlace takes, that
// path reads the same (FuzzScanPlaceAgrees). ts is a copy.
func ScanPlace(b []byte) (lat, lng float64, ts string, ok bool) {
	if len(b) < 2 || b[0] != '{' {
		return 0, 0, "", false
	}
	const (
		hasLat = 1 << iota
		hasLng
		hasTS
	)
	seen := 0
	i := 1
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, 0, "", false
		}
		k := i + 1
		j := k
		for j < len(b) && (b[j] >= 'a' && b[j] <= 'z' || b[j] == '_') {
			j++
		}
		if j >= len(b) || b[j] != '"' || j+1 >= len(b) || b[j+1] != ':' {
			return 0, 0, "", false // another byte in the key, or no colon
		}
		key := b[k:j]
		i = j + 2
		if i >= len(b) {
			return 0, 0, "", false
		}
		bit := 0
		switch string(key) {
		case "lat":
			bit = hasLat
		case "lng":
			bit = hasLng
		case "ts":
			bit = hasTS
		}
		if bit != 0 {
			if seen&bit != 0 {
				return 0, 0, "", false // repeated: encoding/json takes the last
			}
			seen |= bit
		}
		var good bool
		switch {
		case bit == hasTS:
			var s string
			if s, i, good = scanASCIIString(b, i); good {
				ts = strings.Clone(s) // s points into b
			}
		case bit != 0:
			var v float64
			if v, i, good = scanFloat(b, i); good {
				if bit == hasLat {
					lat = v
				} else {
					lng = v
				}
			}
		case b[i] == '"':
			_, i, good = scanASCIIString(b, i)
		case b[i] == 't' && len(b)-i >= 4 && string(b[i:i+4]) == "true":
			i, good = i+4, true
		case b[i] == 'f' && len(b)-i >= 5 && string(b[i:i+5]) == "false":
			i, good = i+5, true
		default:
			_, i, good = scanFloat(b, i)
		}
		if !good || i >= len(b) {
			return 0, 0, "", false
		}
		switch b[i] {
		case ',':
			i++
			continue
		case '}':
			if i+1 != len(b) || seen != hasLat|hasLng|hasTS {
				return 0, 0, "", false
			}
			return lat, lng, ts, true
		}
		return 0, 0, "", false
	}
}
