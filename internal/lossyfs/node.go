package lossyfs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose file data goes through the FS's unsynced
// state. Everything else (directories, names, modes) is the loopback's.
type node struct {
	fs.LoopbackNode
	lfs *FS
}

var (
	_ fs.NodeLookuper  = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeUnlinker  = (*node)(nil)
	_ fs.NodeRenamer   = (*node)(nil)
	_ fs.NodeStatfser  = (*node)(nil)
	_ fs.NodeStatxer   = (*node)(nil)
)

// backingPath is the node's path in the backing directory.
func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

// fixAttr reports the visible size of a file with unsynced changes.
func (l *FS) fixAttr(a *fuse.Attr) {
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return
	}
	if sz, ok := l.size(a.Ino); ok {
		a.Size = uint64(sz)
		a.Blocks = (uint64(sz) + 511) / 512
	}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(n.backingPath(), name), &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	out.Attr.FromStat(&st)
	n.lfs.fixAttr(&out.Attr)
	child := &node{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, lfs: n.lfs}
	id := fs.StableAttr{Mode: uint32(st.Mode), Gen: n.lfs.genOf(st.Ino), Ino: st.Ino}
	return n.NewInode(ctx, child, id), 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.LoopbackNode.Getattr(ctx, f, out); errno != 0 {
		return errno
	}
	n.lfs.fixAttr(&out.Attr)
	return 0
}

// Statx is left to Getattr: the kernel falls back to it on ENOSYS, and
// Getattr knows the unsynced sizes.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		errno := n.withFile(f, func(lf *file) syscall.Errno {
			return n.lfs.truncate(lf.ino, lf.fd, lf.gen, int64(sz))
		})
		if errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	// The loopback applies mode, owner and times by path (our file handle
	// has no Setattr), then reads the attributes back through Getattr.
	if errno := n.LoopbackNode.Setattr(ctx, nil, in, out); errno != 0 {
		return errno
	}
	n.lfs.fixAttr(&out.Attr)
	return 0
}

// withFile runs fn with f, or with a file opened on the node for the call
// when the kernel sent no handle (truncate by path).
func (n *node) withFile(f fs.FileHandle, fn func(*file) syscall.Errno) syscall.Errno {
	if lf, ok := f.(*file); ok {
		return fn(lf)
	}
	fd, err := syscall.Open(n.backingPath(), syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer syscall.Close(fd)
	lf, errno := newFile(n.lfs, fd, filepath.Base(n.backingPath()))
	if errno != 0 {
		return errno
	}
	return fn(lf)
}

// backingFlags are the flags a backing file is opened with: always read
// and write (fsync may write through from any handle), never append
// (writes carry their offset), never truncate (a size change is data).
func backingFlags(flags uint32) int {
	f := int(flags) &^ (syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_TRUNC | syscall.O_CREAT | syscall.O_EXCL | syscall.O_DIRECT | fuse.FMODE_EXEC)
	return f | syscall.O_RDWR | syscall.O_CLOEXEC
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fd, err := syscall.Open(n.backingPath(), backingFlags(flags), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	f, errno := newFile(n.lfs, fd, filepath.Base(n.backingPath()))
	if errno != 0 {
		syscall.Close(fd)
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if errno := n.lfs.truncate(f.ino, f.fd, f.gen, 0); errno != 0 {
			syscall.Close(fd)
			return nil, 0, errno
		}
	}
	return f, 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	p := filepath.Join(n.backingPath(), name)
	fresh := true
	fd, err := syscall.Open(p, backingFlags(flags)|syscall.O_CREAT|syscall.O_EXCL, mode)
	if err == syscall.EEXIST && flags&syscall.O_EXCL == 0 {
		fresh = false
		fd, err = syscall.Open(p, backingFlags(flags), mode)
	}
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	if os.Getuid() == 0 {
		if caller, ok := fuse.FromContext(ctx); ok {
			_ = syscall.Fchown(fd, int(caller.Uid), int(caller.Gid))
		}
	}
	f, errno := newFile(n.lfs, fd, name)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	gen := n.lfs.genOf(f.ino)
	if fresh {
		n.lfs.forget(f.ino) // an inode number reused from a deleted file
		gen = n.lfs.newGen(f.ino)
	} else if flags&syscall.O_TRUNC != 0 {
		if errno := n.lfs.truncate(f.ino, f.fd, f.gen, 0); errno != 0 {
			syscall.Close(fd)
			return nil, nil, 0, errno
		}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	out.FromStat(&st)
	n.lfs.fixAttr(&out.Attr)
	child := &node{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, lfs: n.lfs}
	ch := n.NewInode(ctx, child, fs.StableAttr{Mode: uint32(st.Mode), Gen: gen, Ino: st.Ino})
	return ch, f, 0, 0
}

// lastLink returns the inode of name when name is its only link.
func (n *node) lastLink(name string) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(n.backingPath(), name), &st); err != nil {
		return 0, false
	}
	return st.Ino, st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Nlink == 1
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	ino, last := n.lastLink(name)
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 && last {
		n.lfs.forget(ino)
	}
	return errno
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	var victim uint64
	var last bool
	if np, ok := newParent.(*node); ok && flags&fs.RENAME_EXCHANGE == 0 {
		victim, last = np.lastLink(newName)
		if src, _ := n.lastLink(name); src == victim {
			last = false
		}
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 && last {
		n.lfs.forget(victim)
	}
	return errno
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Statfs(n.RootData.Path, &s); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&s)
	n.lfs.statfs(out)
	return 0
}

// file is an open file: a backing descriptor, the inode its unsynced state
// is kept under, and the crash generation it was opened in.
type file struct {
	lfs  *FS
	fd   int
	ino  uint64
	gen  uint64
	name string // the file's name when it was opened (SetSlowFsync)
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
)

func newFile(l *FS, fd int, name string) (*file, syscall.Errno) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	return &file{lfs: l, fd: fd, ino: st.Ino, gen: l.currentGen(), name: name}, 0
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lfs.read(f, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return f.lfs.write(f, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno { return f.lfs.fsync(f) }

// Flush (close) makes nothing durable.
func (f *file) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *file) Release(ctx context.Context) syscall.Errno {
	return fs.ToErrno(syscall.Close(f.fd))
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	f.lfs.fixAttr(&out.Attr)
	return 0
}

// Allocate grows the visible size like a write of zeros would; with
// FALLOC_FL_KEEP_SIZE it only checks for space.
func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	const keepSize = 0x01
	if mode&^keepSize != 0 {
		return syscall.EOPNOTSUPP
	}
	cur, ok := f.lfs.size(f.ino)
	if !ok {
		var st syscall.Stat_t
		if err := syscall.Fstat(f.fd, &st); err != nil {
			return fs.ToErrno(err)
		}
		cur = st.Size
	}
	end := int64(off + size)
	if mode&keepSize != 0 || end <= cur {
		f.lfs.mu.Lock()
		defer f.lfs.mu.Unlock()
		if f.lfs.noSpace {
			return syscall.ENOSPC
		}
		return 0
	}
	return f.lfs.truncate(f.ino, f.fd, f.gen, end)
}
