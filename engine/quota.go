package engine

import (
	"fmt"
	"sync"

	"routehound/fleet"
	"routehound/wal"
)

// Quotas bound what the user tables may grow to, whoever writes them (a
// dashboard or admin token). A write that would pass a bound is refused
// (ErrQuotaExceeded, as a *QuotaError); deletes, and writes that do not
// grow a table, are always taken. Zero: no bound.
type Quotas struct {
	MaxTables       int   // user tables holding at least one key
	MaxKeysPerTable int64 // keys of one user table
	MaxTableBytes   int64 // keys and values of one user table
}

func (q Quotas) on() bool { return q.MaxTables > 0 || q.MaxKeysPerTable > 0 || q.MaxTableBytes > 0 }

// QuotaError is ErrQuotaExceeded naming the table and the bound:
// errors.Is(err, ErrQuotaExceeded) holds.
type QuotaError struct {
	Table string
	Quota string // max_tables, max_keys_per_table or max_table_bytes
	Limit int64
}

func (e *QuotaError) Error() string {
	switch e.Quota {
	case "max_tables":
		return fmt.Sprintf("%v: table %s would be user table number %d, over the limit of %d (tables.max_tables)", ErrQuotaExceeded, e.Table, e.Limit+1, e.Limit)
	case "max_keys_per_table":
		return fmt.Sprintf("%v: table %s holds %d keys, the limit (tables.max_keys_per_table)", ErrQuotaExceeded, e.Table, e.Limit)
	}
	return fmt.Sprintf("%v: table %s would hold more than %d bytes of keys and values (tables.max_table_mb)", ErrQuotaExceeded, e.Table, e.Limit)
}

func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// usage accounts the user tables' keys and bytes for the quotas. The
// counts are built lazily from a snapshot (prepareUsage, on the writer's
// goroutine: the committer never scans) and kept up to date by the
// committer as it applies each write (charge). A change applied after a
// loader's snapshot was taken is in deltas until committed, so the loader
// adds it. The counts belong to one store handle: after a storage failure
// the reopened store is counted again.
type usage struct {
	mu      sync.Mutex
	db      *wal.DB              // the store handle the counts are of
	tables  map[string]*tableUse // user tables holding keys; nil: not listed yet
	loading int                  // prepareUsage calls between their snapshot and their install
	deltas  []usageDelta         // changes applied that a loader's snapshot may not hold
}

type tableUse struct {
	keys  int64
	bytes int64
	sized bool // bytes counted (a table listed but not yet scanned has keys only)
}

type usageDelta struct {
	lsn   uint64
	table string
	keys  int64
	bytes int64
}

// maxUsageDeltas bounds deltas while loaders run; past it the counts are
// dropped and built again (policy: recount rather than grow).
const maxUsageDeltas = 1 << 16

// resetIf drops the counts when the store handle changed. Caller holds mu.
func (u *usage) resetIf(db *wal.DB) {
	if u.db != db {
		u.db, u.tables, u.deltas = db, nil, nil
	}
}

// ready reports whether table's counts are known. Caller holds mu.
func (u *usage) ready(table string) bool {
	if u.tables == nil {
		return false
	}
	t := u.tables[table]
	return t == nil || t.sized // absent: no keys, nothing to count
}

// prepareUsage makes sure the counts of table are known before a write to
// it is queued: it lists the user tables once per store handle and scans
// table once (its size), outside the committer.
func (e *Engine) prepareUsage(table string) error {
	u := &e.usage
	for range 3 {
		db := e.store()
		u.mu.Lock()
		u.resetIf(db)
		if u.ready(table) {
			u.mu.Unlock()
			return nil
		}
		listed := u.tables != nil
		u.loading++
		u.mu.Unlock()

		list, bytes, lsn, err := e.countUsage(table, !listed)

		u.mu.Lock()
		u.loading--
		if err == nil && u.db == db && e.store() == db {
			if u.tables == nil && list != nil {
				for _, d := range u.deltas {
					if d.lsn > lsn {
						addDelta(list, d)
					}
				}
				u.tables = list
			}
			if t := u.tables[table]; t != nil && !t.sized {
				// Its keys are the listed count, kept up to date since.
				for _, d := range u.deltas {
					if d.lsn > lsn && d.table == table {
						bytes += d.bytes
					}
				}
				t.bytes, t.sized = bytes, true
			}
		}
		ok := u.db == db && u.ready(table)
		u.mu.Unlock()
		if err != nil {
			return fmt.Errorf("engine: counting table %s for its quotas: %w", table, err)
		}
		if ok {
			return nil
		}
	}
	return nil // the store keeps changing under us: the write goes unchecked, counted next time
}

// countUsage reads, from one snapshot, the user tables holding keys (when
// list) and the bytes of table.
func (e *Engine) countUsage(table string, list bool) (tables map[string]*tableUse, bytes int64, lsn uint64, err error) {
	snap, err := e.Snapshot()
	if err != nil {
		return nil, 0, 0, err
	}
	defer snap.Close()
	lsn = snap.LSN()
	if list {
		tables = map[string]*tableUse{}
		if _, err := snap.Tables("", 0, func(ti TableInfo) error {
			if _, builtin := fleet.Writer(ti.Name); !builtin && ti.Keys > 0 {
				tables[ti.Name] = &tableUse{keys: ti.Keys}
			}
			return nil
		}); err != nil {
			return nil, 0, 0, err
		}
	}
	_, err = snap.Scan(table, "", 0, func(k string, st State) error {
		bytes += int64(len(k) + len(st.Value))
		return nil
	})
	return tables, bytes, lsn, err
}

// addDelta counts a change in m. A table m does not hold had no keys:
// its bytes are the changes' own (a listed table's bytes are set when it
// is scanned).
func addDelta(m map[string]*tableUse, d usageDelta) {
	t := m[d.table]
	if t == nil {
		t = &tableUse{sized: true}
		m[d.table] = t
	}
	t.keys += d.keys
	t.bytes += d.bytes
	if t.keys <= 0 {
		delete(m, d.table)
	}
}

// checkQuota refuses a put to a user table that would pass a quota.
// Committer only (inside the write's apply): cur is the key's state in
// the batch. Counts not known yet (a store reopened since prepareUsage)
// check nothing.
func (e *Engine) checkQuota(w Write, cur State, exists bool) error {
	q := e.cfg.Quotas
	dKeys, dBytes := putDelta(w, cur, exists)
	if dKeys <= 0 && dBytes <= 0 {
		return nil
	}
	u := &e.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.db != e.store() || u.tables == nil {
		return nil
	}
	t := u.tables[w.Table]
	if t == nil {
		if q.MaxTables > 0 && len(u.tables) >= q.MaxTables {
			return &QuotaError{Table: w.Table, Quota: "max_tables", Limit: int64(q.MaxTables)}
		}
		t = &tableUse{sized: true} // a table without keys
	}
	switch {
	case dKeys > 0 && q.MaxKeysPerTable > 0 && t.keys+dKeys > q.MaxKeysPerTable:
		return &QuotaError{Table: w.Table, Quota: "max_keys_per_table", Limit: q.MaxKeysPerTable}
	case dBytes > 0 && t.sized && q.MaxTableBytes > 0 && t.bytes+dBytes > q.MaxTableBytes:
		return &QuotaError{Table: w.Table, Quota: "max_table_bytes", Limit: q.MaxTableBytes}
	}
	return nil
}

// putDelta is what a write changes in its table's counts, given the key's
// state before it.
func putDelta(w Write, cur State, exists bool) (keys, bytes int64) {
	switch {
	case w.Delete && exists:
		return -1, -int64(len(w.Key) + len(cur.Value))
	case w.Delete:
		return 0, 0
	case exists:
		return 0, int64(len(w.Value) - len(cur.Value))
	}
	return 1, int64(len(w.Key) + len(w.Value))
}

// charge counts a user-table write the batch applied (at lsn). Committer
// only.
func (e *Engine) charge(w Write, cur State, exists bool, lsn uint64) {
	dKeys, dBytes := putDelta(w, cur, exists)
	if dKeys == 0 && dBytes == 0 {
		return
	}
	db := e.store()
	u := &e.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.db != db {
		return // counted again from the store on the next write
	}
	d := usageDelta{lsn: lsn, table: w.Table, keys: dKeys, bytes: dBytes}
	if u.tables != nil {
		addDelta(u.tables, d)
	}
	if u.loading == 0 {
		// No loader's snapshot predates a committed change: keep only
		// what is not committed yet (this batch's).
		last := db.LastLSN()
		n := 0
		for _, x := range u.deltas {
			if x.lsn > last {
				u.deltas[n] = x
				n++
			}
		}
		u.deltas = u.deltas[:n]
	}
	if len(u.deltas) >= maxUsageDeltas {
		u.db, u.tables, u.deltas = nil, nil, nil // recount: loaders under way see another handle and install nothing
		return
	}
	u.deltas = append(u.deltas, d)
}
