package osmand

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"
	"strings"
)

// decodeJSON reads Traccar Client 9.x's body:
// {"location":{"timestamp","coords":{…},"battery":{"level","is_charging"},…},"device_id"}.
// Its speed is m/s; -1 means unknown for speed, heading and battery level.
func decodeJSON(rawQuery string, body []byte, opt Options) (Report, error) {
	var r Report
	q, _ := parseFields(rawQuery)
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var root map[string]any
	derr := d.Decode(&root)
	if derr == nil && d.More() {
		derr = errors.New("more than one JSON value")
	}
	if dev, ok := root["device_id"]; ok {
		r.Device = strings.TrimSpace(jsonString(dev))
	} else if derr != nil {
		r.Device = scanDeviceID(body)
	}
	if r.Device == "" {
		r.Device = q.take("id", "deviceid")
	}
	if r.Device == "" {
		return r, ErrNoDevice
	}
	if derr != nil {
		return r, malformed("body", "%v", derr)
	}
	if root == nil {
		return r, malformed("body", "not a JSON object")
	}
	loc, ok := root["location"].(map[string]any)
	if !ok {
		return r, malformed("location", "missing or not an object")
	}
	if err := r.setTime(jsonString(loc["timestamp"]), opt); err != nil {
		return r, err
	}
	if c, ok := loc["coords"].(map[string]any); ok {
		lat, err1 := jsonNumber("coords.latitude", c["latitude"])
		lon, err2 := jsonNumber("coords.longitude", c["longitude"])
		if err := errors.Join(err1, err2); err != nil {
			return r, err
		}
		if lat == nil || lon == nil {
			if lat != nil || lon != nil {
				return r, malformed("coords", "one coordinate without the other")
			}
		} else if err := r.setCoords(*lat, *lon); err != nil {
			return r, err
		}
		if v, err := jsonNumber("coords.speed", c["speed"]); err != nil {
			return r, err
		} else if v != nil {
			if err := r.setSpeed(*v, MPS); err != nil {
				return r, err
			}
		}
		if v, err := jsonNumber("coords.heading", c["heading"]); err != nil {
			return r, err
		} else if v != nil {
			if err := r.setHeading(*v); err != nil {
				return r, err
			}
		}
		var err error
		if r.Accuracy, err = jsonNumber("coords.accuracy", c["accuracy"]); err != nil {
			return r, err
		}
		if r.Altitude, err = jsonNumber("coords.altitude", c["altitude"]); err != nil {
			return r, err
		}
		for _, k := range []string{"latitude", "longitude", "speed", "heading", "accuracy", "altitude"} {
			delete(c, k)
		}
		if err := r.flatten("coords.", c); err != nil {
			return r, err
		}
	} else if _, has := loc["coords"]; has {
		return r, malformed("coords", "not an object")
	}
	if b, ok := loc["battery"].(map[string]any); ok {
		lvl, err := jsonNumber("battery.level", b["level"])
		if err != nil {
			return r, err
		}
		if lvl != nil {
			r.setBattery(*lvl * 100)
		}
		if c, ok := b["is_charging"].(bool); ok {
			r.Charging = &c
		}
		delete(b, "level")
		delete(b, "is_charging")
		if err := r.flatten("battery.", b); err != nil {
			return r, err
		}
	}
	for _, k := range []string{"timestamp", "coords", "battery"} {
		delete(loc, k)
	}
	if err := r.flatten("", loc); err != nil {
		return r, err
	}
	delete(root, "location")
	delete(root, "device_id")
	return r, r.flatten("", root)
}

// scanDeviceID finds a top-level "device_id" in a body that does not
// decode whole (cut short, say), so that its quarantine entry still names
// the device.
func scanDeviceID(body []byte) string {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	depth, key := 0, true
	for range 10000 {
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
			key = depth == 1
			continue
		case string:
			if depth == 1 && key && v == "device_id" {
				if next, err := d.Token(); err == nil {
					return strings.TrimSpace(jsonString(next))
				}
				return ""
			}
		}
		if depth == 1 {
			key = !key
		}
	}
	return ""
}

// flatten keeps the remaining JSON fields as attributes, nested objects
// under dotted names ("activity.type"), in name order.
func (r *Report) flatten(prefix string, m map[string]any) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := m[k].(type) {
		case map[string]any:
			if err := r.flatten(prefix+k+".", v); err != nil {
				return err
			}
		case json.Number:
			if err := r.attr(prefix+k, scalar(v.String())); err != nil {
				return err
			}
		case nil:
		case []any:
			raw, _ := json.Marshal(v)
			if err := r.attr(prefix+k, string(raw)); err != nil {
				return err
			}
		default: // string, bool
			if err := r.attr(prefix+k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonString reads a JSON string or number as text ("" for anything else).
func jsonString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	}
	return ""
}

// jsonNumber reads an optional JSON number (null or absent: nil).
func jsonNumber(field string, v any) (*float64, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case json.Number:
		f, err := number(field, x.String())
		if err != nil {
			return nil, err
		}
		return &f, nil
	}
	return nil, malformed(field, "not a number")
}
