package osmand

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SpeedUnit is the unit of the query/form `speed` field. The apps send
// knots (Traccar's internal unit) unless the fleet configured otherwise;
// the JSON body of Traccar Client 9.x always carries m/s.
type SpeedUnit string

// Speed units of [osmand] speed_unit.
const (
	Knots SpeedUnit = "knots"
	KMH   SpeedUnit = "kmh"
	MPS   SpeedUnit = "mps"
	MPH   SpeedUnit = "mph"
)

// kmh converts v in unit u to km/h.
func (u SpeedUnit) kmh(v float64) float64 {
	switch u {
	case KMH:
		return v
	case MPS:
		return v * 3.6
	case MPH:
		return v * 1.609344
	}
	return v * 1.852
}

// Valid reports whether u is one of the known units.
func (u SpeedUnit) Valid() bool { return u == Knots || u == KMH || u == MPS || u == MPH }

// Options are the settings Decode needs besides the request.
type Options struct {
	SpeedUnit SpeedUnit      // unit of the query/form speed (default knots)
	Zone      *time.Location // zone of a "yyyy-MM-dd HH:mm:ss" timestamp (default UTC)
	Now       time.Time      // time of receipt: the fix time of a request without one
}

// Limits on what one request may carry.
const (
	// MaxAttrs bounds the extra fields kept as attributes; a request with
	// more is malformed (quarantined, not lost).
	MaxAttrs = 64
	// maxFuture: a fix more than this ahead of the receipt time is
	// malformed. A phone with a wild clock would otherwise push its
	// driver's seq (which follows the fix time) far ahead for good.
	maxFuture = 24 * time.Hour
)

// minFix is the earliest fix time accepted (GPS week-rollover bugs and
// unset clocks give 1980 or 1970 dates).
var minFix = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Errors of Decode. A malformed request wraps ErrMalformed (its Report
// still carries the device id when one was found, for the quarantine).
var (
	ErrNoDevice  = errors.New("osmand: no device id (id, deviceid or device_id)")
	ErrMalformed = errors.New("osmand: malformed request")
)

func malformed(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
}

// Report is one decoded request: a position, or (Position false) a status
// such as a heartbeat or a battery report.
type Report struct {
	Device   string
	Position bool
	Lat, Lon float64
	Fix      time.Time // UTC, millisecond precision; the receipt time when FixGiven is false
	FixGiven bool
	SpeedKmh *float64
	Heading  *float64 // degrees 0..360
	Altitude *float64 // metres
	Accuracy *float64 // metres
	HDOP     *float64
	Battery  *float64 // percent
	Charging *bool
	Attrs    map[string]any // every other field, as a string, number or bool
}

// Decode reads one request of the OsmAnd protocol. rawQuery is the URL's
// query string, contentType and body the request's. Fields come from the
// query and, for a form body, from the body too (the body wins); a JSON
// body (Traccar Client 9.x) is read instead of a form. It is a pure
// function of its arguments.
func Decode(rawQuery, contentType string, body []byte, opt Options) (Report, error) {
	if opt.Zone == nil {
		opt.Zone = time.UTC
	}
	if opt.SpeedUnit == "" {
		opt.SpeedUnit = Knots
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		(mt == "" && len(bytes.TrimSpace(body)) > 0 && bytes.TrimSpace(body)[0] == '{') {
		return decodeJSON(rawQuery, body, opt)
	}
	fields, perr := parseFields(rawQuery)
	if mt == "application/x-www-form-urlencoded" && len(body) > 0 {
		form, err := parseFields(string(body))
		fields.merge(form)
		perr = errors.Join(perr, err)
	}
	var r Report
	r.Device = fields.take("id", "deviceid")
	if r.Device == "" {
		return r, ErrNoDevice
	}
	if perr != nil {
		return r, malformed("query", "%v", perr)
	}
	return r, r.fromFields(fields, opt)
}

// fields are the request's name → value pairs; a later value of a name
// replaces an earlier one (as Traccar reads them).
type fields struct {
	m     map[string]string
	order []string // first-seen order, for stable attributes
}

func parseFields(raw string) (fields, error) {
	f := fields{m: map[string]string{}}
	var firstErr error
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k1, err1 := url.QueryUnescape(k)
		v1, err2 := url.QueryUnescape(v)
		if err := errors.Join(err1, err2); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("field %.40q: %w", k, err)
			}
			continue
		}
		f.set(k1, v1)
	}
	return f, firstErr
}

func (f *fields) set(k, v string) {
	if _, ok := f.m[k]; !ok {
		f.order = append(f.order, k)
	}
	f.m[k] = v
}

func (f *fields) merge(o fields) {
	for _, k := range o.order {
		f.set(k, o.m[k])
	}
}

// take returns the value of the first present name (in names' order) and
// removes every one of them, so that what remains are the attributes.
func (f *fields) take(names ...string) string {
	v, found := "", false
	for _, n := range names {
		if x, ok := f.m[n]; ok {
			if !found {
				v, found = x, true
			}
			delete(f.m, n)
		}
	}
	return strings.TrimSpace(v)
}

func (r *Report) fromFields(f fields, opt Options) error {
	lat, lon := f.take("lat"), f.take("lon")
	if loc := f.take("location"); loc != "" && lat == "" && lon == "" {
		a, b, ok := strings.Cut(loc, ",")
		if !ok {
			return malformed("location", "%.40q is not lat,lon", loc)
		}
		lat, lon = strings.TrimSpace(a), strings.TrimSpace(b)
	}
	if err := r.setPosition(lat, lon); err != nil {
		return err
	}
	if err := r.setTime(f.take("timestamp"), opt); err != nil {
		return err
	}
	var err error
	if s := f.take("speed"); s != "" {
		v, err := number("speed", s)
		if err != nil {
			return err
		}
		if err := r.setSpeed(v, opt.SpeedUnit); err != nil {
			return err
		}
	}
	if s := f.take("bearing", "heading"); s != "" {
		v, err := number("bearing", s)
		if err != nil {
			return err
		}
		if err := r.setHeading(v); err != nil {
			return err
		}
	}
	if r.Altitude, err = optNumber("altitude", f.take("altitude")); err != nil {
		return err
	}
	if r.Accuracy, err = optNumber("accuracy", f.take("accuracy")); err != nil {
		return err
	}
	if r.HDOP, err = optNumber("hdop", f.take("hdop")); err != nil {
		return err
	}
	if s := f.take("batt"); s != "" {
		v, err := number("batt", s)
		if err != nil {
			return err
		}
		r.setBattery(v)
	}
	if s := f.take("charge"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return malformed("charge", "%.40q is not true or false", s)
		}
		r.Charging = &b
	}
	for _, k := range f.order {
		v, ok := f.m[k]
		if !ok {
			continue
		}
		if err := r.attr(k, scalar(v)); err != nil {
			return err
		}
	}
	return nil
}

// scalar keeps a field as a number when it reads as a finite one, else as
// the string sent.
func scalar(v string) any {
	if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return f
	}
	return v
}

func (r *Report) attr(k string, v any) error {
	if r.Attrs == nil {
		r.Attrs = map[string]any{}
	}
	if _, ok := r.Attrs[k]; !ok && len(r.Attrs) >= MaxAttrs {
		return malformed("attributes", "more than %d extra fields", MaxAttrs)
	}
	r.Attrs[k] = v
	return nil
}

// number parses a decimal number, exponent forms (1.0E-4) included;
// NaN and infinities are malformed.
//
// A "+" sent unencoded in a query reads as a space ("1.5e+3" arrives as
// "1.5e 3"); it is put back, as in an ISO 8601 offset.
func number(field, s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.ReplaceAll(strings.TrimSpace(s), " ", "+"), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, malformed(field, "%.40q is not a number", s)
	}
	return v, nil
}

func optNumber(field, s string) (*float64, error) {
	if s == "" {
		return nil, nil
	}
	v, err := number(field, s)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// setPosition: both coordinates or neither (a status report).
func (r *Report) setPosition(lat, lon string) error {
	if lat == "" && lon == "" {
		return nil
	}
	if lat == "" || lon == "" {
		return malformed("lat/lon", "one coordinate without the other")
	}
	a, err := number("lat", lat)
	if err != nil {
		return err
	}
	o, err := number("lon", lon)
	if err != nil {
		return err
	}
	return r.setCoords(a, o)
}

func (r *Report) setCoords(lat, lon float64) error {
	if lat < -90 || lat > 90 {
		return malformed("lat", "%v is outside -90..90", lat)
	}
	if lon < -180 || lon > 180 {
		return malformed("lon", "%v is outside -180..180", lon)
	}
	r.Lat, r.Lon, r.Position = lat, lon, true
	return nil
}

// setSpeed stores a speed in unit u as km/h; a negative speed means
// unknown (the apps send -1).
func (r *Report) setSpeed(v float64, u SpeedUnit) error {
	if v < 0 {
		return nil
	}
	k := u.kmh(v)
	if k > 1000 {
		return malformed("speed", "%v %s is over 1000 km/h", v, u)
	}
	k = math.Round(k*1000) / 1000
	r.SpeedKmh = &k
	return nil
}

// setHeading: a negative heading means unknown.
func (r *Report) setHeading(v float64) error {
	if v < 0 {
		return nil
	}
	if v > 360 {
		return malformed("bearing", "%v is outside 0..360", v)
	}
	r.Heading = &v
	return nil
}

// setBattery: percent; a negative level means unknown.
func (r *Report) setBattery(pct float64) {
	if pct < 0 {
		return
	}
	pct = math.Round(pct*100) / 100
	r.Battery = &pct
}

// setTime applies the timestamp rules: a number below 2147483647 is Unix
// seconds (a fraction is kept to the millisecond), a larger one
// milliseconds; a value with a T is ISO 8601 (an
// offset, or else the configured zone); anything else is
// "yyyy-MM-dd HH:mm:ss" in the configured zone; absent is the receipt time.
func (r *Report) setTime(s string, opt Options) error {
	if s == "" {
		r.Fix = opt.Now.UTC().Truncate(time.Millisecond)
		return nil
	}
	t, ok := parseTime(s, opt.Zone)
	if !ok {
		return malformed("timestamp", "%.40q is neither Unix seconds, milliseconds, ISO 8601 nor yyyy-MM-dd HH:mm:ss", s)
	}
	if t.Before(minFix) {
		return malformed("timestamp", "%s is before 2000", t.UTC().Format(time.RFC3339))
	}
	if !opt.Now.IsZero() && t.After(opt.Now.Add(maxFuture)) {
		return malformed("timestamp", "%s is more than %v ahead of the receipt time", t.UTC().Format(time.RFC3339), maxFuture)
	}
	r.Fix, r.FixGiven = t.UTC().Truncate(time.Millisecond), true
	return nil
}

// isoLayouts are the ISO 8601 forms the apps send, with an offset as
// +01:00, +0100 or Z; localLayouts those without one (read in the
// configured zone). Go accepts a fraction after the seconds when parsing
// even if the layout has none.
var isoLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04Z07:00",
}

var localLayouts = []string{
	"2006-01-02T15:04:05",
	"2006-01-02T15:04",
}

func parseTime(s string, zone *time.Location) (time.Time, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return unixTime(n)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// 1.7E9, 1.7E12 or 1763899200.123: the same rule; a fraction
		// of a second is kept to the millisecond.
		switch {
		case math.IsNaN(f) || math.Abs(f) > 1e15:
			return time.Time{}, false
		case f < 2147483647:
			return time.UnixMilli(int64(math.Round(f * 1000))), f > -1e12
		}
		return time.UnixMilli(int64(f)), true
	}
	if strings.ContainsRune(s, 'T') {
		s = strings.ReplaceAll(s, " ", "+") // an unencoded "+01:00" (see number)
		for _, l := range isoLayouts {
			if t, err := time.Parse(l, s); err == nil {
				return t, true
			}
		}
		for _, l := range localLayouts {
			if t, err := time.ParseInLocation(l, s, zone); err == nil {
				return t, true
			}
		}
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05", s, zone)
	return t, err == nil
}

func unixTime(n int64) (time.Time, bool) {
	if n < 2147483647 {
		if n < -1e12 {
			return time.Time{}, false
		}
		return time.Unix(n, 0), true
	}
	if n > 1e15 { // past year 33000: not a time
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}
