package fleet

import (
	"errors"
	"strings"
	"testing"
)

func TestAssignmentCheck(t *testing.T) {
	ok := `{"driver":"van-1","stops":[{"id":"a","lat":52.5,"lng":13.4,"eta":"2026-11-23T10:00:00Z"},{"id":"b","lat":0,"lng":0}],"note":"n"}`
	a, err := DecodeAssignment([]byte(ok))
	if err != nil || *a.Driver != "van-1" || len(*a.Stops) != 2 || *a.Note != "n" {
		t.Fatalf("%+v %v", a, err)
	}
	if _, err := DecodeAssignment([]byte(`{"driver":"d","stops":[]}`)); err != nil {
		t.Fatalf("no stops, no note: %v", err)
	}
	for _, c := range []struct{ body, msg string }{
		{`{"stops":[]}`, `field "driver": required`},
		{`{"driver":"d"}`, `field "stops": required (an array, possibly empty)`},
		{`{"driver":"d","stops":[{"lat":1,"lng":2}]}`, `field "stops[0].id": required`},
		{`{"driver":"d","stops":[{"id":"a","lat":1,"lng":2},{"id":"","lat":1,"lng":2}]}`, `field "stops[1].id": required`},
		{`{"driver":"d","stops":[{"id":"a","lng":2}]}`, `field "stops[0].lat": required`},
		{`{"driver":"d","stops":[{"id":"a","lat":-91,"lng":2}]}`, `field "stops[0].lat": latitude -91 is outside -90..90`},
		{`{"driver":"d","stops":[{"id":"a","lat":1,"lng":200}]}`, `field "stops[0].lng": longitude 200 is outside -180..180`},
		{`{"driver":"d","stops":[{"id":"a","lat":1,"lng":2,"eta":"soon"}]}`, `field "stops[0].eta": "soon" is not an RFC 3339 time`},
		{`{"driver":"d","stops":[],"extra":1}`, `unknown field "extra"`},
	} {
		_, err := DecodeAssignment([]byte(c.body))
		var be *BodyError
		if !errors.As(err, &be) || Message(err) != c.msg {
			t.Errorf("%s: got %v, want %q", c.body, err, c.msg)
		}
	}
	_, err = DecodeAssignment([]byte(`{"driver":"van 1","stops":[]}`))
	if !errors.Is(err, ErrBadName) || Message(err) != `driver "van 1": only letters, digits and . _ - : @ ~ are allowed` {
		t.Fatalf("a bad driver name: %v", err)
	}
}

func TestLoadingEventCheck(t *testing.T) {
	ok := `{"terminal":"t1","dock":"d1","shipment":"s1","kind":"loaded","pallets":0,"ts":"2026-11-23T10:00:00Z"}`
	if _, err := DecodeLoadingEvent([]byte(ok)); err != nil {
		t.Fatal(err)
	}
	for _, kind := range LoadingKinds {
		body := strings.Replace(ok, `"loaded"`, `"`+kind+`"`, 1)
		if _, err := DecodeLoadingEvent([]byte(body)); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	long := strings.Repeat("x", 257)
	for _, c := range []struct{ from, to, msg string }{
		{`"terminal":"t1",`, ``, `field "terminal": required (a non-empty string)`},
		{`"dock":"d1"`, `"dock":""`, `field "dock": required (a non-empty string)`},
		{`"shipment":"s1"`, `"shipment":"` + long + `"`, `field "shipment": longer than 256 characters`},
		{`"kind":"loaded"`, `"kind":"lost"`, `field "kind": must be one of arrived, loaded, unloaded, departed, exception`},
		{`"pallets":0`, `"pallets":-1`, `field "pallets": required (an integer >= 0)`},
		{`"pallets":0,`, ``, `field "pallets": required (an integer >= 0)`},
		{`,"ts":"2026-11-23T10:00:00Z"`, ``, `field "ts": required (RFC 3339 time)`},
		{`"pallets":0`, `"pallets":"many"`, `field "pallets": expected int64, got JSON string`},
	} {
		body := strings.Replace(ok, c.from, c.to, 1)
		_, err := DecodeLoadingEvent([]byte(body))
		if Message(err) != c.msg {
			t.Errorf("%s: got %v, want %q", body, err, c.msg)
		}
	}
}

func TestStoredValues(t *testing.T) {
	var a AssignmentValue
	if err := a.Decode([]byte(`{"driver":"d","stops":[{"id":"a"},{"id":"b"}],"note":"n","extra":1}`)); err != nil || a.Driver != "d" || len(a.Stops) != 2 || a.Note != "n" {
		t.Fatalf("%+v %v", a, err)
	}
	var l LoadingValue
	if err := l.Decode([]byte(`{"terminal":"t","dock":"d","shipment":"s","kind":"loaded","pallets":3,"ts":"2026-11-23T10:00:00Z"}`)); err != nil ||
		l.Dock != "d" || l.Pallets != 3 || l.Time().IsZero() {
		t.Fatalf("%+v %v", l, err)
	}
	if err := l.Decode([]byte(`{"pallets":"many"}`)); err == nil {
		t.Fatal("a string pallets was taken")
	}
	e, err := DeviceEntry{Driver: "anna"}.Encode()
	if err != nil || string(e) != `{"driver":"anna"}` {
		t.Fatalf("%s %v", e, err)
	}
	if d, err := DecodeDeviceEntry(e); err != nil || d.Driver != "anna" {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := DecodeDeviceEntry([]byte(`{}`)); err == nil {
		t.Fatal("an entry without a driver was taken")
	}
}

func TestDeviceRequestCheck(t *testing.T) {
	var r DeviceRequest
	if err := Strict([]byte(`{}`), &r); err != nil {
		t.Fatal(err)
	}
	if m := Message(r.Check()); m != `field "driver": required (the driver whose points this device reports)` {
		t.Fatal(m)
	}
	if err := Strict([]byte(`{"driver":"not ok"}`), &r); err != nil || !errors.Is(r.Check(), ErrBadName) {
		t.Fatalf("%v", r.Check())
	}
	if err := Strict([]byte(`{"driver":"anna"}`), &r); err != nil || r.Check() != nil {
		t.Fatal(err)
	}
}

func TestStrict(t *testing.T) {
	var v struct {
		A int `json:"a"`
	}
	for _, c := range []struct{ body, code, msg string }{
		{`{"a":1,"b":2}`, CodeUnknownField, `unknown field "b"`},
		{`{"a":"x"}`, CodeInvalidField, `field "a": expected int, got JSON string`},
		{`[1]`, CodeBadJSON, `expected struct { A int "json:\"a\"" }, got JSON array`},
		{`{"a":1`, CodeBadJSON, `malformed JSON: unexpected end`},
		{`{"a":1}x`, CodeBadJSON, `the body holds more than one JSON value`},
		{`{"a":}`, CodeBadJSON, `malformed JSON at byte 6: invalid character '}' looking for beginning of value`},
	} {
		err := Strict([]byte(c.body), &v)
		var be *BodyError
		if !errors.As(err, &be) || be.Code != c.code || be.Message != c.msg {
			t.Errorf("%s: got %v, want %s %q", c.body, err, c.code, c.msg)
		}
	}
	if string(Compact([]byte(" { \"a\" : 1 } "))) != `{"a":1}` || string(Compact([]byte(`{"a":1}`))) != `{"a":1}` {
		t.Fatal("Compact")
	}
	if !IsArray([]byte(" \n[1]")) || IsArray([]byte(`{"a":[1]}`)) {
		t.Fatal("IsArray")
	}
}

// An assignment holds at most MaxStops stops (its progress is one value
// written in one batch), and a stop's radius_m is in (0, MaxRadiusM].
func TestAssignmentBounds(t *testing.T) {
	stops := make([]byte, 0, 64*(MaxStops+1))
	stops = append(stops, `{"driver":"d","stops":[`...)
	for i := 0; i <= MaxStops; i++ {
		if i > 0 {
			stops = append(stops, ',')
		}
		stops = append(stops, `{"id":"s","lat":1,"lng":1}`...)
	}
	stops = append(stops, "]}"...)
	if _, err := DecodeAssignment(stops); err == nil {
		t.Fatalf("%d stops taken", MaxStops+1)
	}
	for _, r := range []string{"0", "-1", "100001"} {
		if _, err := DecodeAssignment([]byte(`{"driver":"d","stops":[{"id":"s","lat":1,"lng":1,"radius_m":` + r + `}]}`)); err == nil {
			t.Errorf("radius_m %s taken", r)
		}
	}
	if _, err := DecodeAssignment([]byte(`{"driver":"d","stops":[{"id":"s","lat":1,"lng":1,"radius_m":30.5}]}`)); err != nil {
		t.Errorf("radius_m 30.5: %v", err)
	}
	if _, err := DecodeFence([]byte(`{"lat":1,"lng":1}`)); err == nil {
		t.Errorf("a fence without radius_m taken")
	}
}
