package fleet

import (
	"errors"
	"fmt"
)

// ErrBadName matches (errors.Is) every NameError.
var ErrBadName = errors.New("bad name")

// NameError refuses an identifier (a driver, route, table name or device
// id) or a table key. Each front door picks its own code for it (bad_name,
// bad_key, bad_device_id, bad_table) and answers Reason.
type NameError struct {
	What   string // what was refused: "table", "driver", "device id", "key", …
	Reason string // the message for the client, e.g. `table "a b": only letters, digits and . _ - : @ ~ are allowed`
}

// Error is "bad name: " and the reason.
func (e *NameError) Error() string { return "bad name: " + e.Reason }

// Is makes errors.Is(err, ErrBadName) hold.
func (e *NameError) Is(target error) bool { return target == ErrBadName }

// The codes of a BodyError: the API answers them as they are.
const (
	CodeBadJSON       = "bad_json"        // not one JSON value of the expected shape
	CodeInvalidField  = "invalid_field"   // a field is missing, of the wrong type or out of its range
	CodeUnknownField  = "unknown_field"   // a field the value does not have
	CodeTooManyPoints = "too_many_points" // more points in one request than the driver lane holds
	CodeRouteTooLarge = "route_too_large" // a route whose progress would not fit one write of the fleet-events consumer
)

// BodyError refuses a request body: Code says how (one of the Code
// constants), Field names the refused field when there is one
// ("stops[0].lat"), Message is the text for the client.
type BodyError struct {
	Code    string
	Field   string
	Message string
}

// Error is the code and the message.
func (e *BodyError) Error() string { return e.Code + ": " + e.Message }

// Invalid refuses one field: its message is `field "<field>": ` and the
// formatted reason.
func Invalid(field, format string, args ...any) *BodyError {
	return &BodyError{Code: CodeInvalidField, Field: field,
		Message: fmt.Sprintf("field %q: "+format, append([]any{field}, args...)...)}
}

func bodyErrorf(code, format string, args ...any) *BodyError {
	return &BodyError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Message is what a client is told of a refusal by the rules of this
// package: the reason of a NameError, the message of a BodyError or of a
// ReadOnlyError; for any other error its text.
func Message(err error) string {
	var ne *NameError
	var be *BodyError
	var ro *ReadOnlyError
	switch {
	case errors.As(err, &ne):
		return ne.Reason
	case errors.As(err, &be):
		return be.Message
	case errors.As(err, &ro):
		return ro.Error()
	}
	return err.Error()
}
