package api

import (
	"net/http"
	"strings"
)

// checkHandshake verifies what the WebSocket library would (RFC 6455
// §4.2.1) before the library sees the request, so that a refusal is
// answered like every other error: JSON with a stable code
// (upgrade_required, bad_handshake), not the library's plain text. The
// WebSockets (/v1/ws, /v1/drivers/stream) are bearer-authenticated, so no
// Origin is checked: a cross-site page cannot send the token.
func checkHandshake(r *http.Request) error {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return errorf(http.StatusUpgradeRequired, "upgrade_required", "this endpoint is a WebSocket: send Connection: Upgrade and Upgrade: websocket")
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		return errorf(http.StatusBadRequest, "bad_handshake", "Sec-WebSocket-Version must be 13, got %s", quote(v))
	}
	if strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key")) == "" {
		return errorf(http.StatusBadRequest, "bad_handshake", "Sec-WebSocket-Key is missing")
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
