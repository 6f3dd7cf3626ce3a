//go:build !unix

package main

import "os"

// toJournal: there is no systemd journal here.
func toJournal(*os.File) bool { return false }
