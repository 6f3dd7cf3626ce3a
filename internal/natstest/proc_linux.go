package natstest

import "syscall"

// procAttr makes a server process die with the test's (a test binary
// killed by its timeout leaves no server behind).
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
