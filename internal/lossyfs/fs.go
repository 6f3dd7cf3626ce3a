package lossyfs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// ErrNoFuse is returned by Mount when /dev/fuse is missing.
var ErrNoFuse = errors.New("lossyfs: /dev/fuse is missing")

// FS is one mounted lossy filesystem. Its methods are safe for concurrent
// use.
type FS struct {
	mountpoint string
	backing    string
	server     *fuse.Server
	conn       uint32 // fuse connection id, for abort

	mu                sync.Mutex
	gen               uint64            // bumped by Crash: file handles of an older generation write nothing
	files             map[uint64]*dirty // by backing inode, only files with unsynced changes
	noSpace, fsyncEIO bool
	failFsyncs        int           // the next this many fsyncs of files with unsynced data fail (FailFsyncs)
	freeBytes         int64         // < 0: report the backing filesystem's figures
	slowSuffix        string        // SetSlowFsync
	slowFsync         time.Duration // SetSlowFsync
	stats             Stats
	// gens gives each file created through the mount its own inode
	// generation, so that a new file reusing a deleted file's inode
	// number never shares its kernel inode (and page cache). Files that
	// predate the mount have generation 1.
	gens    map[uint64]uint64
	nextGen uint64

	closeOnce sync.Once
	closeErr  error
}

// Stats are counters since Mount.
type Stats struct {
	Writes       uint64 // data writes taken into memory
	Fsyncs       uint64 // fsyncs that wrote a file through
	Crashes      uint64
	DroppedBytes uint64 // unsynced page bytes dropped by Crash or a failed fsync
	NoSpace      uint64 // writes refused with ENOSPC
	FsyncErrors  uint64 // fsyncs failed with EIO
}

// Mount mounts a lossy view of backing at mountpoint (both are created when
// missing) and serves it from this process until Close. It first detaches
// mounts left by test processes that are gone.
func Mount(mountpoint, backing string) (*FS, error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoFuse, err)
	}
	DetachStale()
	for _, d := range []string{mountpoint, backing} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("lossyfs: mount: %w", err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("lossyfs: mount: backing dir: %w", err)
	}
	l := &FS{mountpoint: mountpoint, backing: backing, files: map[uint64]*dirty{}, freeBytes: -1,
		gens: map[uint64]uint64{}, nextGen: 2}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, lfs: l}
	}
	rootNode := &node{LoopbackNode: fs.LoopbackNode{RootData: root}, lfs: l}
	root.RootNode = rootNode

	// No kernel caching of names and attributes: after Crash the sizes change
	// under the kernel's feet. Page contents are dropped by the kernel at
	// every open, since no open asks to keep the cache.
	zero := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			FsName:            fsName(os.Getpid()),
			Name:              "lossyfs",
			MaxWrite:          1 << 20,
		},
	}
	// go-fuse opens /dev/fuse without close-on-exec when it mounts directly.
	// Hold the fork lock until the flag is set, so no child started
	// meanwhile inherits the descriptor and keeps a dead mount alive.
	syscall.ForkLock.Lock()
	server, err := fs.Mount(mountpoint, rootNode, opts)
	cloexecErr := closeOnExecFuse()
	syscall.ForkLock.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lossyfs: mount %s: %w", mountpoint, err)
	}
	l.server = server
	if err := syscall.Stat(mountpoint, &st); err == nil {
		l.conn = uint32(devMinor(uint64(st.Dev)))
	}
	if cloexecErr != nil {
		_ = l.Close()
		return nil, fmt.Errorf("lossyfs: mount %s: %w", mountpoint, cloexecErr)
	}
	return l, nil
}

// Dir is the mountpoint.
func (l *FS) Dir() string { return l.mountpoint }

// Backing is the backing directory: what survives a crash.
func (l *FS) Backing() string { return l.backing }

// Crash drops every unsynced write and size change: each file returns to
// its last synced content and size. Writes still arriving from file handles
// opened before Crash (the writeback of a killed process) are dropped too.
// Kill the programs using the mount first and wait until they are reaped.
func (l *FS) Crash() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	for _, d := range l.files {
		l.stats.DroppedBytes += uint64(d.bytes())
	}
	l.files = map[uint64]*dirty{}
	l.stats.Crashes++
}

// UnsyncedBytes is the memory held by unsynced pages now.
func (l *FS) UnsyncedBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, d := range l.files {
		n += d.bytes()
	}
	return n
}

// Stats returns the counters.
func (l *FS) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// SetNoSpace makes data writes and file growth fail with ENOSPC while on.
func (l *FS) SetNoSpace(on bool) {
	l.mu.Lock()
	l.noSpace = on
	l.mu.Unlock()
}

// SetSlowFsync makes every fsync of a file whose name ends with suffix
// take d longer (a disk slow for one file, busy with another's writes):
// the window between two files' fsyncs widens, so that a power cut lands
// in it. An empty suffix or a zero d turns it off.
func (l *FS) SetSlowFsync(suffix string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slowSuffix, l.slowFsync = suffix, d
}

// SetFsyncEIO makes every fsync of a file with unsynced data fail with EIO
// while on, dropping that data.
func (l *FS) SetFsyncEIO(on bool) {
	l.mu.Lock()
	l.fsyncEIO = on
	l.mu.Unlock()
}

// FailFsyncs makes the next n fsyncs of files with unsynced data fail with
// EIO, dropping that data as SetFsyncEIO does; then fsyncs work again.
func (l *FS) FailFsyncs(n int) {
	l.mu.Lock()
	l.failFsyncs = n
	l.mu.Unlock()
}

// SetFreeBytes makes statfs report n bytes free and available; n < 0
// reports the backing filesystem's figures again.
func (l *FS) SetFreeBytes(n int64) {
	l.mu.Lock()
	l.freeBytes = n
	l.mu.Unlock()
}

// Close unmounts and stops serving. When a file is still open it detaches
// the mount and aborts the connection. Safe to call twice.
func (l *FS) Close() error {
	l.closeOnce.Do(func() {
		if err := l.server.Unmount(); err != nil {
			_ = syscall.Unmount(l.mountpoint, syscall.MNT_DETACH)
			abortConn(l.conn)
		}
		done := make(chan struct{})
		go func() { l.server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			abortConn(l.conn)
			l.closeErr = fmt.Errorf("lossyfs: unmount %s: server did not stop", l.mountpoint)
		}
	})
	return l.closeErr
}

// state returns the unsynced state of ino, creating it from the backing
// file's size. Called with l.mu held.
func (l *FS) state(ino uint64, fd int) (*dirty, error) {
	if d, ok := l.files[ino]; ok {
		return d, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	d := newDirty(st.Size)
	l.files[ino] = d
	return d, nil
}

func (l *FS) write(f *file, data []byte, off int64) (uint32, syscall.Errno) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f.gen != l.gen {
		return uint32(len(data)), 0 // a process from before the crash: its writes are lost
	}
	if l.noSpace {
		l.stats.NoSpace++
		return 0, syscall.ENOSPC
	}
	d, err := l.state(f.ino, f.fd)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if err := d.write(f.fd, data, off); err != nil {
		return 0, fs.ToErrno(err)
	}
	l.stats.Writes++
	return uint32(len(data)), 0
}

func (l *FS) read(f *file, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.files[f.ino]
	if !ok {
		var st syscall.Stat_t
		if err := syscall.Fstat(f.fd, &st); err != nil {
			return nil, fs.ToErrno(err)
		}
		d = newDirty(st.Size) // a read-only view; not stored
	}
	n, err := d.read(f.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(buf[:n]), 0
}

// truncate changes the visible size of ino.
func (l *FS) truncate(ino uint64, fd int, gen uint64, size int64) syscall.Errno {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen {
		return 0
	}
	d, err := l.state(ino, fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	if size > d.size && l.noSpace {
		l.stats.NoSpace++
		return syscall.ENOSPC
	}
	d.truncate(size)
	return 0
}

func (l *FS) fsync(f *file) syscall.Errno {
	l.mu.Lock()
	if l.slowFsync > 0 && l.slowSuffix != "" && strings.HasSuffix(f.name, l.slowSuffix) {
		d := l.slowFsync
		l.mu.Unlock()
		time.Sleep(d) // other files' operations go on meanwhile
		l.mu.Lock()
	}
	defer l.mu.Unlock()
	if f.gen != l.gen {
		return 0
	}
	d, ok := l.files[f.ino]
	if !ok {
		return fs.ToErrno(syscall.Fsync(f.fd))
	}
	if l.fsyncEIO || l.failFsyncs > 0 {
		if l.failFsyncs > 0 {
			l.failFsyncs--
		}
		// As Linux after a failed writeback: the pages count as clean, the
		// data is gone, and the next fsync has nothing to report.
		l.stats.FsyncErrors++
		l.stats.DroppedBytes += uint64(d.bytes())
		delete(l.files, f.ino)
		return syscall.EIO
	}
	if err := d.flush(f.fd); err != nil {
		return fs.ToErrno(err)
	}
	delete(l.files, f.ino)
	l.stats.Fsyncs++
	return 0
}

// size is the visible size of ino, if it has unsynced changes.
func (l *FS) size(ino uint64) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.files[ino]; ok {
		return d.size, true
	}
	return 0, false
}

// forget drops the unsynced state of an inode that no longer has a name,
// so that a new file reusing the inode number starts clean.
func (l *FS) forget(ino uint64) {
	l.mu.Lock()
	delete(l.files, ino)
	delete(l.gens, ino)
	l.mu.Unlock()
}

// newGen gives a freshly created inode a generation of its own.
func (l *FS) newGen(ino uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.nextGen
	l.nextGen++
	l.gens[ino] = g
	return g
}

// genOf is the generation of a live inode.
func (l *FS) genOf(ino uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g, ok := l.gens[ino]; ok {
		return g
	}
	return 1
}

func (l *FS) currentGen() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

func (l *FS) statfs(out *fuse.StatfsOut) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.freeBytes >= 0 && out.Bsize > 0 {
		blocks := uint64(l.freeBytes) / uint64(out.Bsize)
		out.Bfree, out.Bavail = blocks, blocks
	}
}
