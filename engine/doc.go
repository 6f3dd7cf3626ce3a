// Package engine turns the actors' writes into durable, ordered commits.
//
// Every actor has a lane: a bounded queue with its own limits, contract and
// metrics. One committer goroutine, the single writer to the wal, drains the
// lanes into bounded batches in an order and of a size derived from the
// lanes' contracts and SLAs and from measured costs (sched.go), commits each batch as
// one wal transaction, and calls wal.Sync once for all batches whose contract
// is due (group commit). Only after that Sync does it answer the waiting
// writers and publish the records, in LSN order (persist before broadcast).
//
// Contracts:
//
//   - sync:  the writer waits; its answer comes after the fsync that covers
//     its write, which the committer issues right after the batch.
//   - ack:   the writer waits; its fsync may be delayed by FlushWithin so that
//     more batches share it. A write that waited in the queue longer than
//     MaxWait is refused (ErrQueueTimeout) without being applied.
//   - async: the writer is answered at once; the write is durable within
//     FlushWithin (default 10 ms) and the driver's durable_seq then moves.
//
// Isolation: a full lane refuses its own writer (ErrLaneFull) and nobody
// else; a lane's bound counts what waits in the queue and what is in flight
// to the committer, until it is durable. A batch holds at most BatchRecords
// records and BatchBytes bytes, its ack and async records at most the
// derived cap, and while it is being built the committer takes a waiting
// sync item first, so a dispatch write waits at most for the item being
// applied and one commit of the cap's size.
package engine
