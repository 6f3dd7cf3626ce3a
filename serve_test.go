package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"routehound/config"
)

// The generated tokens are printed only to a terminal; otherwise (systemd,
// a container: stdout goes to a journal) only the path of tokens.toml is
// (issue 18).
func TestTokensPrintedOnlyToATerminal(t *testing.T) {
	toks := []config.Token{{Role: "admin", Token: "admin-0123456789abcdef"}}
	var b bytes.Buffer
	printTokens(&b, false, "/var/lib/routehound/tokens.toml", toks)
	if strings.Contains(b.String(), toks[0].Token) || !strings.Contains(b.String(), "/var/lib/routehound/tokens.toml") {
		t.Fatalf("not a terminal: %q", b.String())
	}
	b.Reset()
	printTokens(&b, true, "/var/lib/routehound/tokens.toml", toks)
	if !strings.Contains(b.String(), toks[0].Token) {
		t.Fatalf("a terminal: %q", b.String())
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Fatal("a regular file taken for a terminal")
	}
}
