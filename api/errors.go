package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"routehound/engine"
	"routehound/fleet"
	"routehound/hub"
)

// errWarehouseFull marks the warehouse lane's ErrLaneFull.
var errWarehouseFull = errors.New("warehouse lane full")

// laneError tags an engine error with the lane it came from, for the
// answers that differ per lane.
func laneError(lane engine.Lane, err error) error {
	if lane == engine.LaneWarehouse && errors.Is(err, engine.ErrLaneFull) {
		return fmt.Errorf("%w: %w", errWarehouseFull, err)
	}
	return err
}

// apiError is a refusal with a stable code.
type apiError struct {
	status  int
	code    string
	message string
	retry   time.Duration // the Retry-After of a 429 or 503, when not the default
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// retryAfter is how long a client refused with err should wait: for a full
// lane, how long its queue takes to drain at the rate the committer drains
// it now (a stalled disk asks for longer), at most maxRetryAfter; else the
// configured retry_after.
func (s *Server) retryAfter(err error) time.Duration {
	var ae *apiError
	if errors.As(err, &ae) && ae.retry > 0 {
		return ae.retry
	}
	var lf *engine.LaneFullError
	if errors.As(err, &lf) && lf.RetryAfter > 0 {
		return min(lf.RetryAfter, maxRetryAfter)
	}
	return s.cfg.RetryAfter
}

// maxRetryAfter caps a Retry-After derived from a lane's drain rate.
const maxRetryAfter = 30 * time.Second

// fail writes err as a JSON error. Engine sentinels are mapped here and
// nowhere else; anything unknown is a 500 that is logged.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = s.mapEngineError(err)
		if ae.status == http.StatusInternalServerError {
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
	}
	var retryMS int64
	if ae.status == http.StatusTooManyRequests || ae.status == http.StatusServiceUnavailable {
		d := s.retryAfter(err)
		secs := int((d + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		// The header counts whole seconds; the body says the measured
		// wait to the millisecond, so that a client refused by the driver
		// limit for 20 ms does not idle for a second (retry_after_ms).
		retryMS = max(d.Milliseconds(), 1)
	}
	switch ae.code {
	case "upgrade_required":
		w.Header().Set("Upgrade", "websocket")
	case "bad_handshake":
		w.Header().Set("Sec-WebSocket-Version", "13")
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="routehound"`)
	}
	if retryMS > 0 {
		writeJSON(w, ae.status, retryBody{Code: ae.code, Message: ae.message, RetryAfterMS: retryMS})
		return
	}
	writeJSON(w, ae.status, map[string]string{"code": ae.code, "message": ae.message})
}

// retryBody is the error body of a 429 or 503.
type retryBody struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms"`
}

func (s *Server) mapEngineError(err error) *apiError {
	switch {
	case errors.Is(err, errWarehouseFull):
		// DESIGN.md: a loading event at the queue bound gets 503; the
		// terminal's event waits for a later retry, not the driver's 429.
		return errorf(http.StatusServiceUnavailable, "lane_full", "the warehouse queue is at its bound; retry after the Retry-After delay")
	case errors.Is(err, engine.ErrLaneFull):
		return errorf(http.StatusTooManyRequests, "lane_full", "this actor's lane is at its bound; retry after the Retry-After delay")
	case errors.Is(err, engine.ErrTooManyDrivers):
		return errorf(http.StatusTooManyRequests, "too_many_drivers", "the number of distinct drivers reached committer.max_drivers")
	case errors.Is(err, engine.ErrQueueTimeout):
		return errorf(http.StatusServiceUnavailable, "queue_timeout", "the write waited in the queue past the lane's max_wait and was not applied; retry")
	case errors.Is(err, engine.ErrDiskReserved):
		return errorf(http.StatusInsufficientStorage, "disk_reserved", "free disk space is down to the headroom kept for the fleet's writes (storage.reserve_mb): user tables do not grow; delete keys or free disk space")
	case errors.Is(err, engine.ErrQuotaExceeded):
		return errorf(http.StatusForbidden, "quota_exceeded", "%s", strings.TrimPrefix(err.Error(), engine.ErrQuotaExceeded.Error()+": "))
	case errors.Is(err, engine.ErrDiskLow):
		return errorf(http.StatusServiceUnavailable, "disk_low", "free disk space is below the watermark; writes are refused")
	case errors.Is(err, engine.ErrReopening):
		return errorf(http.StatusServiceUnavailable, "unavailable", "the store is being reopened after a storage failure; retry after the Retry-After delay")
	case errors.Is(err, ErrNotReplicated):
		return errorf(http.StatusServiceUnavailable, "not_replicated", "the write is durable on this box, but JetStream did not acknowledge it within [uplink] replicate_timeout; retry with the same Idempotency-Key (it answers this write once it is in the stream)")
	case errors.Is(err, engine.ErrCentralReadOnly):
		return errorf(http.StatusServiceUnavailable, "central_read_only", "%s; write to the depot's own box", centralMessage(err))
	case errors.Is(err, engine.ErrNotPrimary):
		return errorf(http.StatusServiceUnavailable, "not_primary", "%s", notPrimaryMessage(err))
	case errors.Is(err, engine.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, "unavailable", "the server is not accepting writes (shutting down or storage failed)")
	case errors.Is(err, engine.ErrVersionConflict):
		return errorf(http.StatusConflict, "version_conflict", "If-Match does not name the current version")
	case errors.Is(err, engine.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "no such key")
	case errors.Is(err, engine.ErrIdempotencyMismatch):
		return errorf(http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
	case errors.Is(err, engine.ErrValueTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "value_too_large", "the value is larger than http.max_value_bytes (%s)", strings.TrimPrefix(err.Error(), engine.ErrValueTooLarge.Error()+": "))
	case errors.Is(err, engine.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "the write is larger than one batch may hold")
	case errors.Is(err, hub.ErrTooManySubscribers):
		return errorf(http.StatusTooManyRequests, "too_many_subscribers", "%s", strings.TrimPrefix(err.Error(), "hub: too many subscribers: "))
	case errors.Is(err, hub.ErrClosed):
		return errorf(http.StatusServiceUnavailable, "unavailable", "the server is shutting down")
	case errors.Is(err, fleet.ErrReadOnly):
		// The engine's write authority: a built-in table is written only
		// by its actor's command.
		return errorf(http.StatusForbidden, "read_only_table", "%s", fleet.Message(err))
	case errors.Is(err, fleet.ErrBadName):
		return errorf(http.StatusBadRequest, "bad_name", "%s", fleet.Message(err))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client went away while its write waited for the commit. The
		// write itself is admitted and will commit; a retry with the same
		// Idempotency-Key (or seq) gets its answer.
		return errorf(http.StatusServiceUnavailable, "canceled", "the request ended before its commit was confirmed; retry with the same Idempotency-Key")
	case errors.Is(err, engine.ErrTrimmed):
		return errorf(http.StatusGone, "lsn_trimmed", "the log no longer holds records after this LSN (retention); start again from a snapshot")
	}
	return errorf(http.StatusInternalServerError, "internal", "internal error")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// describe maps an error to its status, code and message, for the error
// frames of the WebSockets (ws.go, driverstream.go).
func (s *Server) describe(err error) (int, string, string) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = s.mapEngineError(err)
		if ae.status == http.StatusInternalServerError {
			s.log.Error("stream failed", "err", err)
		}
	}
	return ae.status, ae.code, ae.message
}

// centralMessage says why a central view takes no writes.
func centralMessage(err error) string {
	var np *engine.NotPrimaryError
	if errors.As(err, &np) && np.Why != "" {
		return np.Why
	}
	return "this box is a central view of several depots: it serves reads only"
}

// notPrimaryMessage says why a box takes no writes (a standby, a fenced
// primary) and where they go instead.
func notPrimaryMessage(err error) string {
	var np *engine.NotPrimaryError
	why := "this box is not the primary of its depot"
	if errors.As(err, &np) && np.Why != "" {
		why = np.Why
	}
	return why + "; write to the primary (or promote this box: POST /v1/admin/promote)"
}
