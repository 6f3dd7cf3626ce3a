package hub

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestCheckHandshake(t *testing.T) {
	ws := map[string]string{"Connection": "keep-alive, Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, c := range []struct {
		name    string
		del     string
		set     map[string]string
		session bool
		want    error
	}{
		{name: "valid service", want: nil},
		{name: "valid session, no Origin", session: true, want: nil},
		{name: "same origin session", session: true, set: map[string]string{"Origin": "http://depot.example:8080"}, want: nil},
		{name: "cross origin session", session: true, set: map[string]string{"Origin": "http://evil.example"}, want: ErrCrossOrigin},
		{name: "cross origin service (bearer) is fine", set: map[string]string{"Origin": "http://evil.example"}, want: nil},
		{name: "bad Origin", session: true, set: map[string]string{"Origin": "::"}, want: ErrCrossOrigin},
		{name: "plain GET", del: "Upgrade", want: ErrNotWebSocket},
		{name: "no Connection upgrade", set: map[string]string{"Connection": "keep-alive"}, want: ErrNotWebSocket},
		{name: "old version", set: map[string]string{"Sec-WebSocket-Version": "8"}, want: ErrBadHandshake},
		{name: "no key", del: "Sec-WebSocket-Key", want: ErrBadHandshake},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://depot.example:8080/v1/ws", nil)
			for k, v := range ws {
				r.Header.Set(k, v)
			}
			for k, v := range c.set {
				r.Header.Set(k, v)
			}
			if c.del != "" {
				r.Header.Del(c.del)
			}
			err := CheckHandshake(r, c.session)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}
