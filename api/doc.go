// Package api is RouteHound's HTTP interface for the actors and for other
// services: the driver, dispatch and warehouse endpoints, the tables, the
// change feed (/v1/log), the table streams (Server-Sent Events, sse.go, and
// the WebSocket, ws.go, carrying the hub's subscriptions; MountHub), health
// and metrics, as fixed in DESIGN.md's interface contract (v1).
//
// It owns authentication (bearer token → role), request limits and strict
// decoding, so that nothing invalid reaches the engine; and it maps the
// engine's sentinel errors to HTTP answers in exactly one place (errors.go).
// Every refusal is JSON {"code","message"} with a stable code.
package api
