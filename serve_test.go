package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"routehound/config"
)

// The generated tokens are printed on the first start, except when stdout
// goes to the systemd journal (which others may read): then only the path
// of tokens.toml is (issue 18).
func TestTokensNotPrintedToTheJournal(t *testing.T) {
	toks := []config.Token{{Role: "admin", Token: "admin-0123456789abcdef"}}
	var b bytes.Buffer
	printTokens(&b, true, "/var/lib/routehound/tokens.toml", toks)
	if strings.Contains(b.String(), toks[0].Token) || !strings.Contains(b.String(), "/var/lib/routehound/tokens.toml") {
		t.Fatalf("to the journal: %q", b.String())
	}
	b.Reset()
	printTokens(&b, false, "/var/lib/routehound/tokens.toml", toks)
	if !strings.Contains(b.String(), toks[0].Token) {
		t.Fatalf("not to the journal: %q", b.String())
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Setenv("JOURNAL_STREAM", "")
	if toJournal(f) {
		t.Fatal("a file taken for the journal without JOURNAL_STREAM")
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !toJournal(f) {
		t.Fatal("the stream JOURNAL_STREAM names is not taken for the journal")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if toJournal(f) {
		t.Fatal("another stream taken for the journal")
	}
}

// Every start says where the tokens are, not only the first one: a start
// that reads tokens.toml names it, one whose config names the tokens names
// the config (issue 23).
func TestStartNamesWhereTheTokensAre(t *testing.T) {
	toks := []config.Token{{Role: "admin", Token: "admin-0123456789abcdef"}}
	urls := []string{"http://127.0.0.1:8080/ui/"}
	var b bytes.Buffer
	printStart(&b, false, false, false, "", "/srv/data/tokens.toml", toks, urls)
	if s := b.String(); !strings.Contains(s, "/srv/data/tokens.toml") || !strings.Contains(s, urls[0]) || strings.Contains(s, toks[0].Token) {
		t.Fatalf("a later start: %q", s)
	}
	b.Reset()
	printStart(&b, false, false, true, "/etc/routehound.toml", "/srv/data/tokens.toml", toks, urls)
	if s := b.String(); !strings.Contains(s, "/etc/routehound.toml") || strings.Contains(s, "tokens.toml") {
		t.Fatalf("tokens from the config: %q", s)
	}
	b.Reset()
	printStart(&b, false, true, false, "", "/srv/data/tokens.toml", toks, urls)
	if s := b.String(); !strings.Contains(s, toks[0].Token) || !strings.Contains(s, urls[0]) {
		t.Fatalf("the first start: %q", s)
	}
}

// --help is no failure (main exits 0 on flag.ErrHelp), and version names
// the program and the Go version.
func TestHelpAndVersion(t *testing.T) {
	if err := serve([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("serve --help: %v", err)
	}
	if err := simCmd([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("sim --help: %v", err)
	}
	if err := benchCmd([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("bench --help: %v", err)
	}
	// The usage prints no sentinel defaults ("(default -1)", "(default -1ns)").
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = f
	for _, cmd := range []func([]string) error{serve, simCmd} {
		cmd([]string{"--help"})
	}
	os.Stderr = stderr
	f.Close()
	usage, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(usage), "(default -1") || !strings.Contains(string(usage), "-fail-on-sla") {
		t.Errorf("usage:\n%s", usage)
	}
	var b bytes.Buffer
	version(&b)
	if s := b.String(); !strings.HasPrefix(s, "routehound ") || !strings.Contains(s, runtime.Version()) {
		t.Errorf("version: %q", s)
	}
}
