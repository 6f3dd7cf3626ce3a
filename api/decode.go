package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"routehound/engine"
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "body over the limit of %d bytes", s.cfg.MaxBodyBytes)
	case err != nil:
		return nil, errorf(http.StatusBadRequest, "bad_body", "reading the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errorf(http.StatusBadRequest, "bad_json", "empty body; a JSON value is required")
	}
	return body, nil
}

// strict decodes exactly one JSON value into v, refusing unknown fields
// and trailing data.
func strict(raw []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "bad_json", "the body holds more than one JSON value")
	}
	return nil
}

// jsonError turns a decoding error into a refusal that names the field.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return errorf(http.StatusBadRequest, "bad_json", "expected %s, got JSON %s", te.Type, te.Value)
		}
		return errorf(http.StatusBadRequest, "invalid_field", "field %q: expected %s, got JSON %s", field, te.Type, te.Value)
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, "bad_json", "malformed JSON at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "bad_json", "malformed JSON: unexpected end")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errorf(http.StatusBadRequest, "unknown_field", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return errorf(http.StatusBadRequest, "bad_json", "%v", err)
}

// isArray reports whether the JSON value starts with '['.
func isArray(raw []byte) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '['
}

// compact returns raw without insignificant whitespace: what the log keeps.
func compact(raw []byte) []byte {
	if bytes.IndexAny(raw, " \t\r\n") < 0 {
		return raw // nothing to remove (clients usually send compact JSON)
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func invalid(field, format string, args ...any) error {
	return errorf(http.StatusBadRequest, "invalid_field", "field %q: "+format, append([]any{field}, args...)...)
}

func checkLat(field string, v *float64) error {
	if v == nil {
		return invalid(field, "required")
	}
	if math.IsNaN(*v) || *v < -90 || *v > 90 {
		return invalid(field, "latitude %v is outside -90..90", *v)
	}
	return nil
}

func checkLng(field string, v *float64) error {
	if v == nil {
		return invalid(field, "required")
	}
	if math.IsNaN(*v) || *v < -180 || *v > 180 {
		return invalid(field, "longitude %v is outside -180..180", *v)
	}
	return nil
}

func checkTime(field string, v *string, required bool) error {
	if v == nil {
		if required {
			return invalid(field, "required (RFC 3339 time)")
		}
		return nil
	}
	if _, err := time.Parse(time.RFC3339Nano, *v); err != nil {
		return invalid(field, "%q is not an RFC 3339 time", *v)
	}
	return nil
}

// checkName validates an identifier taken from a path or a body.
func checkName(what, v string) error {
	if err := engine.CheckName(what, v); err != nil {
		return errorf(http.StatusBadRequest, "bad_name", "%s", strings.TrimPrefix(err.Error(), "bad name: "))
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
