package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// The journal: a small file of its own for the writes whose writers wait
// for durability (docs/design.md §3, "The journal"). The committer commits
// a batch to Badger as always; the batch's waited-for writes (their log
// records and idempotency entries) are also appended to the journal, whose
// own fdatasync answers them, while Badger's fsync of the whole batch (the
// driver points with it) runs beside it. On this disk a small file's
// fdatasync takes about 0.4 ms while another file is being synced, where
// Badger's fsync under a driver load takes 5-15 ms: a dispatch write no
// longer waits for the drivers' bytes to reach the disk.
//
// After a crash the store holds a synced prefix of its log, up to some LSN;
// Open re-applies the journal's records above it in LSN order, and the
// LSNs between them that neither holds become void records (VoidTable):
// they were async driver points, never acknowledged as durable (their
// drivers resend above durable_seq), so the log stays gapless and every
// answered LSN stays true. Journaled writes change only keys that no
// unjournaled write changes (the engine journals the sync and ack lanes;
// driver points go to the log alone), so a replayed write's state is the
// one its writer was answered.
//
// Two files of journalFileBytes, written in turn from their start, so that
// an fdatasync never changes a file's size (no metadata to write): a frame
// is [len u32][crc32c u32][gen u64][last u64][payload]; the crc covers the
// frame's offset in the file, gen, last and the payload. Each time the
// writer starts a file from its start it takes a new generation, unique
// across opens (the next one is stored in journal.gen, synced, before the
// journal is written: a torn write whose first page was lost cannot make
// an open reuse the generation of frames that survived it): a reader
// takes a file's frames from its start while they are whole, at their
// offset, and of the first frame's generation, so frames left from an
// earlier turn end it. The writer starts a file again only when
// Badger's synced log covers every frame in it; frames it cannot place
// wait for the log's own fsync instead (JournalWrite answers how many it
// made durable).

// journalFileBytes is the size of each of the two journal files.
const journalFileBytes = 4 << 20

const journalHeader = 24

var journalNames = [2]string{"journal.0", "journal.1"}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// JournalFrame is one batch's journaled writes, encoded (Batch.Journal).
type JournalFrame struct {
	Last uint64 // the highest LSN among its records
	data []byte // the payload
}

// journal is the DB's journal writer: one caller at a time (the engine's
// journal goroutine), beside the batch writer.
type journal struct {
	mu    sync.Mutex
	files [2]*os.File
	last  [2]uint64 // highest LSN written to each file in its generation
	cur   int
	off   int64
	gen   uint64
	buf   []byte
}

// journalIdem is an idempotency entry of a journaled write.
type journalIdem struct {
	scope, key string
	answer     []byte
	expires    int64 // Unix seconds; 0 = never
}

// Journal makes the batch's next writes (Put, PutSeries, Delete, SetIdem)
// journaled (on) or not: the committer turns it on for the items whose
// writers wait for durability.
func (b *Batch) Journal(on bool) { b.journaling = on }

// JournalFrame is the frame of the batch's journaled writes once it is
// committed; ok is false when it journaled nothing.
func (b *Batch) JournalFrame() (f JournalFrame, ok bool) {
	return b.jframe, b.jframe.data != nil
}

// buildJournalFrame encodes the journaled records and idempotency entries
// (at Commit, while the records' values are still the batch's).
func (b *Batch) buildJournalFrame() {
	if len(b.jrecs) == 0 && len(b.jidem) == 0 {
		return
	}
	need := 2 * binary.MaxVarintLen64
	for _, i := range b.jrecs {
		need += 2*binary.MaxVarintLen64 + recordSize(&b.recs[i])
	}
	for _, e := range b.jidem {
		need += 4*binary.MaxVarintLen64 + len(e.scope) + len(e.key) + len(e.answer)
	}
	p := make([]byte, 0, need)
	p = binary.AppendUvarint(p, uint64(len(b.jrecs)))
	last := uint64(0)
	var enc []byte
	for _, i := range b.jrecs {
		r := &b.recs[i]
		enc = appendRecord(enc[:0], r)
		p = binary.AppendUvarint(p, r.LSN)
		p = binary.AppendUvarint(p, uint64(len(enc)))
		p = append(p, enc...)
		last = max(last, r.LSN)
	}
	p = binary.AppendUvarint(p, uint64(len(b.jidem)))
	for _, e := range b.jidem {
		p = binary.AppendUvarint(p, uint64(len(e.scope)))
		p = append(p, e.scope...)
		p = binary.AppendUvarint(p, uint64(len(e.key)))
		p = append(p, e.key...)
		p = binary.AppendUvarint(p, uint64(len(e.answer)))
		p = append(p, e.answer...)
		p = binary.AppendVarint(p, e.expires)
	}
	if last == 0 {
		last = b.next - 1 // idempotency entries alone: as of the batch
	}
	b.jframe = JournalFrame{Last: last, data: p}
}

// journaled is one decoded frame.
type journaled struct {
	recs []Record
	idem []journalIdem
}

var errJournalFrame = errors.New("wal: corrupt journal frame")

func decodeJournalFrame(p []byte) (journaled, error) {
	var out journaled
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	cut := func(n uint64) ([]byte, bool) {
		if n > uint64(len(p)) {
			return nil, false
		}
		s := p[:n:n]
		p = p[n:]
		return s, true
	}
	nrec, ok := uv()
	if !ok || nrec > uint64(len(p)) {
		return out, errJournalFrame
	}
	for range nrec {
		lsn, ok1 := uv()
		size, ok2 := uv()
		if !ok1 || !ok2 {
			return out, errJournalFrame
		}
		enc, ok := cut(size)
		if !ok {
			return out, errJournalFrame
		}
		r, err := decodeRecord(lsn, enc)
		if err != nil {
			return out, fmt.Errorf("%w: lsn %d: %v", errJournalFrame, lsn, err)
		}
		out.recs = append(out.recs, r)
	}
	nidem, ok := uv()
	if !ok || nidem > uint64(len(p)) {
		return out, errJournalFrame
	}
	for range nidem {
		var e journalIdem
		for _, dst := range []*string{&e.scope, &e.key} {
			n, ok := uv()
			if !ok {
				return out, errJournalFrame
			}
			s, ok := cut(n)
			if !ok {
				return out, errJournalFrame
			}
			*dst = string(s)
		}
		n, ok := uv()
		if !ok {
			return out, errJournalFrame
		}
		if e.answer, ok = cut(n); !ok {
			return out, errJournalFrame
		}
		v, k := binary.Varint(p)
		if k <= 0 {
			return out, errJournalFrame
		}
		p = p[k:]
		e.expires = v
		out.idem = append(out.idem, e)
	}
	if len(p) != 0 {
		return out, errJournalFrame
	}
	return out, nil
}

// readJournalFile reads a journal file's frames: from its start, while
// they are whole and of the first frame's generation.
func readJournalFile(path string) (frames []journaled, gen uint64, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("wal: journal %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, journalFileBytes))
	if err != nil {
		return nil, 0, fmt.Errorf("wal: journal %s: %w", path, err)
	}
	first := true
	off := int64(0)
	for len(data) >= journalHeader {
		n := binary.LittleEndian.Uint32(data)
		crc := binary.LittleEndian.Uint32(data[4:])
		if n == 0 || uint64(n) > uint64(len(data)-journalHeader) {
			break
		}
		body := data[8 : journalHeader+int(n)]
		if frameCRC(off, body) != crc {
			break // torn, or left from an earlier turn: the end
		}
		g := binary.LittleEndian.Uint64(data[8:])
		if first {
			gen, first = g, false
		} else if g != gen {
			break
		}
		fr, derr := decodeJournalFrame(data[journalHeader : journalHeader+int(n)])
		if derr != nil {
			// A whole frame (its crc holds) that does not decode is not
			// a torn write: refuse to guess.
			return nil, 0, fmt.Errorf("wal: journal %s: %w", path, derr)
		}
		frames = append(frames, fr)
		data = data[journalHeader+int(n):]
		off += int64(journalHeader + int(n))
	}
	return frames, gen, nil
}

// openJournal re-applies what the journal holds above the store's last
// LSN (as one synced batch) and starts the journal anew: every file's
// frames are covered by the store then.
func (db *DB) openJournal() (replayed, voided int, err error) {
	var frames []journaled
	var gen uint64
	for _, name := range journalNames {
		fr, g, err := readJournalFile(filepath.Join(db.dir, name))
		if err != nil {
			return 0, 0, err
		}
		frames = append(frames, fr...)
		gen = max(gen, g)
	}
	replayed, voided, err = db.replayJournal(frames)
	if err != nil {
		return 0, 0, err
	}
	// Each turn of a file takes a generation after this one (JournalWrite).
	gen, err = db.nextJournalGen(gen)
	if err != nil {
		return 0, 0, err
	}
	// The journal starts anew over frames the store must hold durably
	// first: after a crash (not a power cut) Badger's log came back from
	// the page cache, maybe never synced.
	if err := db.bdb.Sync(); err != nil {
		return 0, 0, fmt.Errorf("wal: sync before the journal starts anew: %w", err)
	}
	j := &journal{gen: gen}
	for i, name := range journalNames {
		f, err := openJournalFile(filepath.Join(db.dir, name))
		if err != nil {
			j.close()
			return 0, 0, err
		}
		j.files[i] = f
	}
	if err := syncDir(db.dir); err != nil {
		j.close()
		return 0, 0, err
	}
	db.journal = j
	return replayed, voided, nil
}

// openJournalFile opens (creating it at its full size, zeros synced) one
// journal file.
func openJournalFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("wal: journal %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: journal %s: %w", path, err)
	}
	if st.Size() != journalFileBytes {
		zero := make([]byte, 64<<10)
		for off := int64(0); off < journalFileBytes; off += int64(len(zero)) {
			if _, err := f.WriteAt(zero, off); err != nil {
				f.Close()
				return nil, fmt.Errorf("wal: journal %s: %w", path, err)
			}
		}
		if err := f.Truncate(journalFileBytes); err != nil {
			f.Close()
			return nil, fmt.Errorf("wal: journal %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("wal: journal %s: %w", path, err)
		}
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("wal: sync dir %s: %w", dir, err)
	}
	return nil
}

// replayJournal writes the journaled records above the store's last LSN at
// their LSNs, void records between them, and their idempotency entries;
// then syncs.
func (db *DB) replayJournal(frames []journaled) (replayed, voided int, err error) {
	last := db.last.Load()
	var recs []Record
	var idem []journalIdem
	for _, f := range frames {
		above := false
		for _, r := range f.recs {
			if r.LSN > last {
				recs = append(recs, r)
				above = true
			}
		}
		if above || (len(f.recs) == 0 && len(f.idem) > 0) {
			idem = append(idem, f.idem...)
		}
	}
	if len(recs) == 0 {
		return 0, 0, nil
	}
	slices.SortFunc(recs, func(a, b Record) int {
		switch {
		case a.LSN < b.LSN:
			return -1
		case a.LSN > b.LSN:
			return 1
		}
		return 0
	})
	recs = slices.CompactFunc(recs, func(a, b Record) bool { return a.LSN == b.LSN })
	// In batches below Badger's transaction limit: the journal may hold
	// more than one batch's worth above the synced log. A crash part way
	// leaves a prefix, and the next Open goes on from it.
	limit := db.maxBatchBytes * 8 / 10
	b := db.Begin()
	// room commits the batch first when adding need bytes would take it
	// past the limit.
	room := func(need int64) error {
		if b.Size() == 0 || b.Size()+need < limit {
			return nil
		}
		if err := b.Commit(); err != nil {
			return fmt.Errorf("wal: replay the journal: %w", err)
		}
		b = db.Begin()
		return nil
	}
	for _, r := range recs {
		for b.next < r.LSN {
			if err := room(int64(len(VoidTable) + 64)); err != nil {
				return 0, 0, err
			}
			if err := b.void(b.next, r.CommittedAt); err != nil {
				b.Discard()
				return 0, 0, err
			}
			b.recs[len(b.recs)-1].Actor = "journal"
			voided++
		}
		if err := room(int64(2*len(r.Value) + 2*len(r.Key) + 2*len(r.Table) + 64)); err != nil {
			return 0, 0, err
		}
		if _, err := b.Replay(r); err != nil {
			b.Discard()
			return 0, 0, fmt.Errorf("wal: replay the journal at lsn %d: %w", r.LSN, err)
		}
		replayed++
	}
	// At their own expiry (what is left of their TTL); those expired are
	// dropped. An entry of the empty scope is the copy kept with the
	// record it answers (idem.go): it expires with its entry.
	now := db.now().Unix()
	for _, e := range idem {
		if e.expires > 0 && e.expires <= now {
			continue
		}
		if err := room(int64(len(e.scope) + len(e.key) + len(e.answer) + 32)); err != nil {
			return 0, 0, err
		}
		if err := b.setIdem(e.scope, e.key, e.answer, uint64(max(e.expires, 0)), false); err != nil {
			b.Discard()
			return 0, 0, err
		}
	}
	if err := b.Commit(); err != nil {
		return 0, 0, fmt.Errorf("wal: replay the journal: %w", err)
	}
	if err := db.bdb.Sync(); err != nil {
		return 0, 0, fmt.Errorf("wal: replay the journal: %w", err)
	}
	return replayed, voided, nil
}

// JournalWrite makes frames durable in the journal, in order, with one
// fdatasync: frames at or below covered (the LSN Badger's synced log
// holds) count as durable without being written. It answers how many
// frames, from the first, are durable; the rest found no room (the other
// file still holds frames the log does not cover) and wait for the log's
// fsync. An error fails the store, as a failed Sync does. One caller at a
// time; safe beside Commit and Sync.
func (db *DB) JournalWrite(frames []JournalFrame, covered uint64) (int, error) {
	j := db.journal
	if j == nil {
		return 0, nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if db.failed.Load() {
		return 0, ErrFailed
	}
	if j.files[0] == nil {
		return 0, ErrClosed
	}
	j.buf = j.buf[:0]
	n := 0
	for n < len(frames) {
		f := frames[n]
		if f.Last <= covered {
			n++
			continue
		}
		size := int64(journalHeader + len(f.data))
		if j.off+int64(len(j.buf))+size > journalFileBytes {
			if len(j.buf) > 0 {
				if err := j.flush(db); err != nil {
					return 0, err
				}
				continue
			}
			other := 1 - j.cur
			if j.last[other] > covered || size > journalFileBytes {
				break // no room: the log's fsync answers the rest
			}
			// Start the other file anew, in a new generation: every
			// frame it holds is in the synced log.
			j.cur, j.off = other, 0
			j.gen++
			j.last[other] = 0
		}
		j.buf = binary.LittleEndian.AppendUint32(j.buf, uint32(len(f.data)))
		h := len(j.buf)
		j.buf = binary.LittleEndian.AppendUint32(j.buf, 0)
		j.buf = binary.LittleEndian.AppendUint64(j.buf, j.gen)
		j.buf = binary.LittleEndian.AppendUint64(j.buf, f.Last)
		j.buf = append(j.buf, f.data...)
		binary.LittleEndian.PutUint32(j.buf[h:], frameCRC(j.off+int64(h-4), j.buf[h+4:]))
		j.last[j.cur] = max(j.last[j.cur], f.Last)
		n++
	}
	if len(j.buf) > 0 {
		if err := j.flush(db); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// flush writes the buffered frames at the file's offset and fdatasyncs.
func (j *journal) flush(db *DB) error {
	f := j.files[j.cur]
	err := db.injected("journal")
	if err == nil {
		_, err = f.WriteAt(j.buf, j.off)
	}
	if err == nil {
		err = datasync(f)
	}
	if err != nil {
		db.failed.Store(true)
		return fmt.Errorf("wal: journal write at lsn %d: %w", j.last[j.cur], err)
	}
	j.off += int64(len(j.buf))
	j.buf = j.buf[:0]
	return nil
}

func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, f := range j.files {
		if f != nil {
			f.Close()
			j.files[i] = nil
		}
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// frameCRC is a frame's checksum: its offset in the file, then its body
// (gen, last, payload).
func frameCRC(off int64, body []byte) uint32 {
	var o [8]byte
	binary.LittleEndian.PutUint64(o[:], uint64(off))
	return crc32.Update(crc32.Checksum(o[:], castagnoli), castagnoli, body)
}

// journalGenName is the file that holds the journal's next generation.
const journalGenName = "journal.gen"

// nextJournalGen stores the generation after the one the journal starts
// with (the larger of gen+1 and the one stored by the last Open), synced
// with its directory before the journal is written, and answers it. A
// file of its own, not a Badger key: Open commits nothing to the store.
func (db *DB) nextJournalGen(gen uint64) (uint64, error) {
	path := filepath.Join(db.dir, journalGenName)
	var stored uint64
	switch b, err := os.ReadFile(path); {
	case err == nil && len(b) == 8:
		stored = binary.LittleEndian.Uint64(b)
	case err == nil:
		// A torn rename cannot leave this (the file is renamed whole);
		// start past anything the frames show.
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("wal: journal generation: %w", err)
	}
	g := max(gen+1, stored)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("wal: journal generation: %w", err)
	}
	_, err = f.Write(binary.LittleEndian.AppendUint64(nil, g+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(db.dir)
	}
	if err != nil {
		return 0, fmt.Errorf("wal: journal generation: %w", err)
	}
	return g, nil
}
