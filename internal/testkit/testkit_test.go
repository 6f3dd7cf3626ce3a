package testkit

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The three index rules on 1..10 ms and on 1..100 ms (where p/100·n is
// whole, the case in which they differ).
func TestPercentileRules(t *testing.T) {
	seq := func(n int) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = time.Duration(n-i) * time.Millisecond // reversed: the rules sort
		}
		return ds
	}
	ms := time.Millisecond
	for _, c := range []struct {
		n                   int
		p                   float64
		nearest, floor, low time.Duration
	}{
		{10, 50, 5 * ms, 6 * ms, 5 * ms},
		{10, 99, 10 * ms, 10 * ms, 9 * ms},
		{10, 100, 10 * ms, 10 * ms, 10 * ms},
		{10, 0, 1 * ms, 1 * ms, 1 * ms},
		{100, 50, 50 * ms, 51 * ms, 50 * ms},
		{100, 99, 99 * ms, 100 * ms, 99 * ms},
		{101, 99, 100 * ms, 100 * ms, 100 * ms},
		{1, 50, 1 * ms, 1 * ms, 1 * ms},
	} {
		ds := seq(c.n)
		if got := Percentile(ds, c.p); got != c.nearest {
			t.Errorf("Percentile(1..%d ms, %v) = %v, want %v", c.n, c.p, got, c.nearest)
		}
		if got := PercentileFloor(ds, c.p); got != c.floor {
			t.Errorf("PercentileFloor(1..%d ms, %v) = %v, want %v", c.n, c.p, got, c.floor)
		}
		if got := PercentileLower(ds, c.p); got != c.low {
			t.Errorf("PercentileLower(1..%d ms, %v) = %v, want %v", c.n, c.p, got, c.low)
		}
		if ds[0] != time.Duration(c.n)*ms {
			t.Errorf("the percentile functions reordered their argument")
		}
	}
	for _, f := range []func([]time.Duration, float64) time.Duration{Percentile, PercentileFloor, PercentileLower} {
		if got := f(nil, 99); got != 0 {
			t.Errorf("percentile of nothing = %v, want 0", got)
		}
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, "the third poll", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}

func TestEngine(t *testing.T) {
	e, db := Engine(t, nil)
	if e == nil || db == nil {
		t.Fatal("no engine or wal")
	}
	if e.DurableLSN() != 0 {
		t.Errorf("a fresh engine at LSN %d", e.DurableLSN())
	}
}

// TestOnlyTestsImport refuses a non-test file of the module that imports
// testkit or apptest: they are test scaffolding, not part of the server.
func TestOnlyTestsImport(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "third_party" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			for _, kit := range []string{"internal/testkit", "internal/apptest", "internal/natstest"} {
				inKit := strings.HasPrefix(filepath.ToSlash(path), "../../"+kit+"/")
				if strings.HasPrefix(p, "routehound/"+kit) && !inKit {
					t.Errorf("%s imports %s: only _test.go files may", path, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
