package api

import (
	_ "embed"
	"net/http"
)

// clientJS is the browser client (an ES module, no build step).
//
//go:embed client.js
var clientJS []byte

// clientModule serves GET /v1/client.js, open to anyone like the OpenAPI
// document: the module holds no secret; its callers bring their token.
func (s *Server) clientModule(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write(clientJS)
}
