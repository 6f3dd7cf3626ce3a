// Package sim is RouteHound's load simulator: it drives a running server
// over real HTTP, Server-Sent Events and WebSocket as the four actors would
// (drivers, dispatchers, warehouse terminals, dashboard viewers), records
// what each actor offered, what was accepted or refused and how long it
// took, then reads every acknowledged write back from the server to prove
// that none was lost. A run produces a Report (JSON) and an HTML page with
// latency over time per actor.
//
// The simulator talks only HTTP: it drives RouteHound and the naive SQLite
// baseline (package naive) with the same clients, so their reports compare.
// Client-side work is kept cheap (reused connections, bodies encoded with
// strconv into reused buffers) because client and server share the machine.
package sim
