package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"routehound/engine"
	"routehound/fleet"
)

type logRecord struct {
	LSN         uint64          `json:"lsn"`
	Table       string          `json:"table"`
	Key         string          `json:"key"`
	Op          string          `json:"op"`
	Value       json.RawMessage `json:"value"`
	Version     uint64          `json:"version"`
	Actor       string          `json:"actor"`
	CommittedAt string          `json:"committed_at"`
}

var errPageFull = errors.New("page full")

// getLog is the change feed: durable records after ?after=, in LSN order,
// at most ?limit= (default 100, max 1000) and about http.max_page_bytes,
// optionally of one ?table=.
// next is the after of the next page, null at the end of the log. The
// secret tables (fleet.IsSecret) are admin's only: another role asking for
// one gets 403, and its unfiltered pages skip their records.
func (s *Server) getLog(w http.ResponseWriter, r *http.Request, role Role) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.fail(w, r, errorf(http.StatusBadRequest, "bad_parameter", "after must be an LSN (an integer >= 0)"))
			return
		}
		after = n
	}
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	table := q.Get("table")
	if table != "" {
		err := checkTable(table)
		if err == nil {
			err = checkRead(role, table)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	hideSecret := role != RoleAdmin
	// A table filter (or the secret tables hidden) may skip many records:
	// scan a bounded window per request and hand back where the scan
	// stopped.
	scan := limit
	if table != "" || hideSecret {
		scan = 10000
	}
	recs := []logRecord{}
	last := after
	budget := pageBudget{max: s.cfg.MaxPageBytes}
	err = s.e.ReadLog(after, scan, func(rec engine.Record) error {
		if table != "" && rec.Table != table {
			last = rec.LSN
			return nil
		}
		value := rec.Value
		if hideSecret {
			if fleet.IsSecret(rec.Table) {
				last = rec.LSN
				return nil
			}
			value = fleet.RedactForNonAdmin(rec.Table, value)
		}
		if !budget.fits(len(rec.Table) + len(rec.Key) + len(value) + len(rec.Actor)) {
			return errPageFull // at the byte budget: next is the last record sent
		}
		last = rec.LSN
		recs = append(recs, logRecord{LSN: rec.LSN, Table: rec.Table, Key: rec.Key, Op: rec.Op.String(),
			Value: value, Version: rec.Version, Actor: rec.Actor, CommittedAt: rfc3339(rec.CommittedAt)})
		if len(recs) == limit {
			return errPageFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		s.fail(w, r, err)
		return
	}
	var next any
	if last < s.e.DurableLSN() {
		next = last
	}
	writeJSON(w, http.StatusOK, map[string]any{"records": recs, "next": next})
}
