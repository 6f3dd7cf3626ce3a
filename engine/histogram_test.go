package engine

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Observe(time.Duration(i) * time.Microsecond)
	}
	s := h.Snapshot()
	within := func(got, want time.Duration) bool { return got >= want && float64(got) <= float64(want)*1.2 }
	if p := s.Quantile(0.5); !within(p, 500*time.Microsecond) {
		t.Errorf("p50 = %v, want about 500µs", p)
	}
	if p := s.Quantile(0.99); !within(p, 990*time.Microsecond) {
		t.Errorf("p99 = %v, want about 990µs", p)
	}
	if s.Max != time.Millisecond || s.Quantile(1) != time.Millisecond || s.Count != 1000 {
		t.Errorf("max %v, q1 %v, count %d", s.Max, s.Quantile(1), s.Count)
	}
	for us := uint64(1); us < 1<<30; us = us*3/2 + 1 {
		b := bucketOf(us)
		if up := bucketUpper(b); up < time.Duration(us)*time.Microsecond {
			t.Fatalf("%dµs in bucket %d with upper bound %v", us, b, up)
		}
		if b > 0 && bucketUpper(b-1) > time.Duration(us)*time.Microsecond {
			t.Fatalf("%dµs in bucket %d but bucket %d already holds it", us, b, b-1)
		}
	}
}
