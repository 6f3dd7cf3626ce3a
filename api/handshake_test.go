package api

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestCheckHandshake(t *testing.T) {
	ws := map[string]string{"Connection": "keep-alive, Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, c := range []struct {
		name string
		del  string
		set  map[string]string
		want string // the refusal's code; "" for none
	}{
		{name: "valid"},
		{name: "cross origin (bearer) is fine", set: map[string]string{"Origin": "http://evil.example"}},
		{name: "plain GET", del: "Upgrade", want: "upgrade_required"},
		{name: "no Connection upgrade", set: map[string]string{"Connection": "keep-alive"}, want: "upgrade_required"},
		{name: "old version", set: map[string]string{"Sec-WebSocket-Version": "8"}, want: "bad_handshake"},
		{name: "no key", del: "Sec-WebSocket-Key", want: "bad_handshake"},
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
			err := checkHandshake(r)
			var ae *apiError
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (!errors.As(err, &ae) || ae.code != c.want):
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
}
