// Package ui is the operations dashboard: server-rendered pages (templ) under
// /ui/, live over Server-Sent Events from the hub, every asset embedded.
//
// It owns the dashboard's sessions (login with a dashboard or admin token,
// an HttpOnly SameSite=Strict cookie, CSRF tokens on every form), its pages
// (Channels, Fleet, Routes, Warehouse, Tables, System), the per-second
// sampler behind the Channels sparklines, and its live connections.
//
// Promises:
//   - A page renders the state at one LSN and its live connection resumes
//     from that LSN (hub.Stream with from), so no change between render and
//     connect is missed.
//   - Live frames are coalesced: at most one frame per FrameInterval per
//     view, holding the latest value per key, so a driver flood never floods
//     a browser. A connection that falls too far behind gets "reload".
//   - Live connections are hub subscribers (bounded per table by the hub)
//     and bounded in total by MaxLive; they never block a writer: the hub
//     offers without blocking and this package only reads. Fleet pages share
//     one positions subscriber (fleetfeed.go): the hub's fan-out goroutine
//     offers each record to each subscriber, so a driver flood must be fanned
//     out once, not once per open Fleet page.
//   - Fleet, Routes and Warehouse read a ReadModel (the SQLite replica in
//     the appliance; SnapshotReader otherwise); Channels and System read the
//     engine's ledger and the hub's counters; Tables read engine snapshots.
//   - Nothing is served without a session (303 to /ui/login); a POST without
//     the session's CSRF token answers 403 and changes nothing; live
//     endpoints refuse a cross-site Origin.
package ui
