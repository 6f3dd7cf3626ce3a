package appliance

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"routehound/api"
)

// backupServer answers GET /v1/admin/backup with a small, whole backup
// holding a token.
func backupServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := api.BackupHeader{LSN: 7, CreatedAt: time.Now().UTC(), Tokens: []byte("[[tokens]]\nrole = \"admin\"\ntoken = \"secret\"\n")}
		api.WriteBackup(w, h, func(out io.Writer) error { _, err := out.Write([]byte("frames")); return err })
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestFetchBackupTempFile: the backup (it holds the admin tokens) is
// written to a new temporary file of mode 0600: a FILE.tmp left there
// with mode 0644, or a symlink at FILE.tmp, is neither reused nor
// followed.
func TestFetchBackupTempFile(t *testing.T) {
	srv := backupServer(t)
	dir := t.TempDir()

	// A stale FILE.tmp, world-readable.
	path := filepath.Join(dir, "a.backup")
	if err := os.WriteFile(path+".tmp", []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if h, err := FetchBackup(context.Background(), srv.Client(), srv.URL, "tok", path); err != nil || h.LSN != 7 {
		t.Fatalf("backup: %+v %v", h, err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != 0o600 {
		t.Fatalf("the backup %s: %v, mode %v, want a regular file of mode 0600", path, err, fi.Mode())
	}

	// A symlink at FILE.tmp to another file.
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("victim"), 0o644); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "b.backup")
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if _, err := FetchBackup(context.Background(), srv.Client(), srv.URL, "tok", path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "victim" {
		t.Fatalf("the symlink's target was written: %q %v", b, err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != 0o600 {
		t.Fatalf("the backup %s: %v, mode %v, want a regular file of mode 0600", path, err, fi.Mode())
	}
	if _, err := verifyFile(path); err != nil {
		t.Fatal(err)
	}
	// No temporary file of ours is left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		switch e.Name() {
		case "a.backup", "a.backup.tmp", "b.backup", "b.backup.tmp", "victim":
		default:
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
