package uplink

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fencing: one writer per depot in the stream (issue 20).
//
// The stream holds, beside the depot's records, its epoch markers on the
// subject routehound.<depot>.$epoch ('$' is in no table name): one message
// per epoch, header Routehound-Epoch N, and Routehound-Lsn the last LSN of
// the depot before the epoch began. The writer of epoch N publishes every
// record with Nats-Expected-Last-Subject-Sequence = the stream sequence of
// its marker and Nats-Expected-Last-Subject-Sequence-Subject = the marker's
// subject: JetStream stores the record only while that marker is still the
// depot's last one. A standby that is promoted publishes the marker of
// epoch N+1, itself expecting the depot's last message (any subject of the
// depot) to be the last one it applied; from then on JetStream refuses
// every record of the old writer ("wrong last sequence"), so two writers
// never interleave, and the promoted standby's own LSNs follow the last
// record the stream holds. An old primary learns at its next session that
// the stream's epoch is newer than its own (kept in uplink.json), stops
// shipping for good and makes its engine refuse writes (Config.OnFenced).

const (
	// HeaderEpoch is the writer's epoch on every record and marker.
	HeaderEpoch = "Routehound-Epoch"
	// HeaderLSN is a record's LSN; on a marker, the depot's last LSN
	// before the epoch.
	HeaderLSN = "Routehound-Lsn"

	hdrExpectSeq  = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// EpochSubject is the subject of a depot's epoch markers.
func EpochSubject(depot string) string { return "routehound." + depot + ".$epoch" }

// DepotSubjects is the filter of every subject of a depot's records and
// markers.
func DepotSubjects(depot string) string { return "routehound." + depot + ".>" }

// marker is a depot's last epoch marker in the stream.
type marker struct {
	epoch, seq, lsn uint64 // seq: its stream sequence (0: the stream holds none)
}

// lastMarker reads the depot's last epoch marker (a zero marker when the
// stream holds none).
func lastMarker(ctx context.Context, st jetstream.Stream, depot string) (marker, error) {
	m, err := st.GetLastMsgForSubject(ctx, EpochSubject(depot))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return marker{}, nil
	}
	if err != nil {
		return marker{}, fmt.Errorf("the stream's epoch marker of depot %s: %w", depot, err)
	}
	return parseMarker(m.Header, m.Sequence)
}

func parseMarker(h nats.Header, seq uint64) (marker, error) {
	ep, err := strconv.ParseUint(h.Get(HeaderEpoch), 10, 64)
	if err != nil || ep == 0 {
		return marker{}, fmt.Errorf("the epoch marker at seq %d has no %s", seq, HeaderEpoch)
	}
	lsn, _ := strconv.ParseUint(h.Get(HeaderLSN), 10, 64)
	return marker{epoch: ep, seq: seq, lsn: lsn}, nil
}

// publishMarker publishes the marker of epoch after LSN lsn, stored only
// if the last message on expectSubj (a subject or a filter) is at stream
// sequence expectSeq (0: none): the epoch claim and the fence in one
// publish. It answers the marker's stream sequence.
func publishMarker(ctx context.Context, js jetstream.JetStream, depot string, epoch, lsn uint64, expectSubj string, expectSeq uint64) (uint64, error) {
	m := nats.NewMsg(EpochSubject(depot))
	m.Header.Set(HeaderEpoch, strconv.FormatUint(epoch, 10))
	m.Header.Set(HeaderLSN, strconv.FormatUint(lsn, 10))
	// No Nats-Msg-Id: the expected sequence decides between two claims,
	// and a writer claims its epoch again when the stream lost the marker.
	m.Header.Set(hdrExpectSeq, strconv.FormatUint(expectSeq, 10))
	m.Header.Set(hdrExpectSubj, expectSubj)
	m.Data = fmt.Appendf(nil, `{"depot":%q,"epoch":%d,"after_lsn":%d}`, depot, epoch, lsn)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// IsFenceRefusal reports whether err is JetStream refusing a publish
// because the expected last sequence moved: for a record, a newer epoch
// (or a marker the stream's limits removed); for a marker, a message
// published after the one expected.
func IsFenceRefusal(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// fencedError ends shipping for good: the stream's epoch is newer than
// this box's (a standby was promoted in its place).
type fencedError struct {
	own, stream uint64
}

func (e *fencedError) Error() string {
	return fmt.Sprintf("fenced: the stream is at epoch %d of this depot, this box wrote epoch %d (a standby was promoted in its place)", e.stream, e.own)
}

// checkEpoch reads the depot's last epoch marker: one newer than this
// box's epoch fences it (fencedError).
func (u *Uplink) checkEpoch(ctx context.Context, st jetstream.Stream) (marker, error) {
	cctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	mk, err := lastMarker(cctx, st, u.cfg.Depot)
	if err != nil {
		return marker{}, err
	}
	if own := u.epoch.Load(); own > 0 && mk.epoch > own {
		return marker{}, &fencedError{own: own, stream: mk.epoch}
	}
	// (A box that never held an epoch is compared first: another
	// history is a refusal, not a fence; session.)
	return mk, nil
}

// claimEpoch makes this session's records expect this box's epoch marker:
// the stream's last marker when it is this box's epoch, else a new one
// (the first session of a depot, a stream recreated, a marker the stream's
// limits removed), published expecting the marker seen (mk) to be still
// the last, and stored in the state file first.
func (u *Uplink) claimEpoch(ctx context.Context, c *conn, mk marker) error {
	own := u.epoch.Load()
	if mk.epoch == own && own > 0 {
		u.markerSeq = mk.seq
		return nil
	}
	if own == 0 {
		own = 1
		u.epoch.Store(own)
		if err := u.store(u.acked.Load(), u.exact); err != nil {
			return fmt.Errorf("store the epoch before claiming it: %w", err)
		}
		u.saved, u.savedExact = u.acked.Load(), u.exact
	}
	cctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	seq, err := publishMarker(cctx, c.js, u.cfg.Depot, own, u.acked.Load(), EpochSubject(u.cfg.Depot), mk.seq)
	if err != nil {
		return fmt.Errorf("publish the epoch %d marker: %w", own, err)
	}
	u.markerSeq = seq
	u.log.Info("claimed the depot's epoch in the stream", "depot", u.cfg.Depot, "epoch", own, "marker_seq", seq, "after_lsn", u.acked.Load())
	return nil
}

// Epoch is this box's epoch as the depot's writer (0: none claimed yet).
func (u *Uplink) Epoch() uint64 { return u.epoch.Load() }

// Fenced reports whether a standby was promoted in this box's place.
func (u *Uplink) Fenced() bool { return u.fenced.Load() }

// StateEpoch reads the epoch an uplink state file holds, and the epoch
// that fenced it (0, 0: no file, or no epoch claimed): a standby's
// promotion writes its new epoch there, so a restart tells a promoted box
// from a standby.
func StateEpoch(path string) (epoch, fencedBy uint64, err error) {
	st, ok, err := readState(path)
	if err != nil || !ok {
		return 0, 0, err
	}
	return st.Epoch, st.FencedBy, nil
}

// CheckFence asks the stream, once, before the box takes writes, whether
// a newer epoch of the depot is there (a standby was promoted while this
// box was down): then it is fenced from its first request on, not from
// its uplink's first session. It answers whether the box is fenced; a
// stream it cannot reach within ctx tells nothing (false, the error), and
// the uplink's sessions check again.
func (u *Uplink) CheckFence(ctx context.Context) (bool, error) {
	if u.fenced.Load() {
		return true, nil
	}
	if u.epoch.Load() == 0 {
		return false, nil // never held an epoch: the session compares histories first
	}
	c, err := u.connect(ctx)
	if err != nil {
		return false, err
	}
	defer c.nc.Close()
	_, err = u.checkEpoch(ctx, c.st)
	var fe *fencedError
	if !errors.As(err, &fe) {
		return false, err
	}
	u.fenced.Store(true)
	u.fencedBy.Store(fe.stream)
	if err := u.store(u.acked.Load(), u.savedExact); err != nil {
		u.log.Error("cannot store that this box is fenced; a restart learns it again from the stream", "err", err)
	}
	return true, nil
}
