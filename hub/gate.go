package hub

import (
	"encoding/json"
	"net/http"
)

// Gate is what the hub needs from the api: who may connect, and how an
// error is answered. The api implements it, so that authentication and the
// error codes live in one place.
type Gate interface {
	// Authorize answers the refusal itself and returns ok == false when r
	// may not use an endpoint open to roles. session is true when the
	// caller authenticated with a browser session cookie (then the Origin
	// must be checked) rather than an Authorization header.
	Authorize(w http.ResponseWriter, r *http.Request, roles ...string) (session, ok bool)
	// Describe maps an error to its HTTP status and stable code.
	Describe(err error) (status int, code, message string)
}

func writeError(g Gate, w http.ResponseWriter, err error) {
	status, code, msg := g.Describe(err)
	b, _ := json.Marshal(map[string]string{"code": code, "message": msg})
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
