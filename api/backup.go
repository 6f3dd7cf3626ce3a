package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Online backup: GET /v1/admin/backup (admin) streams the store at one LSN
// while the server goes on serving, in the backup file format below;
// `routehound backup FILE` saves it, `routehound restore FILE --data DIR`
// loads it.
//
// The file:
//
//	ROUTEHOUND-BACKUP 1\n
//	{"lsn":…,"created_at":…,"tokens":…}\n     the header (BackupHeader), one JSON line
//	frames: be32 length + bytes, length > 0   the store's backup stream (engine.Snapshot.Backup)
//	be32 0                                    the end of the frames
//	32 bytes                                  SHA-256 of everything before them
//
// The checksum covers the header and every frame: a truncated or damaged
// file is refused whole.

// BackupMagic is the first line of a backup file.
const BackupMagic = "ROUTEHOUND-BACKUP 1\n"

// BackupHeader describes a backup.
type BackupHeader struct {
	// LSN is the backup's point: it holds every record up to it, all
	// durable when the backup was taken, and none after.
	LSN       uint64    `json:"lsn"`
	CreatedAt time.Time `json:"created_at"`
	// Tokens is the tokens.toml text of the tokens in force (restore
	// writes it into the new data dir, mode 0600).
	Tokens []byte `json:"tokens,omitempty"`
}

// maxBackupHeader bounds the header line a reader accepts.
const maxBackupHeader = 1 << 20

func (s *Server) backupRoutes() {
	// One backup streams at a time (each pins a snapshot and reads the
	// whole store); a second waits for it.
	s.backupSlot = make(chan struct{}, 1)
	s.mux.HandleFunc("/v1/admin/backup", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.backup, RoleAdmin),
	}))
}

// SetBackupTokens gives the backup the tokens in force, as tokens.toml
// text (the api keeps only their hashes).
func (s *Server) SetBackupTokens(f func() []byte) { s.backupTokens.Store(&f) }

// backup serves GET /v1/admin/backup.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	select {
	case s.backupSlot <- struct{}{}:
		defer func() { <-s.backupSlot }()
	case <-r.Context().Done():
		return // the client went away while another backup streamed
	}
	snap, err := s.e.Snapshot()
	if err != nil {
		s.fail(w, r, fmt.Errorf("backup: %w", err))
		return
	}
	defer snap.Close()
	lsn := snap.LSN()
	// Only durable records: a backup never holds a write that a crash of
	// this server could still lose.
	if err := s.e.WaitDurable(r.Context(), lsn); err != nil {
		s.fail(w, r, fmt.Errorf("backup: waiting for lsn %d to be durable: %w", lsn, err))
		return
	}
	h := BackupHeader{LSN: lsn, CreatedAt: time.Now().UTC()}
	if f := s.backupTokens.Load(); f != nil {
		h.Tokens = (*f)()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="routehound-%d.backup"`, lsn))
	w.Header().Set("Routehound-Backup-Lsn", strconv.FormatUint(lsn, 10))
	w.WriteHeader(http.StatusOK)
	// Each write under a deadline (deadlineWriter): a client that stops
	// reading fails the stream within responseWriteTimeout, which releases
	// the slot, the snapshot's read version and the store's read lock.
	dw := newDeadlineWriter(w)
	err = WriteBackup(dw, h, func(out io.Writer) error { return snap.Backup(r.Context(), out) })
	if err == nil {
		err = dw.Flush()
	}
	if err != nil {
		// The answer has begun: the client sees a file without its
		// checksum and refuses it.
		switch {
		case r.Context().Err() != nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.log.Warn("backup cut: the client took no bytes for the write timeout", "lsn", lsn, "timeout", responseWriteTimeout)
		default:
			s.log.Error("backup failed while streaming", "lsn", lsn, "err", err)
		}
		return
	}
	s.log.Info("backup streamed", "lsn", lsn)
}

// WriteBackup writes a backup file: the header, the frames body writes,
// the checksum.
func WriteBackup(w io.Writer, h BackupHeader, body func(io.Writer) error) error {
	sum := sha256.New()
	out := io.MultiWriter(w, sum)
	line, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("backup header: %w", err)
	}
	if _, err := io.WriteString(out, BackupMagic); err != nil {
		return err
	}
	if _, err := out.Write(append(line, '\n')); err != nil {
		return err
	}
	fw := &frameWriter{w: out}
	bw := bufio.NewWriterSize(fw, 256<<10) // one frame per buffer
	if err := body(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if _, err := out.Write([]byte{0, 0, 0, 0}); err != nil {
		return err
	}
	_, err = w.Write(sum.Sum(nil))
	return err
}

// frameWriter writes each Write as one frame.
type frameWriter struct{ w io.Writer }

func (f *frameWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(p)))
	if _, err := f.w.Write(n[:]); err != nil {
		return 0, err
	}
	return f.w.Write(p)
}

// ErrBadBackup is a file that is not a whole, intact backup.
var ErrBadBackup = errors.New("not a whole RouteHound backup")

// ReadBackup reads a backup's header and answers a reader of its body (the
// store's backup stream). The body reader checks the checksum at its end:
// it answers io.EOF only after a whole, intact file, and an error wrapping
// ErrBadBackup otherwise.
func ReadBackup(r io.Reader) (BackupHeader, io.Reader, error) {
	sum := sha256.New()
	br := bufio.NewReaderSize(r, 64<<10)
	tr := io.TeeReader(br, sum)
	magic := make([]byte, len(BackupMagic))
	if _, err := io.ReadFull(tr, magic); err != nil || string(magic) != BackupMagic {
		return BackupHeader{}, nil, fmt.Errorf("%w: no %q at its start", ErrBadBackup, BackupMagic[:len(BackupMagic)-1])
	}
	var line []byte
	for {
		b, err := br.ReadSlice('\n')
		line = append(line, b...)
		if len(line) > maxBackupHeader {
			return BackupHeader{}, nil, fmt.Errorf("%w: header longer than %d bytes", ErrBadBackup, maxBackupHeader)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return BackupHeader{}, nil, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
		}
	}
	sum.Write(line)
	var h BackupHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return BackupHeader{}, nil, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
	}
	return h, &frameReader{r: br, tr: tr, sum: sum}, nil
}

// frameReader reads the frames of a backup and checks the checksum.
type frameReader struct {
	r    *bufio.Reader
	tr   io.Reader // r, hashed into sum
	sum  hash.Hash
	left uint32 // bytes left in the current frame
	err  error
}

func (f *frameReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	for f.left == 0 {
		var n [4]byte
		if _, err := io.ReadFull(f.tr, n[:]); err != nil {
			f.err = fmt.Errorf("%w: truncated (%v)", ErrBadBackup, err)
			return 0, f.err
		}
		f.left = binary.BigEndian.Uint32(n[:])
		if f.left == 0 {
			f.err = f.finish()
			return 0, f.err
		}
	}
	if uint32(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.tr.Read(p)
	f.left -= uint32(n)
	if err == io.EOF {
		f.err = fmt.Errorf("%w: truncated", ErrBadBackup)
		return n, f.err
	}
	return n, err
}

// finish reads and compares the checksum, and wants nothing after it.
func (f *frameReader) finish() error {
	want := f.sum.Sum(nil)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(f.r, got); err != nil {
		return fmt.Errorf("%w: truncated before its checksum", ErrBadBackup)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: checksum mismatch (the file is damaged)", ErrBadBackup)
	}
	if _, err := f.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: bytes after its checksum", ErrBadBackup)
	}
	return io.EOF
}

// VerifyBackup reads a whole backup and answers its header when it is
// intact.
func VerifyBackup(r io.Reader) (BackupHeader, error) {
	h, body, err := ReadBackup(r)
	if err != nil {
		return h, err
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return h, err
	}
	return h, nil
}
