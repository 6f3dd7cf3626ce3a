// Package hub indexes table subscribers and delivers committed changes to
// them: Subscribe (SubscribeFrom for a client connection) registers one
// (bounded per table, MaxSubscribersPerTable, per client connection,
// MaxSubscribersPerConn, and in all, MaxSubscribers), Stream runs it into a
// Sink (snapshot,
// catch-up from an LSN, resync, live changes). The hub knows no protocol:
// the transports implement Sink and own authentication and error answers,
// api's Server-Sent Events and WebSocket handlers (api/sse.go, api/ws.go)
// and ui's live endpoint.
//
// The hub's fan-out goroutine follows the engine's durability feed (a
// cursor: every durable record once, in LSN order; the committer never runs
// hub code) and hands each record to Hub.publish. The index is table → subscribers (sharded maps),
// so the cost of a record is the number of subscribers of its table, however
// many tables exist. publish never blocks: each subscriber has a bounded
// buffer, and a subscriber whose buffer is full stops receiving; its own
// goroutine then moves it to a resync (a fresh snapshot) or, if it keeps
// falling behind, closes it with a reason. Both are counted.
//
// A stream starts with a consistent snapshot at LSN n and then delivers
// every change after n, in LSN order, without gap or duplicate: the
// subscriber is registered BEFORE the snapshot is taken, so nothing published
// in between is missed, and changes at or below n are skipped. A stream
// resumed from LSN N reads the missed records from the wal's log (or gets a
// resync when retention trimmed them, or when N is more than MaxCatchUp
// records behind), then continues live, with the same skip rule.
package hub
