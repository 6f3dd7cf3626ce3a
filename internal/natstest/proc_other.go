//go:build !linux

package natstest

import "syscall"

// procAttr: no parent-death signal outside Linux; the test's cleanup kills
// the servers.
func procAttr() *syscall.SysProcAttr { return nil }
