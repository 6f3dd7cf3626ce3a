package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Strict decodes exactly one JSON value of raw into v, refusing unknown
// fields and trailing data. A refusal is a BodyError that names the field
// when it can.
func Strict(raw []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return bodyErrorf(CodeBadJSON, "the body holds more than one JSON value")
	}
	return nil
}

// jsonError turns a decoding error into a refusal that names the field.
func jsonError(err error) *BodyError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return bodyErrorf(CodeBadJSON, "expected %s, got JSON %s", te.Type, te.Value)
		}
		return &BodyError{Code: CodeInvalidField, Field: field,
			Message: fmt.Sprintf("field %q: expected %s, got JSON %s", field, te.Type, te.Value)}
	case errors.As(err, &se):
		return bodyErrorf(CodeBadJSON, "malformed JSON at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return bodyErrorf(CodeBadJSON, "malformed JSON: unexpected end")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no type for it: its text is the only way to
		// tell it apart.
		return bodyErrorf(CodeUnknownField, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return bodyErrorf(CodeBadJSON, "%v", err)
}

// IsArray reports whether the JSON value raw starts with '['.
func IsArray(raw []byte) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '['
}

// Compact returns raw without insignificant whitespace: what the log
// keeps. raw itself when there is nothing to remove (clients usually send
// compact JSON) or when it is not valid JSON.
func Compact(raw []byte) []byte {
	if bytes.IndexAny(raw, " \t\r\n") < 0 {
		return raw
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
