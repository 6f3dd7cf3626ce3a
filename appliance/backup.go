package appliance

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"routehound/api"
	"routehound/config"
	"routehound/engine"
	"routehound/wal"
)

// Backup and restore (`routehound backup`, `restore`, `replica snapshot`):
// the server streams a backup at one LSN (api, GET /v1/admin/backup); these
// save it, load it into a new data dir, and copy the read replica.

// tokensTOML is the tokens in force as tokens.toml text.
func tokensTOML(tokens []config.Token) []byte {
	var b bytes.Buffer
	b.WriteString("# Restored from a RouteHound backup: the tokens in force when it was taken.\n")
	b.WriteString("# Keep this file secret (mode 0600).\n")
	for _, t := range tokens {
		fmt.Fprintf(&b, "\n[[tokens]]\nrole = %q\ntoken = %q\n", t.Role, t.Token)
	}
	return b.Bytes()
}

// FetchBackup asks the server at baseURL for a backup (admin token) and
// saves it at path: written to a new temporary file beside it
// (os.CreateTemp: created, never reused or followed, mode 0600, since the
// backup holds the admin tokens), fsynced, read back and verified whole
// (api.VerifyBackup), then renamed to path. A backup cut short never takes
// path.
func FetchBackup(ctx context.Context, client *http.Client, baseURL, token, path string) (api.BackupHeader, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(baseURL, "/")+"/v1/admin/backup", nil)
	if err != nil {
		return api.BackupHeader{}, fmt.Errorf("backup: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return api.BackupHeader{}, fmt.Errorf("backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Code, Message string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			return api.BackupHeader{}, fmt.Errorf("backup: the server answered %d %s: %s", resp.StatusCode, e.Code, e.Message)
		}
		return api.BackupHeader{}, fmt.Errorf("backup: the server answered %d", resp.StatusCode)
	}
	// Not path+".tmp" opened with O_CREATE|O_TRUNC: that keeps the mode
	// of a .tmp left there (0644: the tokens readable) and follows a
	// symlink. CreateTemp makes a new file (O_EXCL), mode 0600.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return api.BackupHeader{}, fmt.Errorf("backup: %w", err)
	}
	tmp := f.Name()
	_, err = io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var h api.BackupHeader
	if err == nil {
		h, err = verifyFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return api.BackupHeader{}, fmt.Errorf("backup to %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return h, nil
}

func verifyFile(path string) (api.BackupHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.BackupHeader{}, err
	}
	defer f.Close()
	return api.VerifyBackup(f)
}

// writeFileSync writes a new file and fsyncs it (syncing its directory
// alone does not make its contents durable).
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDirErr fsyncs a directory (its entries' names).
func syncDirErr(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// RestoringMarker is the file a restore writes (and fsyncs) into the data
// dir before anything else and removes last: a data dir holding it is a
// restore that did not finish (killed, crashed, power lost), with a store
// loaded only in part, and Start refuses it.
const RestoringMarker = ".restoring"

// CheckNotRestoring refuses a data dir holding RestoringMarker, in one
// line that says what to do.
func CheckNotRestoring(dir string) error {
	marker := filepath.Join(dir, RestoringMarker)
	_, err := os.Lstat(marker)
	if err == nil {
		return &startError{err: ErrUnfinishedRestore, msg: fmt.Sprintf(
			"data dir %s holds an unfinished restore (%s is there: the restore was interrupted and the store may be loaded only in part); delete the directory and run `routehound restore FILE --data %s` again", dir, marker, dir)}
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	return nil
}

// restoreStoreLoaded, when set (tests), runs once the store is loaded,
// before tokens.toml and the replica: a test panics there to play a
// restore killed partway.
var restoreStoreLoaded func()

// ErrUnfinishedRestore is a data dir whose restore did not finish.
var ErrUnfinishedRestore = errors.New("unfinished restore")

// Restore makes cfg.DataDir a data dir holding the backup at path: it
// refuses a non-empty directory, verifies the whole file first (its
// checksum), writes RestoringMarker, loads the store, writes the backup's
// tokens to tokens.toml (mode 0600) and builds the read replica from the
// restored log, then removes the marker. A failed restore leaves the
// directory as empty as it found it; a restore killed partway leaves the
// marker, and serve refuses the directory.
func Restore(cfg config.Config, path string, log *slog.Logger) (api.BackupHeader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return api.BackupHeader{}, fmt.Errorf("restore: data dir %s: %w", cfg.DataDir, err)
	}
	ents, err := os.ReadDir(dir)
	existed := err == nil
	switch {
	case err == nil && len(ents) > 0:
		return api.BackupHeader{}, fmt.Errorf("restore: data dir %s is not empty; restore into a new or empty directory", dir)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return api.BackupHeader{}, fmt.Errorf("restore: data dir %s: %w", dir, err)
	}
	h, err := verifyFile(path)
	if err != nil {
		return h, fmt.Errorf("restore: %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return h, fmt.Errorf("restore: %w", err)
	}
	err = writeFileSync(filepath.Join(dir, RestoringMarker), []byte("a restore is loading this data dir; if no restore runs, it was interrupted: delete the directory and restore again\n"), 0o600)
	if err == nil {
		err = syncDirErr(dir)
	}
	if err == nil {
		err = restoreInto(cfg, dir, path, h, log)
	}
	if err == nil {
		// Last: everything restoreInto wrote is durable (it synced the
		// store, tokens.toml, the replica and dir) before the marker goes.
		if err = os.Remove(filepath.Join(dir, RestoringMarker)); err == nil {
			err = syncDirErr(dir)
		}
		if err != nil {
			err = fmt.Errorf("restore: %w", err)
		}
	}
	if err != nil {
		// Leave the directory as it was found.
		if existed {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		} else {
			os.RemoveAll(dir)
		}
		return h, err
	}
	return h, nil
}

func restoreInto(cfg config.Config, dir, path string, h api.BackupHeader, log *slog.Logger) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	_, body, err := api.ReadBackup(f)
	if err != nil {
		return fmt.Errorf("restore: %s: %w", path, err)
	}
	storeDir := filepath.Join(dir, "store")
	if err := wal.Restore(storeDir, body); err != nil {
		return fmt.Errorf("restore: %s: %w", path, err)
	}
	if restoreStoreLoaded != nil {
		restoreStoreLoaded()
	}
	if len(h.Tokens) > 0 {
		if err := writeFileSync(filepath.Join(dir, config.TokensFile), h.Tokens, 0o600); err != nil {
			return fmt.Errorf("restore: tokens: %w", err)
		}
	}
	// Open the restored store as serve would, check its LSN, and build
	// the read replica from it.
	eng, err := engine.Open(EngineConfig(cfg, ""), wal.Options{Dir: storeDir, MemoryBytes: cfg.Storage.MemoryMB << 20, Logger: log}, log)
	if err != nil {
		return fmt.Errorf("restore: open the restored store: %w", err)
	}
	defer func() {
		eng.Close(context.Background())
		eng.CloseStore()
	}()
	if got := eng.StoreStats().LastLSN; got != h.LSN {
		return fmt.Errorf("restore: the restored store ends at lsn %d, the backup says %d", got, h.LSN)
	}
	rep, err := openReplica(filepath.Join(dir, "replica.db"), eng, log)
	if err != nil {
		return fmt.Errorf("restore: build the replica: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	werr := rep.WaitLSN(ctx, h.LSN)
	if err := rep.Close(); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("restore: build the replica to lsn %d: %w", h.LSN, werr)
	}
	syncDir(dir)
	return nil
}

// ReplicaSnapshot writes a consistent, read-only copy of the read replica
// (DATA_DIR/replica.db) to path with SQLite's VACUUM INTO: one read
// transaction, so the copy is the replica at one LSN, while the server
// goes on writing it. path must not exist.
func ReplicaSnapshot(dataDir, path string) error {
	src := filepath.Join(dataDir, "replica.db")
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("replica snapshot: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("replica snapshot: %s exists; choose a new file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("replica snapshot: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+src+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("replica snapshot: %w", err)
	}
	defer db.Close()
	if _, err := db.Exec("VACUUM INTO ?", abs); err != nil {
		return fmt.Errorf("replica snapshot of %s into %s: %w", src, abs, err)
	}
	if err := os.Chmod(abs, 0o400); err != nil {
		return fmt.Errorf("replica snapshot: %w", err)
	}
	return nil
}
