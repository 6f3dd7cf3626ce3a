package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"routehound/fleet"
)

// Verification is the read-back after a run: every acknowledged write
// must be in the log and in its table's state.
type Verification struct {
	OK       bool             `json:"ok"`
	Checked  map[string]int64 `json:"checked"` // acknowledged writes (driver: points) read back, per actor
	Lost     map[string]int64 `json:"lost"`    // of those, not found, per actor
	Problems []string         `json:"problems,omitempty"`
	// Unconfirmed counts driver points accepted but never covered by a
	// durable_seq before the verifier ran (not checked; should be 0).
	Unconfirmed int64   `json:"unconfirmed_driver_points"`
	LogRecords  int64   `json:"log_records_read"`
	TookS       float64 `json:"took_s"`

	durable    []time.Duration // driver points: committed_at − send time of the request that carried them
	commits    []time.Time     // driver points: committed_at, from the log
	durableIn  int64           // driver points committed before the end of the offer window
	durableAll int64
}

const maxProblems = 20

func (v *Verification) lose(actor, format string, args ...any) {
	v.Lost[actor]++
	v.OK = false
	if len(v.Problems) < maxProblems {
		v.Problems = append(v.Problems, fmt.Sprintf(actor+": "+format, args...))
	}
}

type logPage struct {
	Records []struct {
		LSN         uint64          `json:"lsn"`
		Table       string          `json:"table"`
		Key         string          `json:"key"`
		Op          string          `json:"op"`
		Value       json.RawMessage `json:"value"`
		Version     uint64          `json:"version"`
		CommittedAt time.Time       `json:"committed_at"`
	} `json:"records"`
	Next *uint64 `json:"next"`
}

type tablePage struct {
	Rows []struct {
		Key     string          `json:"key"`
		Value   json.RawMessage `json:"value"`
		Version uint64          `json:"version"`
	} `json:"rows"`
	Next *string `json:"next"`
}

// Verify reads back every acknowledgement in acks from t: the change feed
// (GET /v1/log, admin token) after LSN since, and the state of every table
// written (GET /v1/tables/{t}, dashboard token). A keyed write is lost when
// the log lacks its (table, key, version) or the table no longer holds the
// key at that version or later; a driver point is lost when its seq is at
// or below a durable_seq the driver received and the log lacks it, or the
// driver's position is older than that durable_seq. offerEnd bounds the
// window in which durable driver points count toward throughput.
func Verify(ctx context.Context, t Target, acks *Acks, since uint64, offerEnd time.Time) (*Verification, error) {
	t0 := time.Now()
	v := &Verification{OK: true, Checked: map[string]int64{}, Lost: map[string]int64{}}
	c := &http.Client{Transport: newTransport(2), Timeout: time.Minute}
	defer c.CloseIdleConnections()

	keyed := acks.Keyed("")
	want := make(map[string]bool, len(keyed)) // table\x00key\x00version → seen in the log
	tables := map[string]bool{}
	for _, k := range keyed {
		want[k.Table+"\x00"+k.Key+"\x00"+strconv.FormatUint(k.Version, 10)] = false
		tables[k.Table] = true
	}
	drivers := map[string]*driverSim{}
	seen := map[string][]bool{}    // driver → seq seen in the log (index = seq)
	durable := map[string]uint64{} // read once: what the verifier holds each driver to
	for _, d := range acks.drivers {
		drivers[d.name] = d
		durable[d.name] = d.durable.Load()
		seen[d.name] = make([]bool, durable[d.name]+1)
		v.Unconfirmed += int64(d.accepted - min(durable[d.name], d.accepted))
	}
	var seqOf struct {
		Seq uint64 `json:"seq"`
		TS  string `json:"ts"`
	}

	// A write answered once its journal frame is durable can be ahead of
	// the log's durable LSN, which bounds what GET /v1/log serves: while
	// an acknowledged write is missing, read on from where the last pass
	// ended, for a bounded time, before calling it lost.
	missing := func() bool {
		for _, seen := range want {
			if !seen {
				return true
			}
		}
		return false
	}
	after := since
	for deadline := time.Now().Add(logCatchUp); ; {
		if err := v.readLog(ctx, c, t, &after, want, seen, drivers, offerEnd); err != nil {
			return nil, err
		}
		if !missing() || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	slices.Sort(v.durable)

	// State: every table written, paged whole.
	state := map[string]map[string]uint64{} // table → key → version
	posSeq := map[string]uint64{}
	if len(drivers) > 0 {
		tables[fleet.TablePositions] = true
	}
	for tb := range tables {
		m := map[string]uint64{}
		state[tb] = m
		after := ""
		for {
			var p tablePage
			if err := getJSON(ctx, c, t.URL+"/v1/tables/"+tb+"?limit=1000&after="+url.QueryEscape(after), t.Tokens["dashboard"], &p); err != nil {
				return nil, err
			}
			for _, r := range p.Rows {
				m[r.Key] = r.Version
				if tb == fleet.TablePositions {
					if _, ok := drivers[r.Key]; ok {
						seqOf.Seq = 0
						if json.Unmarshal(r.Value, &seqOf) == nil {
							posSeq[r.Key] = seqOf.Seq
						}
					}
				}
			}
			if p.Next == nil || len(p.Rows) == 0 {
				break
			}
			after = *p.Next
		}
	}

	for _, k := range keyed {
		v.Checked[k.Actor]++
		if !want[k.Table+"\x00"+k.Key+"\x00"+strconv.FormatUint(k.Version, 10)] {
			v.lose(k.Actor, "%s/%s version %d acknowledged but not in the log", k.Table, k.Key, k.Version)
			continue
		}
		if cur, ok := state[k.Table][k.Key]; !ok || cur < k.Version {
			v.lose(k.Actor, "%s/%s version %d acknowledged but the table holds %s", k.Table, k.Key, k.Version, describe(cur, ok))
		}
	}
	for _, d := range acks.drivers {
		s, top := seen[d.name], durable[d.name]
		for seq := uint64(1); seq <= top; seq++ {
			v.Checked[ActorDriver]++
			if !s[seq] {
				v.lose(ActorDriver, "%s seq %d at or below durable_seq %d but not in the log", d.name, seq, top)
			}
		}
		if top > 0 && posSeq[d.name] < top {
			v.lose(ActorDriver, "%s position is at seq %d, below the durable_seq %d it received", d.name, posSeq[d.name], top)
		}
	}
	v.TookS = time.Since(t0).Seconds()
	return v, nil
}

func describe(ver uint64, ok bool) string {
	if !ok {
		return "no such key"
	}
	return "version " + strconv.FormatUint(ver, 10)
}

func getJSON(ctx context.Context, c *http.Client, u, token string, v any) error {
	a, err := do(ctx, c, http.MethodGet, u, token, nil)
	if err != nil {
		return fmt.Errorf("sim: verify: %w", err)
	}
	if a.status != http.StatusOK {
		return fmt.Errorf("sim: verify: GET %s: %d %s: %s", u, a.status, a.code, a.body)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		return fmt.Errorf("sim: verify: GET %s: decoding: %w", u, err)
	}
	return nil
}

// logCatchUp bounds how long Verify reads on for acknowledged writes the
// log's durable LSN has not reached yet.
const logCatchUp = 10 * time.Second

// readLog reads GET /v1/log after *after to its end, marking what it finds
// in want (keyed writes) and seen (driver seqs), and moves *after.
func (v *Verification) readLog(ctx context.Context, c *http.Client, t Target, after *uint64, want map[string]bool, seen map[string][]bool, drivers map[string]*driverSim, offerEnd time.Time) error {
	var seqOf struct {
		Seq uint64 `json:"seq"`
		TS  string `json:"ts"`
	}
	for {
		var p logPage
		if err := getJSON(ctx, c, t.URL+"/v1/log?limit=1000&after="+strconv.FormatUint(*after, 10), t.Tokens["admin"], &p); err != nil {
			return err
		}
		for _, r := range p.Records {
			v.LogRecords++
			*after = r.LSN
			if r.Op != "put" {
				continue
			}
			if r.Table == fleet.TablePositions {
				s, ok := seen[r.Key]
				if !ok {
					continue
				}
				seqOf.Seq, seqOf.TS = 0, ""
				if json.Unmarshal(r.Value, &seqOf) != nil {
					continue
				}
				if seqOf.Seq < uint64(len(s)) {
					s[seqOf.Seq] = true
				}
				v.durableAll++
				v.commits = append(v.commits, r.CommittedAt)
				if !r.CommittedAt.After(offerEnd) {
					v.durableIn++
				}
				if sent, ok := drivers[r.Key].sentAt(seqOf.Seq); ok {
					v.durable = append(v.durable, r.CommittedAt.Sub(sent))
				}
				continue
			}
			k := r.Table + "\x00" + r.Key + "\x00" + strconv.FormatUint(r.Version, 10)
			if _, ok := want[k]; ok {
				want[k] = true
			}
		}
		if p.Next == nil || len(p.Records) == 0 {
			break
		}
		*after = *p.Next
	}
	return nil
}
