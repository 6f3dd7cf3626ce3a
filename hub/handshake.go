package hub

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// Handshake refusals, checked before the WebSocket library sees the
// request, so that they are answered like every other error: JSON with a
// stable code (api maps them), not the library's plain text.
var (
	ErrNotWebSocket = errors.New("hub: not a WebSocket handshake (send Connection: Upgrade and Upgrade: websocket)")
	ErrBadHandshake = errors.New("hub: bad WebSocket handshake")
	ErrCrossOrigin  = errors.New("hub: cross-origin WebSocket refused")
)

// CheckHandshake verifies what the WebSocket library would (RFC 6455 §4.2.1)
// and, for a browser session (cookie), that Origin names this host: a
// cross-site page must not open a socket with the user's session.
// Bearer-authenticated services carry no ambient credential and may come
// from anywhere.
func CheckHandshake(r *http.Request, session bool) error {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return ErrNotWebSocket
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		return errors.Join(ErrBadHandshake, errors.New("Sec-WebSocket-Version must be 13, got "+quote(v)))
	}
	if strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key")) == "" {
		return errors.Join(ErrBadHandshake, errors.New("Sec-WebSocket-Key is missing"))
	}
	if session {
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || !strings.EqualFold(u.Host, r.Host) {
				return ErrCrossOrigin
			}
		}
	}
	return nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func quote(s string) string {
	if s == "" {
		return "nothing"
	}
	return `"` + s + `"`
}
