package ui

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/a-h/templ"

	"routehound/engine"

	"routehound/fleet"
)

func itoa[T ~int | ~int64 | ~uint64](v T) string { return fmt.Sprint(v) }

func fmtRate(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1fk/s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f/s", v)
	}
	return fmt.Sprintf("%.1f/s", v)
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// secs is a span in whole seconds, as "30 s" (at least 1 s).
func secs(d time.Duration) string {
	return fmt.Sprintf("%d s", max(1, int64(d.Round(time.Second)/time.Second)))
}

func fmtBytes[T ~int64 | ~uint64](n T) string {
	v := float64(n)
	for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
		if v < 1024 || u == "GiB" {
			if u == "B" {
				return fmt.Sprintf("%.0f B", v)
			}
			return fmt.Sprintf("%.1f %s", v, u)
		}
		v /= 1024
	}
	return ""
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("15:04:05")
}

// fmtAge is how long ago t was, for a person: "42s", "12m 5s", "5h 12m",
// "13 d" (app.js ticks it the same way).
func fmtAge(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return humanAge(int64(max(0, now.Sub(t)).Round(time.Second) / time.Second))
}

func humanAge(s int64) string {
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm %ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh %dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%d d", s/86400)
}

func unixMillis(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// f5 is a coordinate to 5 decimals (about 1 m).
func f5(v float64) string { return strconv.FormatFloat(v, 'f', 5, 64) }

// depthWidth is the queue bar's width in a 100-wide box.
func depthWidth(depth, bound int64) string {
	if bound <= 0 {
		return "0"
	}
	return f1(min(100, 100*float64(depth)/float64(bound)))
}

func tableURL(t string) templ.SafeURL { return templ.URL("/ui/tables/" + url.PathEscape(t)) }

func tableAction(t, op string) templ.SafeURL {
	return templ.URL("/ui/tables/" + url.PathEscape(t) + "/" + op)
}

func editURL(t, key string) templ.SafeURL {
	return templ.URL("/ui/tables/" + url.PathEscape(t) + "?" + url.Values{"edit": {key}}.Encode())
}

func pageURL(t, after string) templ.SafeURL {
	return templ.URL("/ui/tables/" + url.PathEscape(t) + "?" + url.Values{"after": {after}}.Encode())
}

func trailURL(driver string) templ.SafeURL {
	return templ.URL("/ui/fleet?" + url.Values{"driver": {driver}}.Encode())
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sortedKeys(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func isBuiltin(t string) bool { return fleet.IsBuiltin(t) }

// driverLimit shows a derived rate of driver points: "off" for none.
func driverLimit(perSec float64) string {
	if perSec <= 0 {
		return "off"
	}
	return fmt.Sprintf("%.0f points/s", perSec)
}

// syncFrom says which fsync the batch cap was derived from: a sync write at
// the scheduler's target is answered by the journal's fdatasync while it is
// measured, by the log's fsync otherwise (engine/sched.go).
func syncFrom(s engine.SchedStats) string {
	if s.SyncFrom == "journal" {
		return "the journal's fdatasync, which answers a sync write at the target (the log's fsync: " + fmtDur(s.LogSync) + ")"
	}
	if s.JournalSync > 0 {
		return "the log's fsync (the journal's measure is not fresh, or not yet four writes: " + fmtDur(s.JournalSync) + " when last measured)"
	}
	return "the log's fsync"
}
