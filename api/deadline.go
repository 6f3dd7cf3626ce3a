package api

import (
	"errors"
	"net/http"
	"time"
)

// responseWriteTimeout bounds each write of a long answer (a backup's
// frames, a history page) to its client: the server has no WriteTimeout
// (streams run for hours), so without it a client that stops reading
// holds the answer's resources for as long as its connection lives — a
// backup its slot, its snapshot's read version and a store read lock. A
// write that cannot hand its bytes to the client's connection within the
// timeout fails, the answer ends and the connection is closed. A variable
// for the tests.
var responseWriteTimeout = 30 * time.Second

// maxDeadlineWrite is the most one deadline covers: a larger write is cut
// into pieces of this size, each with a fresh deadline, so that the bound
// is on the client's progress (this many bytes per responseWriteTimeout),
// not on the whole answer's time.
const maxDeadlineWrite = 64 << 10

// deadlineWriter writes to an http.ResponseWriter, setting the
// connection's write deadline before each write. The deadline it leaves
// covers the server's last flush of the answer; net/http clears it before
// the connection's next request.
type deadlineWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func newDeadlineWriter(w http.ResponseWriter) *deadlineWriter {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: responseWriteTimeout}
}

// extend sets the deadline to now + timeout (a ResponseWriter without
// deadlines, such as a test recorder, is written without one).
func (d *deadlineWriter) extend() error {
	if err := d.rc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), maxDeadlineWrite)
		if err := d.extend(); err != nil {
			return n, err
		}
		m, err := d.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// Flush writes what the ResponseWriter buffers, under a fresh deadline.
func (d *deadlineWriter) Flush() error {
	if err := d.extend(); err != nil {
		return err
	}
	if err := d.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
