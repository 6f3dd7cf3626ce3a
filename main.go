// Command routehound is the RouteHound appliance: a realtime fleet database
// that drivers, dispatchers, warehouse terminals and the operations
// dashboard share.
//
//	routehound serve [--config FILE] [--data DIR] [--listen ADDR] [--follow NATS_URL --depot NAME]
//	routehound promote
//	routehound backup FILE
//	routehound restore FILE --data DIR
//	routehound replica snapshot FILE
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: routehound COMMAND [flags]

commands:
  serve   run the server (routehound serve --help for flags)
  sim     drive a server with a load scenario and report per actor (routehound sim --help)
  bench   benchmarks: bench ingest runs a server as a child process and measures durable driver points/s (routehound bench ingest --help)
  promote make a running standby (serve --follow) its depot's writer (routehound promote --help)
  backup  save an online backup of the running server at one LSN (routehound backup --help)
  restore load a backup into a new data dir (routehound restore FILE --data DIR)
  replica replica snapshot FILE: a consistent read-only copy of the SQLite read replica
  version print the build's version (VCS revision and time) and Go version
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "sim":
		err = simCmd(os.Args[2:])
	case "bench":
		err = benchCmd(os.Args[2:])
	case "promote":
		err = promoteCmd(os.Args[2:])
	case "backup":
		err = backupCmd(os.Args[2:])
	case "restore":
		err = restoreCmd(os.Args[2:])
	case "replica":
		err = replicaCmd(os.Args[2:])
	case "version", "--version":
		version(os.Stdout)
		return
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "routehound: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // --help: the flag set printed its usage; asking for it is no failure
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "routehound: %v\n", err)
		os.Exit(1)
	}
}

// version prints the module version and the VCS revision the binary was
// built from (as `go build` records it), and the Go version.
func version(w io.Writer) {
	v, rev, at, dirty := "(devel)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	fmt.Fprintf(w, "routehound %s", v)
	if rev != "" {
		fmt.Fprintf(w, " %s", rev)
		if dirty {
			fmt.Fprint(w, "+dirty")
		}
		if at != "" {
			fmt.Fprintf(w, " (%s)", at)
		}
	}
	fmt.Fprintf(w, " %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
