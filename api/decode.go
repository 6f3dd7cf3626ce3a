package api

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"

	"routehound/fleet"
)

// readBody reads a JSON request body within the size limit: 415 when the
// Content-Type says it is not JSON, 413 past the limit, 400 when empty.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json, not %q", ct)
		}
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "body of %d bytes is over the limit of %d", r.ContentLength, s.cfg.MaxBodyBytes)
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), r.ContentLength)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "body over the limit of %d bytes", s.cfg.MaxBodyBytes)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// netguard.BodyDeadline: the connection is closed after this answer.
		return nil, errorf(http.StatusBadRequest, "bad_body", "the body did not arrive within http.body_read_timeout")
	case err != nil:
		return nil, errorf(http.StatusBadRequest, "bad_body", "reading the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errorf(http.StatusBadRequest, "bad_json", "empty body; a JSON value is required")
	}
	return body, nil
}

// readAll reads a body of n bytes (its Content-Length; -1 when unknown)
// into one buffer of that size when it is small: io.ReadAll grows its
// buffer by doubling, allocating about twice the body, on the path of every
// driver batch.
// net/http ends the body after Content-Length bytes, and a shorter body
// is an error (io.ErrUnexpectedEOF).
func readAll(r io.Reader, n int64) ([]byte, error) {
	if n <= 0 || n > readAllUpfront {
		// Unknown, or large: grow with what arrives, so that a client
		// declaring a megabyte and sending a byte holds no megabyte.
		return io.ReadAll(r)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readAllUpfront is the largest body readAll allocates before it arrives:
// a driver's 100-point batch is about 10 KiB.
const readAllUpfront = 64 << 10

// refusal is the API's answer to a refusal of the domain's rules (package
// fleet): a BodyError keeps its code, a NameError is bad_name. Other
// errors are returned as they are, nil as nil.
func refusal(err error) error {
	var be *fleet.BodyError
	var ne *fleet.NameError
	switch {
	case errors.As(err, &be):
		switch be.Code {
		case fleet.CodeInvalidField:
			return errorf(http.StatusBadRequest, "invalid_field", "%s", be.Message)
		case fleet.CodeUnknownField:
			return errorf(http.StatusBadRequest, "unknown_field", "%s", be.Message)
		case fleet.CodeTooManyPoints:
			return errorf(http.StatusRequestEntityTooLarge, "too_many_points", "%s", be.Message)
		case fleet.CodeRouteTooLarge:
			return errorf(http.StatusRequestEntityTooLarge, "route_too_large", "%s", be.Message)
		}
		return errorf(http.StatusBadRequest, "bad_json", "%s", be.Message)
	case errors.As(err, &ne):
		return errorf(http.StatusBadRequest, "bad_name", "%s", ne.Reason)
	}
	return err
}

// strict decodes exactly one JSON value into v, refusing unknown fields
// and trailing data (fleet.Strict).
func strict(raw []byte, v any) error { return refusal(fleet.Strict(raw, v)) }

// invalid refuses one field of a body (invalid_field).
func invalid(field, format string, args ...any) error {
	return refusal(fleet.Invalid(field, format, args...))
}

// checkName validates an identifier taken from a path or a body
// (bad_name).
func checkName(what, v string) error { return refusal(fleet.CheckName(what, v)) }

// checkTable validates a table name (bad_name).
func checkTable(name string) error { return checkName("table", name) }

// checkKey validates a key (bad_key).
func checkKey(key string) error {
	if err := fleet.CheckKey(key); err != nil {
		return errorf(http.StatusBadRequest, "bad_key", "%s", fleet.Message(err))
	}
	return nil
}

// idempotencyKey reads the required Idempotency-Key header.
func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	if k == "" {
		return "", errorf(http.StatusPreconditionRequired, "idempotency_key_required", "this endpoint needs an Idempotency-Key header so that a retry is not applied twice")
	}
	if len(k) > 255 || strings.ContainsRune(k, 0) {
		return "", errorf(http.StatusBadRequest, "bad_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
	}
	return k, nil
}

// ifMatch reads If-Match: a bare version number, or "N" / W/"N" (ETag form).
// ok is false when the header is absent.
func ifMatch(r *http.Request) (version uint64, ok bool, err error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return 0, false, nil
	}
	v := strings.TrimPrefix(h, "W/")
	v = strings.Trim(v, `"`)
	n, perr := strconv.ParseUint(v, 10, 64)
	if perr != nil {
		return 0, false, errorf(http.StatusBadRequest, "bad_if_match", "If-Match %q is not a version number", h)
	}
	return n, true, nil
}

// etag is the ETag form of a version.
func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }
