package uplink

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"routehound/engine"
)

// Atomic batches (issue 20): shipping to a fenced replicated stream.
//
// On a replicated stream (R3) JetStream refuses a message that expects a
// subject's last sequence while another one expecting it is still being
// proposed, so the fenced records (all expect the epoch marker's) go one
// unit at a time. One record a unit is one cluster commit a record
// (1,800–3,400 records/s on the 2-core box): below a peak shift's driver
// rate, so replicate lanes fell behind and answered not_replicated. With
// the stream's allow_atomic set, the unit is an atomic batch
// (Nats-Batch-Id, Nats-Batch-Sequence 1..n, Nats-Batch-Commit on the
// last): JetStream checks the batch's expectations at its commit and
// stores all of it or none, under one cluster commit, and acknowledges
// the commit message only. Every record still expects the marker, so the
// fence is unchanged: a promoted standby's marker makes the whole batch
// refused. The records before the commit are published without a reply
// (the commit's acknowledgement covers them, and a lost one makes the
// commit refused as incomplete).
//
// A batch never holds a record JetStream would refuse for its size (that
// one goes alone, so its refusal is the record's own and refusedRecord can
// skip it), and never a record the stream may already hold (resume found
// the stream ahead of acked: a batch holding a duplicate Nats-Msg-Id is
// refused whole, so those records go alone and the Nats-Msg-Id drops them
// as before). A batch JetStream refused sends its records alone at the
// next session, so a refusal is always pinned on one record.

const (
	// maxBatchRecords is nats-server's default max_batch_size; a server
	// configured lower refuses the batch and the uplink halves it.
	maxBatchRecords = 1000
	// maxBatchBytes bounds one batch's messages: the leader stages them
	// and proposes them in one cluster commit.
	maxBatchBytes = 4 << 20
	// batchHeaders bounds the batch headers' size (id, sequence, commit).
	batchHeaders = 128
)

// batchIDs makes batch ids unique across this process's sessions and
// restarts: a random prefix, a count of the process's batches and the
// batch's first LSN (base 36, base 36, base 10: at most 13+1+13+1+20
// bytes, under JetStream's 64). A
// partial batch the leader still holds (a connection lost mid-batch) is
// never continued by the next session's first batch, which starts at the
// same LSN (the leader would take its first message for a gap, and refuse
// the commit as incomplete).
type batchIDs struct {
	prefix string
	n      uint64 // run's goroutine only
}

func newBatchIDs() batchIDs {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return batchIDs{prefix: strconv.FormatUint(binary.LittleEndian.Uint64(b[:]), 36) + "-"}
}

func (b *batchIDs) id(first uint64) string {
	b.n++
	return b.prefix + strconv.FormatUint(b.n, 36) + "-" + strconv.FormatUint(first, 10)
}

// gather adds to recs (with their idempotency entries, idem) the records
// the cursor holds after them, up to u.batchMax: a batch takes what is
// durable, not one commit's records (the tail hands them out commit by
// commit), nor what was left over from the last batch. recs may be the
// tail's records, shared with other readers: they are copied once before
// anything is appended. A read error stops the gathering (the next Next
// answers it again).
func (u *Uplink) gather(ctx context.Context, cur *engine.Cursor, recs []engine.Record, idem []engine.IdemEntry) ([]engine.Record, []engine.IdemEntry, error) {
	start := len(recs)
	for len(recs) < u.batchMax && cur.After() < u.e.DurableLSN() {
		more, err := cur.Next(ctx)
		if err != nil {
			break
		}
		if len(recs) == start {
			recs = append(make([]engine.Record, 0, max(2*(start+len(more)), 64)), recs...)
		}
		recs = append(recs, more...)
	}
	if len(recs) == start {
		return recs, idem, nil
	}
	extra, err := u.idemEntries(recs[start:], nil)
	if err != nil {
		return nil, nil, err
	}
	return recs, append(slices.Clip(idem), extra...), nil
}

// msgSize is the size JetStream checks against max_msg_size and
// max_payload (headers and data) once the batch headers are added.
func msgSize(m *nats.Msg) int {
	n := len("NATS/1.0\r\n\r\n") + batchHeaders + len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// idemFor advances idem (in LSN order) past the entries of records before
// lsn and answers lsn's own entry (nil: none).
func idemFor(idem *[]engine.IdemEntry, lsn uint64) *engine.IdemEntry {
	for len(*idem) > 0 && (*idem)[0].LSN < lsn {
		*idem = (*idem)[1:]
	}
	if len(*idem) > 0 && (*idem)[0].LSN == lsn {
		return &(*idem)[0]
	}
	return nil
}

// batchable reports whether record lsn, whose message is m, may go in an
// atomic batch: the stream cannot hold it yet, and JetStream would not
// refuse it for its size (limit).
func (u *Uplink) batchable(lsn uint64, m *nats.Msg, limit int) bool {
	return lsn > u.aloneUntil && msgSize(m) <= limit
}

// publishBatch publishes recs[0] (its message first, already built) and
// the batchable records after it, up to u.batchMax records and
// maxBatchBytes, as one atomic batch. It answers how many records the
// batch holds and the future of its commit message; with an error, 0 when
// a message could not be made (nothing published), else the batch's
// records (the client refused to publish one of them).
func (u *Uplink) publishBatch(nc *nats.Conn, js jetstream.JetStream, recs []engine.Record, first *nats.Msg, idem *[]engine.IdemEntry, limit int) (int, jetstream.PubAckFuture, error) {
	msgs := []*nats.Msg{first}
	bytes := msgSize(first)
	for i := 1; i < len(recs) && len(msgs) < u.batchMax; i++ {
		r := &recs[i]
		m, err := u.message(r, idemFor(idem, r.LSN))
		if err != nil {
			return 0, nil, err
		}
		sz := msgSize(m)
		if !u.batchable(r.LSN, m, limit) || bytes+sz > maxBatchBytes {
			break
		}
		msgs = append(msgs, m)
		bytes += sz
	}
	id := u.batchIDs.id(recs[0].LSN)
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i == len(msgs)-1 {
			m.Header.Set(hdrBatchCommit, "1")
			fut, err := js.PublishMsgAsync(m)
			return len(msgs), fut, err
		}
		if err := nc.PublishMsg(m); err != nil {
			return len(msgs), nil, err
		}
	}
	return 0, nil, errors.New("empty batch") // not reached: msgs holds first
}

const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// unitRefused is the error that ends a session when JetStream refused
// unit p, or did not acknowledge it in time (errAckTimeout). A batch's
// records go alone at the next session either way (a refusal then names
// its record: refusedRecord counts only those; the stream may hold a batch
// acknowledged late, whose re-sent records the Nats-Msg-Id drops one by
// one, where a batch holding them would be refused whole), and a batch too
// large for the server's max_batch_size is halved.
func (u *Uplink) unitRefused(p inflight, err error) error {
	if !p.batch {
		if errors.Is(err, errAckTimeout) {
			return fmt.Errorf("lsn %d: %w", p.lsn, err)
		}
		return &publishError{p.lsn, err}
	}
	u.aloneUntil = max(u.aloneUntil, p.lsn)
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jsErrCodeBatchTooLarge && u.batchMax > 1 {
		u.batchMax /= 2
	}
	return &batchError{first: p.first, last: p.lsn, err: err}
}

// lostConn reports whether a publish failed for the connection, not for
// the message.
func lostConn(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// batchError is JetStream's refusal of an atomic batch.
type batchError struct {
	first, last uint64
	err         error
}

func (e *batchError) Error() string {
	return fmt.Sprintf("atomic batch of lsn %d..%d: %v (its records go alone next)", e.first, e.last, e.err)
}
func (e *batchError) Unwrap() error { return e.err }

// jsErrCodeBatchTooLarge is nats-server's JSAtomicPublishTooLargeBatchErrF
// (nats.go names no atomic-batch error codes).
const jsErrCodeBatchTooLarge jetstream.ErrorCode = 10199
