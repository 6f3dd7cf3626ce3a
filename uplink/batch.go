package uplink

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
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
// restarts: a random prefix and the batch's first LSN.
type batchIDs struct{ prefix string }

func newBatchIDs() batchIDs {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return batchIDs{prefix: strconv.FormatUint(binary.LittleEndian.Uint64(b[:]), 36) + "-"}
}

func (b batchIDs) id(first uint64) string { return b.prefix + strconv.FormatUint(first, 10) }

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
// batch holds and the future of its commit message.
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
			return 0, nil, err
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
// unit p. A refused atomic batch's records go alone at the next session
// (a refusal then names its record: refusedRecord counts only those), and
// a batch too large for the server's max_batch_size is halved.
func (u *Uplink) unitRefused(p inflight, err error) error {
	if !p.batch {
		return &publishError{p.lsn, err}
	}
	u.aloneUntil = max(u.aloneUntil, p.lsn)
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jsErrCodeBatchTooLarge && u.batchMax > 1 {
		u.batchMax /= 2
	}
	return &batchError{first: p.first, last: p.lsn, err: err}
}

// batchError is JetStream's refusal of an atomic batch.
type batchError struct {
	first, last uint64
	err         error
}

func (e *batchError) Error() string {
	return fmt.Sprintf("atomic batch of lsn %d..%d refused (its records go alone next): %v", e.first, e.last, e.err)
}
func (e *batchError) Unwrap() error { return e.err }

// jsErrCodeBatchTooLarge is nats-server's JSAtomicPublishTooLargeBatchErrF
// (nats.go names no atomic-batch error codes).
const jsErrCodeBatchTooLarge jetstream.ErrorCode = 10199
