package engine

import (
	"time"

	"routehound/wal"
)

// IdemEntry is an idempotency entry (an Idempotency-Key's answer, a phone
// point's seq) with the LSN of the record it answers: what a log shipper
// sends with the record (IdemEntries) and a standby stores with it
// (ApplyFollowedIdem), so that a promoted standby answers a retry as the
// primary would have (issue 20).
type IdemEntry struct {
	LSN       uint64 // the record it answers
	Scope     string // the lane's name (or "phone")
	Key       string
	Answer    []byte    // opaque: what the writer stored
	ExpiresAt time.Time // zero: never (Config.IdempotencyTTL 0)
}

// Expired reports whether the entry has expired at now (to the second, as
// the store keeps it).
func (ie IdemEntry) Expired(now time.Time) bool { return walIdem(ie).Expired(now) }

func idemEntry(w wal.IdemEntry) IdemEntry {
	ie := IdemEntry{LSN: w.LSN, Scope: w.Scope, Key: w.Key, Answer: w.Answer}
	if w.ExpiresAt > 0 {
		ie.ExpiresAt = time.Unix(int64(w.ExpiresAt), 0).UTC()
	}
	return ie
}

func walIdem(ie IdemEntry) wal.IdemEntry {
	w := wal.IdemEntry{LSN: ie.LSN, Scope: ie.Scope, Key: ie.Key, Answer: ie.Answer}
	if !ie.ExpiresAt.IsZero() {
		// Before 1970 it has expired anyway: the earliest expiry.
		w.ExpiresAt = uint64(max(ie.ExpiresAt.Unix(), 1))
	}
	return w
}

// IdemEntries calls fn, in LSN order, for the unexpired idempotency
// entries of the records with after < LSN <= upto (a log shipper reads
// those of the records it ships). ie.Answer is fn's to keep. While the
// store reopens after a storage failure it answers ErrReopening.
func (e *Engine) IdemEntries(after, upto uint64, fn func(IdemEntry) error) error {
	return e.db.Load().IdemEntries(after, upto, func(w wal.IdemEntry) error { return fn(idemEntry(w)) })
}
