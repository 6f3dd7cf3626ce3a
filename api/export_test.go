package api

import (
	"log/slog"
	"net/http/httptest"
	"time"
)

// Unexported functions the external tests (package api_test) check.
var (
	AppendAckForTest     = appendAck
	AppendDurableForTest = appendDurable
)

// RetryAfterForTest is the Retry-After header fail writes for err, on a
// server whose configured retry_after is 1 s.
func RetryAfterForTest(err error) string {
	s := &Server{cfg: Config{RetryAfter: time.Second}, log: slog.New(slog.DiscardHandler)}
	w := httptest.NewRecorder()
	s.fail(w, httptest.NewRequest("POST", "/v1/drivers/d/locations", nil), err)
	return w.Header().Get("Retry-After")
}

// SetResponseWriteTimeoutForTest sets the write timeout of long answers
// (backups, history pages) and answers the function that restores it.
func SetResponseWriteTimeoutForTest(d time.Duration) func() {
	old := responseWriteTimeout
	responseWriteTimeout = d
	return func() { responseWriteTimeout = old }
}
