package uplink

import (
	"slices"
	"testing"
)

// The central view's consumer subjects on a stream: every depot's under
// routehound.> (the stream's own subjects when narrower), or the depots
// configured that the stream covers.
func TestCentralFilters(t *testing.T) {
	all := &Central{}
	some := &Central{cfg: CentralConfig{Depots: []string{"north", "south"}}}
	for _, c := range []struct {
		c        *Central
		subjects []string
		want     []string
	}{
		{all, []string{"routehound.>"}, []string{"routehound.>"}},
		{all, []string{">"}, []string{"routehound.>"}},
		{all, []string{"routehound.north.>", "routehound.east.>"}, []string{"routehound.north.>", "routehound.east.>"}},
		{all, []string{"other.>"}, nil},
		{some, []string{"routehound.>"}, []string{"routehound.north.>", "routehound.south.>"}},
		{some, []string{"routehound.south.>"}, []string{"routehound.south.>"}},
		{some, []string{"routehound.east.>"}, nil},
	} {
		if got := c.c.filters(c.subjects); !slices.Equal(got, c.want) {
			t.Errorf("depots %v, stream subjects %q: filters %q, want %q", c.c.cfg.Depots, c.subjects, got, c.want)
		}
	}
}
