package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"routehound/engine"
	"routehound/fleet"
)

// pageSize is the rows of one page of a table (Options.MaxPageBytes cuts
// it shorter).
const pageSize = 100

// errPageFull ends a page's scan at its byte budget.
var errPageFull = errors.New("ui: page full")

type tableListView struct {
	Tables []engine.TableInfo
}

func (u *UI) tablesPage(w http.ResponseWriter, r *http.Request, s *session) {
	if name := r.URL.Query().Get("open"); name != "" {
		if err := fleet.CheckName("table", name); err != nil {
			fail(w, http.StatusBadRequest, "bad_table", fleet.Message(err))
			return
		}
		http.Redirect(w, r, string(tableURL(name)), http.StatusSeeOther)
		return
	}
	v, err := u.tableList()
	if err != nil {
		u.internal(w, r, err)
		return
	}
	// Live like every other page: its key counts and LSNs follow (every
	// 2 s; a list of up to 1,000 tables is read again, not streamed).
	render(w, r, http.StatusOK, tablesPage(u.chrome(s, "tables", "/ui/live/tables"), v))
}

// tableList is the first 1,000 tables by name (bounded).
func (u *UI) tableList() (tableListView, error) {
	snap, err := u.e.Snapshot()
	if err != nil {
		return tableListView{}, err
	}
	defer snap.Close()
	var v tableListView
	_, err = snap.Tables("", 1000, func(ti engine.TableInfo) error {
		v.Tables = append(v.Tables, ti)
		return nil
	})
	return v, err
}

// tableRow is one key of a table page.
type tableRow struct {
	Depot   string // a central view's: the key's depot (<depot>/<key>)
	Key     string
	Value   string // compact JSON
	Version uint64
	LSN     uint64
}

type tableView struct {
	Table    string
	ReadOnly bool
	Central  bool // a central view: read-only, with the depot as a column
	Keys     int64
	LSN      uint64
	After    string // the page starts after this key
	Next     string // the next page starts after this key ("" at the end)
	Rows     []tableRow
	CSRF     string
	// The form: pre-filled when editing a key, with the message of the
	// last attempt.
	FormKey, FormValue, FormVersion string
	Message, MessageKind            string // kind: ok | error
}

// rowID is the DOM id of a key's row: hex, so any key is a valid id.
func rowID(prefix, key string) string { return fmt.Sprintf("%s-%x", prefix, key) }

func (u *UI) table(ctx context.Context, table, after string, s *session) (tableView, error) {
	central := u.e.Central()
	v := tableView{Table: table, ReadOnly: fleet.IsBuiltin(table) || central, Central: central, After: after, CSRF: s.csrf}
	snap, err := u.e.Snapshot()
	if err != nil {
		return v, err
	}
	defer snap.Close()
	v.LSN = snap.LSN()
	ti, _, err := snap.Table(table)
	if err != nil {
		return v, err
	}
	v.Keys = ti.Keys
	var bytes int64
	more, err := snap.Scan(table, after, pageSize, func(k string, st engine.State) error {
		if s.role != "admin" {
			st.Value = fleet.RedactForNonAdmin(table, st.Value)
		}
		// Cut at the byte budget too (at least one row): large values
		// never make one page of hundreds of MB.
		n := int64(len(k) + len(st.Value) + 64)
		if len(v.Rows) > 0 && bytes+n > u.opt.MaxPageBytes {
			return errPageFull
		}
		bytes += n
		row := tableRow{Key: k, Value: string(st.Value), Version: st.Version, LSN: st.LSN}
		if central {
			row.Depot, _, _ = strings.Cut(k, "/")
		}
		v.Rows = append(v.Rows, row)
		return nil
	})
	if errors.Is(err, errPageFull) {
		more, err = true, nil
	}
	if err != nil {
		return v, err
	}
	if more && len(v.Rows) > 0 {
		v.Next = v.Rows[len(v.Rows)-1].Key
	}
	return v, nil
}

func (u *UI) tablePage(w http.ResponseWriter, r *http.Request, s *session) {
	u.showTable(w, r, s, http.StatusOK, "", "", nil)
}

// showTable renders a table page; form, when set, pre-fills the put form.
func (u *UI) showTable(w http.ResponseWriter, r *http.Request, s *session, status int, msg, kind string, form url.Values) {
	table := r.PathValue("table")
	if err := fleet.CheckName("table", table); err != nil {
		fail(w, http.StatusBadRequest, "bad_table", fleet.Message(err))
		return
	}
	if !s.canRead(table) {
		failSecret(w, table)
		return
	}
	q := r.URL.Query()
	after := q.Get("after")
	v, err := u.table(r.Context(), table, after, s)
	if err != nil {
		u.internal(w, r, err)
		return
	}
	v.Message, v.MessageKind = msg, kind
	if v.Message == "" {
		v.Message, v.MessageKind = q.Get("msg"), "ok"
	}
	if form != nil {
		v.FormKey, v.FormValue, v.FormVersion = form.Get("key"), form.Get("value"), form.Get("version")
	} else if ek := q.Get("edit"); ek != "" {
		for _, row := range v.Rows {
			if row.Key == ek {
				v.FormKey, v.FormValue, v.FormVersion = row.Key, row.Value, strconv.FormatUint(row.Version, 10)
			}
		}
	}
	lq := url.Values{"table": {table}}
	if after != "" {
		lq.Set("after", after)
	}
	if v.Next != "" {
		lq.Set("until", v.Next)
	}
	render(w, r, status, tablePage(u.chrome(s, "tables", liveURL("table", v.LSN, lq)), v))
}

// writeFromForm builds the engine write of a put or delete form.
func writeFromForm(table string, f url.Values, del bool) (engine.Write, error) {
	key := f.Get("key")
	if err := fleet.CheckKey(key); err != nil {
		return engine.Write{}, errors.New(fleet.Message(err))
	}
	w := engine.Write{Table: table, Key: key, Delete: del, IfVersion: engine.AnyVersion}
	if v := strings.TrimSpace(f.Get("version")); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return engine.Write{}, fmt.Errorf("version must be a number (the version you edited), got %q", v)
		}
		w.IfVersion = n
	}
	if !del {
		raw := []byte(f.Get("value"))
		if !json.Valid(raw) {
			return engine.Write{}, errors.New("value must be JSON text, e.g. {\"a\":1}, \"text\" or 42")
		}
		var b bytes.Buffer
		json.Compact(&b, raw)
		w.Value = b.Bytes()
	}
	return w, nil
}

func (u *UI) putKey(w http.ResponseWriter, r *http.Request, s *session) {
	u.writeKey(w, r, s, false)
}

func (u *UI) deleteKey(w http.ResponseWriter, r *http.Request, s *session) {
	u.writeKey(w, r, s, true)
}

// writeKey puts or deletes through the engine's tables lane, like the
// tables API, then redirects back (303) or shows the page with the reason.
func (u *UI) writeKey(w http.ResponseWriter, r *http.Request, s *session, del bool) {
	table := r.PathValue("table")
	if err := fleet.CheckName("table", table); err != nil {
		fail(w, http.StatusBadRequest, "bad_table", fleet.Message(err))
		return
	}
	wr, err := writeFromForm(table, r.PostForm, del)
	if err != nil {
		u.showTable(w, r, s, http.StatusBadRequest, err.Error(), "error", r.PostForm)
		return
	}
	res, err := u.e.PutKey(r.Context(), wr)
	if err != nil {
		status, msg := http.StatusServiceUnavailable, "not written: "+err.Error()
		switch {
		case errors.Is(err, fleet.ErrReadOnly): // the engine's write authority
			status, msg = http.StatusForbidden, err.Error()+"; it is read-only here"
		case errors.Is(err, engine.ErrVersionConflict):
			status = http.StatusConflict
			msg = fmt.Sprintf("Conflict: key %q changed since you loaded it (you edited version %s). Nothing was written; reload the row and edit it again.", wr.Key, r.PostForm.Get("version"))
			if wr.IfVersion == 0 {
				msg = fmt.Sprintf("Conflict: key %q already exists. Nothing was written; edit the existing row instead.", wr.Key)
			}
		case errors.Is(err, engine.ErrNotFound):
			status, msg = http.StatusNotFound, fmt.Sprintf("Key %q does not exist (already deleted?). Nothing was changed.", wr.Key)
		case errors.Is(err, engine.ErrValueTooLarge):
			status, msg = http.StatusRequestEntityTooLarge, "The value is too large ("+strings.TrimPrefix(err.Error(), engine.ErrValueTooLarge.Error()+": ")+", http.max_value_bytes). Nothing was written."
		case errors.Is(err, engine.ErrLaneFull):
			status, msg = http.StatusTooManyRequests, "The tables lane is at its bound; try again in a moment. Nothing was written."
		case errors.Is(err, engine.ErrCentralReadOnly):
			status, msg = http.StatusServiceUnavailable, "This box is a central view of several depots: it serves reads only. Nothing was written; write on the depot's own box."
		case errors.Is(err, engine.ErrNotPrimary):
			status, msg = http.StatusServiceUnavailable, "This box is not the depot's primary (a warm standby, or a primary a standby was promoted in place of): it serves reads only. Nothing was written; write on the primary."
		case errors.Is(err, engine.ErrQuotaExceeded):
			status, msg = http.StatusForbidden, "Quota exceeded: "+strings.TrimPrefix(err.Error(), engine.ErrQuotaExceeded.Error()+": ")+". Nothing was written."
		case errors.Is(err, engine.ErrDiskReserved):
			status, msg = http.StatusInsufficientStorage, "Free disk space is down to the headroom kept for the fleet's writes (storage.reserve_mb): user tables do not grow. Nothing was written."
		}
		u.showTable(w, r, s, status, msg, "error", r.PostForm)
		return
	}
	verb := "put"
	if del {
		verb = "deleted"
	}
	msg := fmt.Sprintf("%s %q (version %d, lsn %d)", verb, res.Key, res.Version, res.LSN)
	back := url.URL{Path: "/ui/tables/" + table, RawQuery: url.Values{"msg": {msg}}.Encode()}
	http.Redirect(w, r, back.String(), http.StatusSeeOther)
}
