//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// toJournal reports whether f is the stream systemd connected to its
// journal: systemd sets JOURNAL_STREAM to that stream's device:inode.
func toJournal(f *os.File) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(js, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
