package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Devices of the phone apps (DESIGN.md, "Phone apps"): the admin registers
// each phone's device id with the driver its points belong to, in the
// devices table (DeviceEntry) or in the config file.

// MinDeviceID is the shortest device id accepted: the id is the phone's
// only credential (the apps cannot send headers), so it should be long and
// random, not the apps' default six digits.
const MinDeviceID = 8

// CheckDeviceID validates a phone's device id: a name (CheckName) of at
// least MinDeviceID characters. A refusal is a NameError.
func CheckDeviceID(id string) error {
	if err := CheckName("device id", id); err != nil {
		return err
	}
	if len(id) < MinDeviceID {
		return &NameError{What: "device id", Reason: "device id " + strconv.Quote(id) + " is shorter than " + strconv.Itoa(MinDeviceID) +
			" characters; the id is the phone's only credential, so use a long random one"}
	}
	return nil
}

// DeviceEntry is the value of a device in the devices table.
type DeviceEntry struct {
	Driver string `json:"driver"`
}

// Encode is the stored JSON: {"driver":NAME}.
func (d DeviceEntry) Encode() ([]byte, error) { return json.Marshal(d) }

// DecodeDeviceEntry reads a stored device; an entry without a driver is an
// error.
func DecodeDeviceEntry(b []byte) (DeviceEntry, error) {
	var d DeviceEntry
	if err := json.Unmarshal(b, &d); err != nil {
		return d, err
	}
	if d.Driver == "" {
		return d, fmt.Errorf("a device entry needs a driver")
	}
	return d, nil
}

// DeviceRequest is the body of PUT /v1/devices/{id}: the driver whose
// points the device reports.
type DeviceRequest struct {
	Driver *string `json:"driver"`
}

// Check validates a device request: a driver name (a NameError when it is
// not one).
func (r *DeviceRequest) Check() error {
	if r.Driver == nil {
		return Invalid("driver", "required (the driver whose points this device reports)")
	}
	return CheckName("driver", *r.Driver)
}

// Where a device is registered (Device.Source).
const (
	DeviceSourceAPI    = "api"    // the devices table, through the devices API
	DeviceSourceConfig = "config" // the config file ([[osmand.devices]]); read-only through the API
)

// Device is a registered device as the devices API answers it.
type Device struct {
	ID      string `json:"id"`
	Driver  string `json:"driver"`
	Source  string `json:"source"` // DeviceSourceAPI or DeviceSourceConfig
	Version uint64 `json:"version,omitempty"`
	LSN     uint64 `json:"lsn,omitempty"`
}

// TimeLayout is how the phone listener writes times: RFC 3339 with
// milliseconds, always three digits.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// PhonePoint is what the positions table and the log keep for a point of
// the phone apps, without its seq (the engine's committer assigns it and
// puts it first): the driver API's point (lat, lng, ts, speed_kmh,
// heading) plus what the apps add. It holds no device id: the id is the
// phone's only credential and positions are readable by every dashboard
// token (the key, the driver, says whose point it is; the admin maps
// devices to drivers in the devices table).
type PhonePoint struct {
	Lat       float64        `json:"lat"`
	Lng       float64        `json:"lng"`
	TS        string         `json:"ts"`
	SpeedKmh  *float64       `json:"speed_kmh,omitempty"`
	Heading   *float64       `json:"heading,omitempty"`
	Altitude  *float64       `json:"altitude,omitempty"`
	Accuracy  *float64       `json:"accuracy,omitempty"`
	HDOP      *float64       `json:"hdop,omitempty"`
	Battery   *float64       `json:"battery,omitempty"`
	Charging  *bool          `json:"charging,omitempty"`
	TSReceipt bool           `json:"ts_is_receipt,omitempty"` // the request had no timestamp
	Attrs     map[string]any `json:"attrs,omitempty"`
}

// DeviceStatus is what the device_status table keeps for a device: its
// last report without a position (heartbeat, battery).
type DeviceStatus struct {
	Device     string         `json:"device"`
	Driver     string         `json:"driver"`
	ReceivedAt string         `json:"received_at"`
	TS         string         `json:"ts"`
	Battery    *float64       `json:"battery,omitempty"`
	Charging   *bool          `json:"charging,omitempty"`
	Attrs      map[string]any `json:"attrs,omitempty"`
}

// deviceMember is how a device id starts in a stored positions value.
var deviceMember = []byte(`"device"`)

// StripLegacyDevice returns a positions value without its top-level
// "device" member. Phone points stored before device ids became admin-only
// (issue 18) still carry one, in the log until retention drops them and in
// a driver's latest point until that driver reports again; the read paths
// of non-admin callers pass positions values through here. A value without
// the substring "device" — every point written since — is returned as is,
// without allocating. A value that holds it but does not parse as an object
// gives {} (it is never shown with the id).
func StripLegacyDevice(v []byte) []byte {
	if !bytes.Contains(v, deviceMember) {
		return v
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return []byte("{}")
	}
	out := make([]byte, 0, len(v))
	out = append(out, '{')
	for dec.More() {
		t, err := dec.Token()
		k, ok := t.(string)
		if err != nil || !ok {
			return []byte("{}")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return []byte("{}")
		}
		if k == "device" {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		kb, _ := json.Marshal(k)
		out = append(out, kb...)
		out = append(out, ':')
		out = append(out, raw...)
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return []byte("{}")
	}
	return append(out, '}')
}

// RedactForNonAdmin is the value of table as a non-admin caller reads it:
// positions values without a legacy device id (StripLegacyDevice), every
// other table's as stored (the tables of device ids are refused whole,
// IsSecret).
func RedactForNonAdmin(table string, v []byte) []byte {
	if table == TablePositions {
		return StripLegacyDevice(v)
	}
	return v
}
