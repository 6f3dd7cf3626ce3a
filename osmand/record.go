package osmand

import (
	"encoding/json"
	"fmt"
	"time"
)

// pointRecord is what the positions table and the log keep for a phone
// point: the driver API's point record (seq, lat, lng, ts, speed_kmh,
// heading; seq is put first by the engine's committer, which assigns it)
// plus what the apps add.
type pointRecord struct {
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
	Device    string         `json:"device"`
	TSReceipt bool           `json:"ts_is_receipt,omitempty"` // the request had no timestamp
	Attrs     map[string]any `json:"attrs,omitempty"`
}

// PointValue is the JSON object stored for a position, without its seq.
func (r *Report) PointValue() ([]byte, error) {
	b, err := json.Marshal(pointRecord{
		Lat: r.Lat, Lng: r.Lon, TS: r.Fix.UTC().Format(tsLayout),
		SpeedKmh: r.SpeedKmh, Heading: r.Heading, Altitude: r.Altitude, Accuracy: r.Accuracy, HDOP: r.HDOP,
		Battery: r.Battery, Charging: r.Charging, Device: r.Device, TSReceipt: !r.FixGiven, Attrs: r.Attrs,
	})
	if err != nil {
		return nil, fmt.Errorf("osmand: encode point of %s: %w", r.Device, err)
	}
	return b, nil
}

// tsLayout is RFC 3339 with milliseconds, always three digits.
const tsLayout = "2006-01-02T15:04:05.000Z07:00"

// statusRecord is what device_status keeps for a device: its last report
// without a position (heartbeat, battery).
type statusRecord struct {
	Device     string         `json:"device"`
	Driver     string         `json:"driver"`
	ReceivedAt string         `json:"received_at"`
	TS         string         `json:"ts"`
	Battery    *float64       `json:"battery,omitempty"`
	Charging   *bool          `json:"charging,omitempty"`
	Attrs      map[string]any `json:"attrs,omitempty"`
}

// StatusValue is the JSON stored in device_status for a report without a
// position.
func (r *Report) StatusValue(driver string, received time.Time) ([]byte, error) {
	b, err := json.Marshal(statusRecord{Device: r.Device, Driver: driver, ReceivedAt: received.UTC().Format(tsLayout),
		TS: r.Fix.UTC().Format(tsLayout), Battery: r.Battery, Charging: r.Charging, Attrs: r.Attrs})
	if err != nil {
		return nil, fmt.Errorf("osmand: encode status of %s: %w", r.Device, err)
	}
	return b, nil
}
