package replica

import (
	"encoding/binary"
	"errors"
	"math"
)

// trailPoint is one point of a trail block as stored: fixed width, little
// endian, so a block is cut and read back without a parser.
type trailPoint struct {
	Seq               uint64
	Lat, Lng          float64
	SpeedKmh, Heading float64
	TS                int64 // Unix ns; 0 = unknown
	LSN               uint64
	CommittedAt       int64 // Unix ns; 0 = from a rebuild
}

// trailPointBytes is the size of one packed point.
const trailPointBytes = 64

func appendTrailPoint(b []byte, p trailPoint) []byte {
	b = binary.LittleEndian.AppendUint64(b, p.Seq)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.Lat))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.Lng))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.SpeedKmh))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.Heading))
	b = binary.LittleEndian.AppendUint64(b, uint64(p.TS))
	b = binary.LittleEndian.AppendUint64(b, p.LSN)
	return binary.LittleEndian.AppendUint64(b, uint64(p.CommittedAt))
}

var errTrailBlock = errors.New("replica: trail block is not a whole number of points")

// trailBlock reads a stored block's points, oldest first.
func trailBlock(b []byte) ([]trailPoint, error) {
	if len(b)%trailPointBytes != 0 {
		return nil, errTrailBlock
	}
	out := make([]trailPoint, 0, len(b)/trailPointBytes)
	for ; len(b) > 0; b = b[trailPointBytes:] {
		u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[8*i:]) }
		out = append(out, trailPoint{Seq: u(0), Lat: math.Float64frombits(u(1)), Lng: math.Float64frombits(u(2)),
			SpeedKmh: math.Float64frombits(u(3)), Heading: math.Float64frombits(u(4)), TS: int64(u(5)),
			LSN: u(6), CommittedAt: int64(u(7))})
	}
	return out, nil
}
