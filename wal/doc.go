// Package wal is RouteHound's durable store: a write-ahead log of records
// numbered by LSN, the current state of every table, and idempotency entries,
// all kept in one Badger database.
//
// The promises, and where they are kept:
//
//   - One atomic commit. A Batch is one Badger transaction holding the log
//     records, the table state they produce, the table counters and the
//     idempotency entries of that batch. A crash leaves all of it or none of it,
//     so the log and the state never disagree (Batch.Commit).
//   - LSN order. LSNs are assigned by the single writer as records are added to
//     a batch, so they are strictly increasing and gap-free within one process
//     life. On Open the next LSN is recovered from the last committed record.
//   - Durability is explicit. Commits are not fsynced one by one; the caller
//     groups commits and calls Sync once for all of them (group commit). After a
//     Sync error the store must not be used again: Badger reports a lost write
//     once and then forgets (see DESIGN.md, "Storage faults").
//   - Retention. Trim deletes the oldest log records by age and by size; the
//     table state is never trimmed. ReadLog from an LSN older than the retained
//     log answers ErrTrimmed, so a reader knows it must take a fresh snapshot.
//
// Concurrency: a DB has exactly one writer at a time (one Batch open, owned by
// the engine's committer). Readers (ReadLog, Snapshot) may run concurrently
// with the writer and with each other; they read committed state.
package wal
