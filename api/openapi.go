package api

import (
	"net/http"

	"routehound/docs"
)

// openAPI serves GET /v1/openapi.yaml: the v1 API as OpenAPI 3.1 (the
// document embedded from docs/openapi.yaml), open to anyone, so that
// client generators and other services can fetch it from the box itself.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write(docs.OpenAPI)
}
