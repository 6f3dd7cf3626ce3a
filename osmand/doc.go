// Package osmand accepts driver positions from the phone apps fleets
// already run — Traccar Client (every version) and OsmAnd's online
// tracking — over the "OsmAnd protocol" that the Traccar server decodes on
// port 5055.
//
// It owns two things:
//
//   - Decode, a pure function from one request (query string, form or
//     JSON body) to a Report: a position, a status without a position (a
//     heartbeat or battery report), or an error that marks it malformed.
//     It does no I/O and never panics on input (FuzzDecode).
//   - Listener, the HTTP server on [osmand] listen that resolves the
//     device, hands the report to the engine's driver lane and answers 200
//     with an empty body only once the point is durable (fsync). A full
//     lane or a storage failure closes the connection without a status:
//     some app versions delete a buffered point on any HTTP status, and
//     all of them retry on a broken connection.
//
// Authentication is the device id alone, because the apps cannot send
// headers: devices are registered by the admin (PUT /v1/devices/{id}) or
// in the config, an unknown id gets 403 and nothing is stored, and an
// optional secret path segment (/osmand/<secret>/…) narrows who can
// reach the listener at all.
package osmand
