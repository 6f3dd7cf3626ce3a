// Package naive is the design RouteHound replaces, kept as a baseline for
// `routehound sim --baseline naive`: one HTTP server with the same actor
// endpoints (same paths, bodies and answers, so the simulator's clients
// drive it unchanged), where every write — each driver point, each
// assignment, each loading event — is its own synchronous commit into one
// shared SQLite database (journal_mode=WAL, synchronous=FULL), behind one
// connection, which is the database-level lock every actor waits on. There
// are no lanes, no batching and no admission bounds; dashboard streams
// poll the same database for new log rows.
//
// It is deliberately plain, not deliberately slow: a request's points are
// validated once, statements are prepared by the driver's cache, and a
// viewer's poll is one indexed range query.
package naive
