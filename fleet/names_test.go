package fleet

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "van-1", "route_7.b:c@d~e", strings.Repeat("x", 128)} {
		if err := CheckName("driver", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, c := range []struct{ v, reason string }{
		{"", "driver must be 1 to 128 characters"},
		{strings.Repeat("x", 129), "driver must be 1 to 128 characters"},
		{"van 1", `driver "van 1": only letters, digits and . _ - : @ ~ are allowed`},
		{"a/b", `driver "a/b": only letters, digits and . _ - : @ ~ are allowed`},
		{"a\x00b", `driver "a\x00b": only letters, digits and . _ - : @ ~ are allowed`},
		{"é", `driver "é": only letters, digits and . _ - : @ ~ are allowed`},
	} {
		err := CheckName("driver", c.v)
		var ne *NameError
		if !errors.As(err, &ne) || ne.Reason != c.reason || ne.What != "driver" {
			t.Errorf("%q: got %#v, want %q", c.v, err, c.reason)
			continue
		}
		// The error's text keeps the "bad name: " it always had (logs,
		// config errors); clients are told the Message.
		if err.Error() != "bad name: "+c.reason || Message(err) != c.reason || !errors.Is(err, ErrBadName) {
			t.Errorf("%q: Error %q, Message %q", c.v, err.Error(), Message(err))
		}
		if !errors.Is(fmt.Errorf("wrapped: %w", err), ErrBadName) || Message(fmt.Errorf("wrapped: %w", err)) != c.reason {
			t.Errorf("%q: a wrapped NameError is not recognised", c.v)
		}
	}
}

func TestCheckKey(t *testing.T) {
	for _, ok := range []string{"k", "a key/with spaces & ünïcode", strings.Repeat("k", 512)} {
		if err := CheckKey(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, c := range []struct{ v, reason string }{
		{"", "a key is 1 to 512 bytes of UTF-8"},
		{strings.Repeat("k", 513), "a key is 1 to 512 bytes of UTF-8"},
		{"a\xffb", "a key is 1 to 512 bytes of UTF-8"},
		{"a\x01b", "a key may not hold control characters"},
		{"a\x7fb", "a key may not hold control characters"},
		{"a\nb", "a key may not hold control characters"},
	} {
		err := CheckKey(c.v)
		if !errors.Is(err, ErrBadName) || Message(err) != c.reason {
			t.Errorf("%q: got %v, want %q", c.v, err, c.reason)
		}
	}
}

func TestCheckDeviceID(t *testing.T) {
	if err := CheckDeviceID("a8f3e21c-dev"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ v, reason string }{
		{"123456", `device id "123456" is shorter than 8 characters; the id is the phone's only credential, so use a long random one`},
		{"bad device id", `device id "bad device id": only letters, digits and . _ - : @ ~ are allowed`},
		{"", "device id must be 1 to 128 characters"},
	} {
		err := CheckDeviceID(c.v)
		if !errors.Is(err, ErrBadName) || Message(err) != c.reason || err.Error() != "bad name: "+c.reason {
			t.Errorf("%q: got %v, want %q", c.v, err, c.reason)
		}
	}
}

func TestMessage(t *testing.T) {
	if m := Message(errors.New("plain")); m != "plain" {
		t.Fatal(m)
	}
	if m := Message(Invalid("stops[0].lat", "latitude %v is outside -90..90", 91.5)); m != `field "stops[0].lat": latitude 91.5 is outside -90..90` {
		t.Fatal(m)
	}
	if m := Message(CheckUserTable("loading")); m != `table "loading" is written only by its actor's endpoint` {
		t.Fatal(m)
	}
}

// An assignment names its driver by the driver's key in the positions
// table of the same box: on a central view (route key <depot>/<route>)
// the depot's key, elsewhere the name itself.
func TestAssignmentDriverKey(t *testing.T) {
	for _, c := range []struct{ route, driver, want string }{
		{"r7", "van-3", "van-3"},
		{"north/r7", "van-3", "north/van-3"},
		{"north/r7", "", ""},
		{"north/r7", "north/van-3", "north/van-3"},
		{"/r7", "van-3", "van-3"},
	} {
		if got := AssignmentDriverKey(c.route, c.driver); got != c.want {
			t.Errorf("AssignmentDriverKey(%q, %q) = %q, want %q", c.route, c.driver, got, c.want)
		}
	}
}
