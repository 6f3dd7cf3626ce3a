package lossyfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const fsNamePrefix = "lossyfs-"

// fsName names a mount after the process serving it, so a later process can
// tell a mount whose server is gone.
func fsName(pid int) string { return fsNamePrefix + strconv.Itoa(pid) }

// DetachStale detaches every lossyfs mount whose serving process is gone
// (a test killed mid-run), aborting its connection first so nothing waiting
// on it hangs. Mount calls it; it is safe to call at any time.
func DetachStale() {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	type stale struct {
		dir  string
		conn uint32
	}
	var found []stale
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+2 >= len(fields) {
			continue
		}
		source := fields[sep+2]
		if !strings.HasPrefix(source, fsNamePrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(source, fsNamePrefix))
		if err != nil || processAlive(pid) {
			continue
		}
		var maj, minor uint32
		if _, err := fmt.Sscanf(fields[2], "%d:%d", &maj, &minor); err != nil {
			continue
		}
		found = append(found, stale{dir: unescapeMountPath(fields[4]), conn: minor})
	}
	for _, s := range found {
		abortConn(s.conn)
		_ = syscall.Unmount(s.dir, syscall.MNT_DETACH)
	}
}

func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// unescapeMountPath undoes the octal escapes of /proc/self/mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// abortConn aborts a fuse connection through the fusectl filesystem,
// mounting it when needed: every request waiting on the connection fails
// at once instead of hanging.
func abortConn(conn uint32) {
	if conn == 0 {
		return
	}
	const ctl = "/sys/fs/fuse/connections"
	p := filepath.Join(ctl, strconv.FormatUint(uint64(conn), 10), "abort")
	if _, err := os.Stat(p); err != nil {
		_ = syscall.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	_ = os.WriteFile(p, []byte("1"), 0o200)
}

// closeOnExecFuse marks every descriptor of this process open on /dev/fuse
// close-on-exec.
func closeOnExecFuse() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != "/dev/fuse" {
			continue
		}
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}

// devMinor is the minor number of a device number (the fuse connection id
// of a fuse mount).
func devMinor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xfff00) }
