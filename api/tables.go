package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"routehound/engine"
	"routehound/fleet"
)

func (s *Server) tableRoutes() {
	read := []Role{RoleDashboard, RoleAdmin}
	s.mux.HandleFunc("/v1/tables", s.methods(map[string]http.HandlerFunc{
		"GET": s.allow(noLane, s.listTables, read...),
	}))
	s.mux.HandleFunc("/v1/tables/{table}", s.methods(map[string]http.HandlerFunc{
		"GET": s.allowRole(noLane, s.pageTable, read...),
	}))
	s.mux.HandleFunc("/v1/tables/{table}/keys/{key...}", s.methods(map[string]http.HandlerFunc{
		"GET":    s.allowRole(noLane, s.getKey, read...),
		"PUT":    s.allow(engine.LaneTables, s.putKey, read...),
		"DELETE": s.allow(engine.LaneTables, s.deleteKey, read...),
	}))
}

// limitParam reads ?limit= within 1..max (default def).
func limitParam(r *http.Request, def, max int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, errorf(http.StatusBadRequest, "bad_parameter", "limit must be an integer from 1 to %d", max)
	}
	return n, nil
}

type tableInfo struct {
	Name    string `json:"name"`
	Keys    int64  `json:"keys"`
	LastLSN uint64 `json:"last_lsn"`
}

func (s *Server) listTables(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 1000, 10000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	snap, err := s.e.Snapshot()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer snap.Close()
	out := []tableInfo{}
	more, err := snap.Tables(r.URL.Query().Get("after"), limit, func(ti engine.TableInfo) error {
		out = append(out, tableInfo{Name: ti.Name, Keys: ti.Keys, LastLSN: ti.LastLSN})
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if more && len(out) > 0 {
		w.Header().Set("X-Next-After", out[len(out)-1].Name)
	}
	writeJSON(w, http.StatusOK, out)
}

type row struct {
	// Depot is the depot a central view's key is of (<depot>/<key>, or
	// the key itself in its cursor table); empty on a depot's own box.
	Depot   string          `json:"depot,omitempty"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Version uint64          `json:"version"`
	LSN     uint64          `json:"lsn"`
}

func (s *Server) pageTable(w http.ResponseWriter, r *http.Request, role Role) {
	table := r.PathValue("table")
	err := checkTable(table)
	if err == nil {
		err = checkRead(role, table)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	snap, err := s.e.Snapshot()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer snap.Close()
	rows := []row{}
	budget := pageBudget{max: s.cfg.MaxPageBytes}
	redact := role != RoleAdmin
	central := s.e.Central()
	after, prefix, err := depotFilter(r, central)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	more, err := snap.Scan(table, after, limit, func(k string, st engine.State) error {
		if !strings.HasPrefix(k, prefix) {
			return errDepotEnd // past the depot's keys
		}
		if redact {
			st.Value = fleet.RedactForNonAdmin(table, st.Value)
		}
		if !budget.fits(len(k) + len(st.Value)) {
			return errPageFull // at the byte budget: next continues after the last row
		}
		rows = append(rows, row{Depot: depotOf(central, k), Key: k, Value: st.Value, Version: st.Version, LSN: st.LSN})
		return nil
	})
	if errors.Is(err, errPageFull) {
		more, err = true, nil
	}
	if errors.Is(err, errDepotEnd) {
		more, err = false, nil
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var next any
	if more && len(rows) > 0 {
		next = rows[len(rows)-1].Key
	}
	writeJSON(w, http.StatusOK, map[string]any{"lsn": snap.LSN(), "rows": rows, "next": next})
}

func (s *Server) tableKey(w http.ResponseWriter, r *http.Request, lane engine.Lane) (table, key string, ok bool) {
	table, key = r.PathValue("table"), r.PathValue("key")
	err := checkTable(table)
	if err == nil {
		err = checkKey(key)
	}
	if err != nil {
		s.refuse(w, r, lane, err)
		return "", "", false
	}
	return table, key, true
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, role Role) {
	if table, key, ok := s.tableKey(w, r, noLane); ok {
		if err := checkRead(role, table); err != nil {
			s.fail(w, r, err)
			return
		}
		s.writeKey(w, r, table, key, role != RoleAdmin)
	}
}

// writeKey answers the current state of one key; redact, for a non-admin
// caller, strips what only the admin reads (fleet.RedactForNonAdmin).
func (s *Server) writeKey(w http.ResponseWriter, r *http.Request, table, key string, redact bool) {
	snap, err := s.e.Snapshot()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer snap.Close()
	st, found, err := snap.Get(table, key)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !found {
		s.fail(w, r, errorf(http.StatusNotFound, "not_found", "no key %q in table %q", key, table))
		return
	}
	if redact {
		st.Value = fleet.RedactForNonAdmin(table, st.Value)
	}
	w.Header().Set("ETag", etag(st.Version))
	writeJSON(w, http.StatusOK, row{Depot: depotOf(s.e.Central(), key), Key: key, Value: st.Value, Version: st.Version, LSN: st.LSN})
}

// errDepotEnd ends a page's scan at the end of a depot's keys.
var errDepotEnd = errors.New("api: past the depot's keys")

// depotOf is the depot of a central view's key: what precedes its first
// '/' (a depot name holds none), or the whole key (the cursor table's).
func depotOf(central bool, key string) string {
	if !central {
		return ""
	}
	d, _, _ := strings.Cut(key, "/")
	return d
}

// depotFilter reads a central view's ?depot=: the page then holds only
// that depot's keys (<depot>/…), and starts after ?after= or at the
// depot's first key. It answers where the scan starts and the keys'
// prefix ("" without the filter).
func depotFilter(r *http.Request, central bool) (after, prefix string, err error) {
	q := r.URL.Query()
	after = q.Get("after")
	d := q.Get("depot")
	if d == "" {
		return after, "", nil
	}
	if !central {
		return "", "", errorf(http.StatusBadRequest, "bad_parameter", "depot filters a central view's tables; this box is a depot's own")
	}
	if len(d) > 64 || strings.Trim(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return "", "", errorf(http.StatusBadRequest, "bad_parameter", "depot must be 1 to 64 letters, digits, - and _")
	}
	prefix = d + "/"
	if after < prefix {
		after = prefix // no key is the prefix itself (a key is 1 byte at least)
	}
	return after, prefix, nil
}

// tableWrite builds the engine write of a PUT or DELETE on a user table.
func (s *Server) tableWrite(w http.ResponseWriter, r *http.Request, del bool) (engine.Write, bool) {
	table, key, ok := s.tableKey(w, r, engine.LaneTables)
	if !ok {
		return engine.Write{}, false
	}
	ver, conditional, err := ifMatch(r)
	if err != nil {
		s.refuse(w, r, engine.LaneTables, err)
		return engine.Write{}, false
	}
	wr := engine.Write{Table: table, Key: key, Delete: del, IfVersion: engine.AnyVersion}
	if conditional {
		wr.IfVersion = ver
	}
	if !del {
		body, err := s.readBody(w, r)
		if err != nil {
			s.refuse(w, r, engine.LaneTables, err)
			return engine.Write{}, false
		}
		var v json.RawMessage
		if err := strict(body, &v); err != nil {
			s.refuse(w, r, engine.LaneTables, err)
			return engine.Write{}, false
		}
		wr.Value = fleet.Compact(v)
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		if _, err := idempotencyKey(r); err != nil {
			s.refuse(w, r, engine.LaneTables, err)
			return engine.Write{}, false
		}
		wr.IdemKey = k
		wr.Fingerprint = engine.Fingerprint([]byte(r.Method), []byte(table), []byte(key), wr.Value, []byte(r.Header.Get("If-Match")))
	}
	return wr, true
}

func (s *Server) putKey(w http.ResponseWriter, r *http.Request) {
	wr, ok := s.tableWrite(w, r, false)
	if !ok {
		return
	}
	res, err := s.e.PutKey(r.Context(), wr)
	if err == nil {
		err = s.replicated(r.Context(), engine.LaneTables, res.LSN)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	w.Header().Set("ETag", etag(res.Version))
	writeJSON(w, status, row{Key: res.Key, Value: wr.Value, Version: res.Version, LSN: res.LSN})
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	wr, ok := s.tableWrite(w, r, true)
	if !ok {
		return
	}
	res, err := s.e.PutKey(r.Context(), wr)
	if err == nil {
		err = s.replicated(r.Context(), engine.LaneTables, res.LSN)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": res.Key, "lsn": res.LSN})
}
