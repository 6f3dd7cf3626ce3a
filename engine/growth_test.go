package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"routehound/fleet"
	"routehound/wal"
)

// Issue 18, point 6c: made-up driver names past max_drivers no longer lock
// out a real driver until a restart. Idle drivers (everything durable) are
// forgotten, least recently used first, and reloaded from their stored
// position: a forgotten driver's resend is still a duplicate.
func TestDriverEvictionNeverLocksOutARealDriver(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.MaxDrivers = 8 })
	ctx := context.Background()
	for i := range 50 { // a flood of junk drivers, 6 times the bound
		d := fmt.Sprintf("junk-%02d", i)
		if _, err := e.SubmitPoints(ctx, d, pts(1, 2)); err != nil {
			t.Fatalf("junk driver %d: %v", i, err)
		}
		waitFor(t, d+" durable", func() bool { s, _ := e.DriverDurableSeq(d); return s == 2 })
	}
	ack, err := e.SubmitPoints(ctx, "real-van", pts(1, 3))
	if err != nil || ack.Accepted != 3 {
		t.Fatalf("a real driver after the flood: %+v %v", ack, err)
	}
	if e.DriversEvicted() == 0 {
		t.Fatal("no driver was evicted")
	}
	e.drivers.mu.Lock()
	n := len(e.drivers.m)
	e.drivers.mu.Unlock()
	if n > 8 {
		t.Fatalf("%d drivers tracked, bound 8", n)
	}
	// An evicted driver's marks come back from the store.
	ack, err = e.SubmitPoints(ctx, "junk-00", pts(1, 3))
	if err != nil || ack.Accepted != 1 || ack.Duplicates != 2 || ack.DurableSeq < 2 {
		t.Fatalf("an evicted driver's resend: %+v %v", ack, err)
	}
}

// A driver with points not yet durable, or pinned by a holder, is never
// forgotten: at a bound full of busy drivers a new one is refused.
func TestDriverEvictionSkipsBusyDrivers(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) { c.MaxDrivers = 2 })
	a, err := e.drivers.get("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.drivers.get("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.drivers.get("c"); !errors.Is(err, ErrTooManyDrivers) {
		t.Fatalf("two pinned drivers, a third: %v", err)
	}
	e.drivers.release(a)
	a.mu.Lock()
	a.loaded, a.accepted = true, 5 // accepted, not durable
	a.mu.Unlock()
	if _, err := e.drivers.get("c"); !errors.Is(err, ErrTooManyDrivers) {
		t.Fatalf("a driver with points in flight was evicted: %v", err)
	}
	a.durable.Store(5)
	c, err := e.drivers.get("c")
	if err != nil {
		t.Fatalf("an idle driver was not evicted: %v", err)
	}
	e.drivers.release(b)
	e.drivers.release(c)
}

// Issue 18, point 6b: quotas on user tables (tables, keys per table, bytes
// per table), refused with ErrQuotaExceeded naming the quota; deletes and
// writes that do not grow a table are taken; built-in tables do not count.
func TestUserTableQuotas(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		c.Quotas = Quotas{MaxTables: 2, MaxKeysPerTable: 3, MaxTableBytes: 100}
	})
	ctx := context.Background()
	put := func(table, key, value string) error {
		_, err := e.PutKey(ctx, Write{Table: table, Key: key, Value: []byte(value), IfVersion: AnyVersion})
		return err
	}
	quota := func(err error) string {
		var qe *QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, ErrQuotaExceeded) {
			return fmt.Sprintf("not a quota error: %v", err)
		}
		return qe.Quota
	}
	for i := range 3 {
		if err := put("t1", fmt.Sprint("k", i), `1`); err != nil {
			t.Fatal(err)
		}
	}
	if q := quota(put("t1", "k3", `1`)); q != "max_keys_per_table" {
		t.Fatalf("4th key: %s", q)
	}
	if err := put("t1", "k0", `2`); err != nil {
		t.Fatalf("an overwrite of the same size: %v", err)
	}
	if q := quota(put("t1", "k0", `"`+strings.Repeat("x", 100)+`"`)); q != "max_table_bytes" {
		t.Fatalf("a value past the table's bytes: %s", q)
	}
	if err := put("t2", "k", `1`); err != nil {
		t.Fatal(err)
	}
	if q := quota(put("t3", "k", `1`)); q != "max_tables" {
		t.Fatalf("a third table: %s", q)
	}
	// Built-in tables are no user table.
	if _, err := e.PutDevice(ctx, "phone-quota-001", []byte(`{"driver":"anna"}`)); err != nil {
		t.Fatalf("devices table under the quotas: %v", err)
	}
	// A delete frees room: t2 empty, t3 may take its place.
	if _, err := e.PutKey(ctx, Write{Table: "t2", Key: "k", Delete: true, IfVersion: AnyVersion}); err != nil {
		t.Fatal(err)
	}
	if err := put("t3", "k", `1`); err != nil {
		t.Fatalf("after t2 emptied: %v", err)
	}
	if _, err := e.PutKey(ctx, Write{Table: "t1", Key: "k2", Delete: true, IfVersion: AnyVersion}); err != nil {
		t.Fatal(err)
	}
	if err := put("t1", "k3", `1`); err != nil {
		t.Fatalf("after a delete in t1: %v", err)
	}
	// Refusals are on the tables lane's ledger line.
	found := false
	for _, r := range e.Lane(LaneTables).Rejected() {
		found = found || r.Reason == "quota_exceeded" && r.Count == 3
	}
	if !found {
		t.Fatalf("rejections %v", e.Lane(LaneTables).Rejected())
	}
}

// The counts survive a restart: they are read back from the store.
func TestUserTableQuotasAfterRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.MinFreeBytes = 0
	cfg.Quotas = Quotas{MaxTables: 1, MaxKeysPerTable: 2, MaxTableBytes: 1 << 20}
	open := func() (*Engine, *wal.DB) {
		db, err := wal.Open(wal.Options{Dir: dir, MemoryBytes: 32 << 20})
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(cfg, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e, db
	}
	ctx := context.Background()
	e, db := open()
	for _, k := range []string{"a", "b"} {
		if _, err := e.PutKey(ctx, Write{Table: "t", Key: k, Value: []byte(`1`), IfVersion: AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e, db = open()
	defer db.Close()
	defer e.Close(ctx)
	if _, err := e.PutKey(ctx, Write{Table: "t", Key: "c", Value: []byte(`1`), IfVersion: AnyVersion}); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("3rd key after a restart: %v", err)
	}
	if _, err := e.PutKey(ctx, Write{Table: "u", Key: "c", Value: []byte(`1`), IfVersion: AnyVersion}); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("2nd table after a restart: %v", err)
	}
}

// Issue 18, point 6a: below min_free + reserve, writes that grow a user
// table are refused (ErrDiskReserved) while dispatch, drivers and the
// devices table go on; deletes of user keys are taken.
func TestDiskReserveKeepsTheFleetWriting(t *testing.T) {
	e, _ := newEngine(t, func(c *Config) {
		c.DataDir = t.TempDir()
		c.MinFreeBytes = 1       // the disk is far above it
		c.ReserveBytes = 1 << 60 // and far below min_free + reserve
	})
	ctx := context.Background()
	if !e.Ready() {
		t.Fatal("not ready: the reserve must not stop the fleet")
	}
	if _, err := e.PutKey(ctx, Write{Table: "junk", Key: "k", Value: []byte(`1`), IfVersion: AnyVersion}); !errors.Is(err, ErrDiskReserved) {
		t.Fatalf("a user table in the reserve: %v", err)
	}
	if _, err := e.PutKey(ctx, Write{Table: "junk", Key: "k", Delete: true, IfVersion: AnyVersion}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a delete in the reserve: %v (want not_found: it was let through)", err)
	}
	if _, err := e.PutAssignment(ctx, "r1", []byte(`{"driver":"anna","stops":[]}`), WriteOptions{IfVersion: AnyVersion}); err != nil {
		t.Fatalf("dispatch in the reserve: %v", err)
	}
	if _, err := e.PutDevice(ctx, "phone-reserve-1", []byte(`{"driver":"anna"}`)); err != nil {
		t.Fatalf("devices in the reserve: %v", err)
	}
	if _, err := e.SubmitPoints(ctx, "anna", pts(1, 2)); err != nil {
		t.Fatalf("a driver in the reserve: %v", err)
	}
	if _, ok := fleet.Writer(fleet.TableAssignments); !ok {
		t.Fatal("assignments is not a built-in table")
	}
}
