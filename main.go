// Command routehound is the RouteHound appliance: a realtime fleet database
// that drivers, dispatchers, warehouse terminals and the operations
// dashboard share.
//
//	routehound serve [--config FILE] [--data DIR] [--listen ADDR]
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: routehound COMMAND [flags]

commands:
  serve   run the server (routehound serve --help for flags)
  sim     drive a server with a load scenario and report per actor (routehound sim --help)
  bench   benchmarks: bench ingest runs a server as a child process and measures durable driver points/s (routehound bench ingest --help)
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
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "routehound: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "routehound: %v\n", err)
		os.Exit(1)
	}
}
