// Package replica keeps a SQLite read model of the log for the dashboard:
// the latest position and a bounded trail of each driver, the route
// assignments, the loading events with their counts per dock and kind, and
// a generic mirror of user tables.
//
// One applier goroutine owns the SQLite writer connection. The engine's
// publish callback only notes the batch (its LSNs and commit time) and
// wakes the applier, which then reads the records it has not applied from the log itself
// (Source.ReadLog, after = applied LSN), in pages bounded by count and bytes,
// and applies each page in one SQLite transaction that also stores the
// applied LSN. So the replica never holds more than one page in memory, a
// slow replica never slows the committer, and a restart resumes from the
// persisted LSN. When the log was trimmed past the replica, the applier
// rebuilds it from a snapshot of the table state (Snapshotter). While it
// is behind, the applier takes at most half a core, so that a driver flood
// makes the replica lag rather than slow the writers.
//
// Readers use their own connection pool: SQLite's WAL journal lets them read
// a consistent state while the applier writes. The replica may be deleted at
// any time; it is rebuilt from the log (hence synchronous=OFF).
package replica
