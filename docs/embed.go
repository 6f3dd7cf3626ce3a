// Package docs holds the product's reference documents that ship inside the
// binary: the OpenAPI 3.1 document of the v1 HTTP API, served at
// /v1/openapi.yaml and validated in the api package's tests.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml: the v1 HTTP API as OpenAPI 3.1.
//
//go:embed openapi.yaml
var OpenAPI []byte
