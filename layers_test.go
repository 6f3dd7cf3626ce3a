package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// layerRules says which project packages each package may import (its
// non-test files). docs/design.md, "Layer rules", explains them; a package
// missing here may import any project package.
var layerRules = map[string][]string{
	"fleet":  {},
	"wal":    {},
	"config": {"fleet"},
	"engine": {"fleet", "wal"},
	"osmand": {"engine", "fleet", "internal/netguard"},
	"hub":    {"engine", "fleet"},
	"ui":     {"engine", "fleet", "fleetevents", "hub"},
	// The fleet-events consumer reads the feed and writes through the
	// events lane, like any reader and writer above the engine.
	"fleetevents": {"engine", "fleet"},
	"naive":       {"fleet"},
	"api":         {"docs", "engine", "fleet", "hub", "internal/netguard"},
	"replica":     {"engine", "fleet"},
	"uplink":      {"engine"},
}

// TestLayerRules parses each package's imports and refuses one its rule does
// not allow, so that a new dependency across the seams is a decision made in
// docs/design.md, not an accident.
func TestLayerRules(t *testing.T) {
	const module = "routehound/"
	for pkg, allowed := range layerRules {
		ok := map[string]bool{}
		for _, a := range allowed {
			ok[a] = true
		}
		files, err := filepath.Glob(filepath.Join(pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s: no Go files (%v)", pkg, err)
			continue
		}
		seen := map[string]bool{}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, im := range af.Imports {
				p := strings.Trim(im.Path.Value, `"`)
				if !strings.HasPrefix(p, module) {
					continue
				}
				dep := strings.TrimPrefix(p, module)
				seen[dep] = true
				if !ok[dep] {
					t.Errorf("%s imports %s: its layer rule allows only %v (docs/design.md, \"Layer rules\")", f, dep, allowed)
				}
			}
		}
		var deps []string
		for d := range seen {
			deps = append(deps, d)
		}
		sort.Strings(deps)
		t.Logf("%s imports %v", pkg, deps)
	}
}
