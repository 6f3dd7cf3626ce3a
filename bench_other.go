//go:build !linux

package main

import "errors"

// benchCmd: the ingest benchmark reads the server's CPU time and RSS from
// /proc, so it runs on Linux only.
func benchCmd(args []string) error {
	return errors.New("bench: runs on Linux only (it reads the server's CPU time from /proc)")
}
