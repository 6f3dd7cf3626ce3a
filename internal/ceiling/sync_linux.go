package ceiling

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (not its timestamps), as a log's group commit does.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
