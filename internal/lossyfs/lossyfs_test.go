package lossyfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The test binary doubles as the child process that runs Badger on the
// mount: a Go process must not fault on mmap pages served by its own FUSE
// server.
const helperEnv = "LOSSYFS_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode == "mount" {
		os.Exit(mountHelper(os.Getenv("LOSSYFS_TEST_DIR")))
	} else if mode != "" {
		os.Exit(badgerHelper(mode, os.Getenv("LOSSYFS_TEST_DIR")))
	}
	os.Exit(m.Run())
}

// mountForTest mounts a lossy fs for the test and unmounts it at the end.
// Without /dev/fuse the test fails, unless LOSSYFS_ALLOW_SKIP=1.
func mountForTest(t *testing.T) *FS {
	t.Helper()
	dir := t.TempDir()
	l, err := Mount(filepath.Join(dir, "mnt"), filepath.Join(dir, "backing"))
	if errors.Is(err, ErrNoFuse) && os.Getenv("LOSSYFS_ALLOW_SKIP") == "1" {
		t.Skipf("%v (LOSSYFS_ALLOW_SKIP=1)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func TestPlainFileKeepsOnlySyncedBytes(t *testing.T) {
	l := mountForTest(t)
	p := filepath.Join(l.Dir(), "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	synced := bytes.Repeat([]byte("synced-"), 1000) // crosses pages
	if _, err := f.Write(synced); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("lost tail")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("LOST"), 3); err != nil { // overwrite of synced bytes
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, synced...), "lost tail"...)
	copy(want[3:], "LOST")
	if !bytes.Equal(got, want) {
		t.Fatalf("before the crash the file reads %d bytes, want the %d written", len(got), len(want))
	}
	if b, _ := os.ReadFile(filepath.Join(l.Backing(), "f")); !bytes.Equal(b, synced) {
		t.Fatalf("backing file holds %d bytes before the crash, want the %d synced", len(b), len(synced))
	}
	f.Close()

	l.Crash()
	got, err = os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, synced) {
		t.Fatalf("after the crash the file has %d bytes %q…, want the %d synced bytes", len(got), head(got), len(synced))
	}
	if st, err := os.Stat(p); err != nil || st.Size() != int64(len(synced)) {
		t.Fatalf("after the crash stat says %v (%v), want size %d", st.Size(), err, len(synced))
	}
}

func TestTruncateIsData(t *testing.T) {
	l := mountForTest(t)
	p := filepath.Join(l.Dir(), "t")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Shrink, then grow: the cut bytes come back as zeros.
	if err := f.Truncate(4); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "0123\x00\x00\x00\x00" {
		t.Fatalf("after truncate 4 then 8: %q", got)
	}
	// A pre-sized file, as Badger makes them, is lost whole at a crash.
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	l.Crash()
	if got, _ := os.ReadFile(p); string(got) != "0123456789" {
		t.Fatalf("after the crash: %d bytes %q, want the synced 10", len(got), head(got))
	}
	// Synced truncation sticks.
	g, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Crash()
	if got, _ := os.ReadFile(p); string(got) != "012" {
		t.Fatalf("after a synced truncate and a crash: %q, want \"012\"", got)
	}
}

func TestFaults(t *testing.T) {
	l := mountForTest(t)
	p := filepath.Join(l.Dir(), "x")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	l.SetNoSpace(true)
	if _, err := f.Write([]byte("full")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write with the disk full: %v, want ENOSPC", err)
	}
	l.SetNoSpace(false)
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}

	// fsyncgate: the failed fsync loses the data, and the next fsync
	// succeeds with nothing written.
	l.SetFsyncEIO(true)
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync with EIO injected: %v, want EIO", err)
	}
	l.SetFsyncEIO(false)
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync after the EIO: %v", err)
	}
	l.Crash()
	if got, _ := os.ReadFile(p); len(got) != 0 {
		t.Fatalf("data of a failed fsync survived the crash: %q", got)
	}

	// FailFsyncs: exactly the next n fsyncs with data to write fail.
	f, err = os.OpenFile(p, os.O_RDWR, 0) // handles from before a crash write nothing
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l.FailFsyncs(2)
	for i := range 3 {
		if _, err := f.WriteAt([]byte("more"), 0); err != nil {
			t.Fatal(err)
		}
		err := f.Sync()
		if i < 2 && !errors.Is(err, syscall.EIO) {
			t.Fatalf("fsync %d of 2 failing: %v, want EIO", i+1, err)
		}
		if i == 2 && err != nil {
			t.Fatalf("fsync after the 2 failing ones: %v", err)
		}
	}
	l.Crash()
	if got, _ := os.ReadFile(p); string(got) != "more" {
		t.Fatalf("after the failing fsyncs and a good one the file holds %q, want \"more\"", got)
	}

	var st syscall.Statfs_t
	l.SetFreeBytes(1 << 20)
	if err := syscall.Statfs(l.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free > 1<<20 || free < 1<<20-int64(st.Bsize) {
		t.Fatalf("statfs free %d, want about 1 MiB", free)
	}
	l.SetFreeBytes(-1)
	if err := syscall.Statfs(l.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free == 1<<20 {
		t.Fatalf("statfs still reports the injected figure")
	}
}

func TestRenameAndUnlinkKeepStateApart(t *testing.T) {
	l := mountForTest(t)
	a, b := filepath.Join(l.Dir(), "a"), filepath.Join(l.Dir(), "b")
	if err := os.WriteFile(b, []byte("old b, unsynced"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("new a")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(b); string(got) != "new a" {
		t.Fatalf("after rename: %q", got)
	}
	l.Crash()
	if got, _ := os.ReadFile(b); string(got) != "new a" {
		t.Fatalf("after rename and crash: %q, want the synced \"new a\"", got)
	}
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("old name after rename: %v", err)
	}
}

// TestBadgerPowerCut runs Badger in a child process: writes, db.Sync(), more
// writes, SIGKILL and Crash, then a second child reopens the store and
// checks that every synced key is there and no unsynced one.
func TestBadgerPowerCut(t *testing.T) {
	l := mountForTest(t)
	dir := filepath.Join(l.Dir(), "badger")

	cmd := helperCmd(t, "write", dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var synced, written int
	deadline := time.After(2 * time.Minute)
	for written == 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("writer exited early: %v", <-done)
			}
			if _, err := fmt.Sscanf(line, "synced %d", &synced); err == nil {
				continue
			}
			if _, err := fmt.Sscanf(line, "written %d", &written); err != nil {
				t.Fatalf("writer: %s", line)
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatal("writer did not finish within 2 minutes")
		}
	}
	_ = cmd.Process.Kill()
	<-done
	if unsynced := l.UnsyncedBytes(); unsynced == 0 {
		t.Fatal("no unsynced data before the crash: the test would not show anything")
	}
	l.Crash()

	verify := helperCmd(t, "verify", dir)
	verify.Env = append(verify.Env, "LOSSYFS_SYNCED="+strconv.Itoa(synced), "LOSSYFS_WRITTEN="+strconv.Itoa(written))
	verify.Stderr = nil
	res, err := verify.CombinedOutput()
	if err != nil {
		t.Fatalf("verify after the crash (synced %d, written %d): %v\n%s", synced, written, err, res)
	}
	t.Logf("synced %d keys, wrote %d more, after the crash: %s", synced, written-synced, strings.TrimSpace(string(res)))
}

func helperCmd(t *testing.T, mode, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "LOSSYFS_TEST_DIR="+dir)
	cmd.Stderr = &prefixWriter{t: t}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.t.Logf("child: %s", bytes.TrimSpace(b))
	return len(b), nil
}

const (
	helperSynced = 2000
	helperMore   = 1000
)

func helperKey(i int) []byte { return []byte(fmt.Sprintf("key-%06d", i)) }
func helperVal(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 100+i%50) }

// badgerHelper is the child process: "write" writes helperSynced keys,
// syncs, writes helperMore more without a sync and waits to be killed;
// "verify" opens the store and checks it.
func badgerHelper(mode, dir string) int {
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(false).WithMemTableSize(16 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	put := func(from, to int) error {
		for i := from; i < to; i += 10 {
			err := db.Update(func(txn *badger.Txn) error {
				for j := i; j < min(i+10, to); j++ {
					if err := txn.Set(helperKey(j), helperVal(j)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	switch mode {
	case "write":
		if err := put(0, helperSynced); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			return 2
		}
		if err := db.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, "sync:", err)
			return 2
		}
		fmt.Printf("synced %d\n", helperSynced)
		if err := put(helperSynced, helperSynced+helperMore); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			return 2
		}
		fmt.Printf("written %d\n", helperSynced+helperMore)
		_, _ = io.Copy(io.Discard, os.Stdin) // until killed
		return 0
	case "verify":
		synced, _ := strconv.Atoi(os.Getenv("LOSSYFS_SYNCED"))
		written, _ := strconv.Atoi(os.Getenv("LOSSYFS_WRITTEN"))
		present, bad := 0, 0
		err := db.View(func(txn *badger.Txn) error {
			for i := range written {
				item, err := txn.Get(helperKey(i))
				if errors.Is(err, badger.ErrKeyNotFound) {
					if i < synced {
						fmt.Printf("synced key %d missing\n", i)
						bad++
					}
					continue
				}
				if err != nil {
					return err
				}
				present++
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if i >= synced {
					fmt.Printf("unsynced key %d came back\n", i)
					bad++
				} else if !bytes.Equal(v, helperVal(i)) {
					fmt.Printf("key %d has a wrong value of %d bytes\n", i, len(v))
					bad++
				}
			}
			return nil
		})
		_ = db.Close()
		if err != nil {
			fmt.Println("read:", err)
			return 2
		}
		fmt.Printf("%d keys present, %d wrong\n", present, bad)
		if bad > 0 {
			return 1
		}
		return 0
	}
	return 2
}

func head(b []byte) []byte { return b[:min(len(b), 40)] }

// mountHelper mounts a lossy fs and waits to be killed, leaving the mount
// behind as a test killed mid-run would.
func mountHelper(dir string) int {
	l, err := Mount(filepath.Join(dir, "mnt"), filepath.Join(dir, "backing"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "mount:", err)
		return 2
	}
	_ = l
	fmt.Println("mounted")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && unescapeMountPath(f[4]) == dir {
			return true
		}
	}
	return false
}

// A process killed with its mount up leaves a dead mount; the next Mount
// (DetachStale) removes it.
func TestStaleMountIsDetached(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil && os.Getenv("LOSSYFS_ALLOW_SKIP") == "1" {
		t.Skip("no /dev/fuse (LOSSYFS_ALLOW_SKIP=1)")
	}
	dir := t.TempDir()
	cmd := helperCmd(t, "mount", dir)
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "mounted" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %q %v", line, err)
	}
	mnt := filepath.Join(dir, "mnt")
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !mounted(mnt) {
		t.Fatal("the killed helper left no mount behind: nothing to test")
	}
	DetachStale()
	if mounted(mnt) {
		t.Fatal("the dead mount is still there after DetachStale")
	}
	if _, err := os.ReadDir(mnt); err != nil {
		t.Fatalf("the mountpoint after detaching: %v", err)
	}
}

// No child process inherits the /dev/fuse descriptor.
func TestFuseDescriptorIsCloseOnExec(t *testing.T) {
	mountForTest(t)
	out, err := exec.Command("sh", "-c", "ls -l /proc/$$/fd").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Contains(string(out), "/dev/fuse") {
		t.Fatalf("a child holds /dev/fuse:\n%s", out)
	}
}
