package api

import (
	"errors"
	"net/http"
	"testing"

	"routehound/fleet"
)

// Every refusal of the domain's rules is answered with its code, its
// message as it is and the status docs/openapi.yaml documents.
func TestRefusal(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{fleet.Invalid("lat", "required"), http.StatusBadRequest, "invalid_field"},
		{&fleet.BodyError{Code: fleet.CodeUnknownField, Message: "m"}, http.StatusBadRequest, "unknown_field"},
		{&fleet.BodyError{Code: fleet.CodeBadJSON, Message: "m"}, http.StatusBadRequest, "bad_json"},
		{&fleet.BodyError{Code: fleet.CodeTooManyPoints, Message: "m"}, http.StatusRequestEntityTooLarge, "too_many_points"},
		{fleet.CheckName("driver", "a b"), http.StatusBadRequest, "bad_name"},
	} {
		var ae *apiError
		if !errors.As(refusal(c.err), &ae) || ae.status != c.status || ae.code != c.code || ae.message != fleet.Message(c.err) {
			t.Errorf("%v: got %+v, want %d %s", c.err, ae, c.status, c.code)
		}
	}
	if refusal(nil) != nil {
		t.Fatal("nil is refused")
	}
	other := errors.New("other")
	if refusal(other) != other {
		t.Fatal("an error of another kind is changed")
	}
	if err := checkKey("a\x01b"); err.(*apiError).code != "bad_key" || err.(*apiError).message != "a key may not hold control characters" {
		t.Fatal(err)
	}
}
