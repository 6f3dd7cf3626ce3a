package fleetevents

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"routehound/engine"
	"routehound/fleet"
)

// BenchmarkPoint is the tracker's cost per point of a driver on a route
// (512 drivers, 40 stops a route, a stop every 50 points: the load of
// docs/bench/fleetev.sh), the point's JSON read by the stored form's fast
// path (ScanPlace) or, for the same points with a space after the brace,
// by encoding/json.
func BenchmarkPoint(b *testing.B) {
	for _, form := range []string{"scan", "json"} {
		b.Run(form, func(b *testing.B) {
			const drivers, stops = 512, 40
			tr := NewTracker(75)
			var lsn uint64
			for d := range drivers {
				lsn++
				a := fmt.Sprintf(`{"driver":"van-%d","stops":[`, d)
				for s := range stops {
					if s > 0 {
						a += ","
					}
					a += fmt.Sprintf(`{"id":"s%d","lat":%v,"lng":%v,"eta":"2026-12-07T12:00:00Z"}`, s, float64(d)*0.01, float64(s*50)*0.0004)
				}
				a += "]}"
				tr.Apply(&engine.Record{LSN: lsn, Table: fleet.TableAssignments, Key: fmt.Sprintf("r%d", d), Op: engine.OpPut, Value: []byte(a), Version: 1})
			}
			t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			recs := make([]engine.Record, 0, 50*drivers)
			for k := range 50 * stops {
				for d := range drivers {
					if len(recs) == cap(recs) {
						break
					}
					brace := "{"
					if form == "json" {
						brace = "{ "
					}
					v := fmt.Sprintf(`%s"seq":%d,"lat":%v,"lng":%v,"ts":%q,"speed_kmh":31.5,"heading":90}`, brace, k+1, float64(d)*0.01, float64(k)*0.0004, t0.Add(time.Duration(k)*time.Second).Format(time.RFC3339Nano))
					recs = append(recs, engine.Record{Table: fleet.TablePositions, Key: fmt.Sprintf("van-%d", d), Op: engine.OpPut, Value: []byte(v)})
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := &recs[i%len(recs)]
				lsn++
				r.LSN = lsn
				if i%len(recs) == 0 && i > 0 {
					// Again from the start: later in time, so that no point is late.
					b.StopTimer()
					for j := range recs {
						recs[j].Value = shiftTS(recs[j].Value, time.Duration(i/len(recs))*time.Hour)
					}
					b.StartTimer()
				}
				if _, err := tr.Apply(r); err != nil {
					b.Fatal(err)
				}
				if i%256 == 0 {
					tr.ClearDirty(false)
				}
			}
		})
	}
}

// shiftTS is a point's value with its ts a round later.
func shiftTS(v []byte, by time.Duration) []byte {
	ts, _, _, _, err := decodePoint(&engine.Record{Value: v})
	if err != nil {
		panic(err)
	}
	old := ts.Format(time.RFC3339Nano)
	now := ts.Add(by).Format(time.RFC3339Nano)
	return []byte(strings.Replace(string(v), old, now, 1))
}
