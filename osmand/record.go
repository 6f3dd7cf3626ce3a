package osmand

import (
	"encoding/json"
	"fmt"
	"time"

	"routehound/fleet"
)

// PointValue is the JSON object stored for a position, without its seq
// (fleet.PhonePoint). It carries no device id (the phone's credential):
// positions are readable by every dashboard token.
func (r *Report) PointValue() ([]byte, error) {
	b, err := json.Marshal(fleet.PhonePoint{
		Lat: r.Lat, Lng: r.Lon, TS: r.Fix.UTC().Format(tsLayout),
		SpeedKmh: r.SpeedKmh, Heading: r.Heading, Altitude: r.Altitude, Accuracy: r.Accuracy, HDOP: r.HDOP,
		Battery: r.Battery, Charging: r.Charging, TSReceipt: !r.FixGiven, Attrs: r.Attrs,
	})
	if err != nil {
		return nil, fmt.Errorf("osmand: encode point of %s: %w", r.Device, err)
	}
	return b, nil
}

// tsLayout is RFC 3339 with milliseconds, always three digits.
const tsLayout = fleet.TimeLayout

// StatusValue is the JSON stored in device_status for a report without a
// position (fleet.DeviceStatus).
func (r *Report) StatusValue(driver string, received time.Time) ([]byte, error) {
	b, err := json.Marshal(fleet.DeviceStatus{Device: r.Device, Driver: driver, ReceivedAt: received.UTC().Format(tsLayout),
		TS: r.Fix.UTC().Format(tsLayout), Battery: r.Battery, Charging: r.Charging, Attrs: r.Attrs})
	if err != nil {
		return nil, fmt.Errorf("osmand: encode status of %s: %w", r.Device, err)
	}
	return b, nil
}
