package fleet

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxName is the longest identifier (CheckName) in bytes; MaxKey the
// longest table key (CheckKey).
const (
	MaxName = 128
	MaxKey  = 512
)

// CheckName validates an identifier (driver, route, table name): 1..128
// bytes of letters, digits and . _ - : @ ~. what names it in the refusal.
// The wal relies on names holding no 0x00 (it separates table and key with
// one).
func CheckName(what, v string) error {
	if v == "" || len(v) > MaxName {
		return &NameError{What: what, Reason: what + " must be 1 to 128 characters"}
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@~", c) >= 0) {
			return &NameError{What: what, Reason: what + " " + strconv.Quote(v) + ": only letters, digits and . _ - : @ ~ are allowed"}
		}
	}
	return nil
}

// CheckKey validates a table key: 1..512 bytes of UTF-8 without control
// characters.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKey || !utf8.ValidString(key) {
		return &NameError{What: "key", Reason: "a key is 1 to 512 bytes of UTF-8"}
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return &NameError{What: "key", Reason: "a key may not hold control characters"}
		}
	}
	return nil
}
