package hub

import "net/http"

// Gate is what the hub needs from the api: who may connect, and how an
// error is answered. The api implements it, so that authentication and the
// error codes live in one place.
type Gate interface {
	// Authorize answers the refusal itself and returns ok == false when r
	// may not use an endpoint open to roles. session is true when the
	// caller authenticated with a browser session cookie (then the Origin
	// must be checked) rather than an Authorization header.
	Authorize(w http.ResponseWriter, r *http.Request, roles ...string) (session, ok bool)
	// Describe maps an error to its HTTP status and stable code (for
	// WebSocket error frames).
	Describe(err error) (status int, code, message string)
	// Fail answers err as an HTTP error.
	Fail(w http.ResponseWriter, r *http.Request, err error)
}
