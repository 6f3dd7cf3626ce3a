package lossyfs

import (
	"syscall"
)

const pageSize = 4096

// dirty is the unsynced state of one file (one backing inode): its pages
// written since the last fsync and its size as the programs see it.
//
// Invariant: the visible content of byte i is pages[i/pageSize][i%pageSize]
// when that page is present, else the backing file's byte when i < keep,
// else zero; bytes at or past size do not exist.
type dirty struct {
	size  int64                     // visible size
	keep  int64                     // backing bytes below keep are still visible; above, a truncate cut them
	pages map[int64]*[pageSize]byte // by page index
}

func newDirty(backingSize int64) *dirty {
	return &dirty{size: backingSize, keep: backingSize, pages: map[int64]*[pageSize]byte{}}
}

// bytes is the memory the unsynced pages hold.
func (d *dirty) bytes() int64 { return int64(len(d.pages)) * pageSize }

// page returns page idx, creating it from the visible content.
func (d *dirty) page(fd int, idx int64) (*[pageSize]byte, error) {
	if p, ok := d.pages[idx]; ok {
		return p, nil
	}
	p := new([pageSize]byte)
	start := idx * pageSize
	if start < d.keep {
		n := min(int64(pageSize), d.keep-start)
		if err := preadFull(fd, p[:n], start); err != nil {
			return nil, err
		}
	}
	d.pages[idx] = p
	return p, nil
}

// write puts data at off.
func (d *dirty) write(fd int, data []byte, off int64) error {
	for len(data) > 0 {
		idx, in := off/pageSize, off%pageSize
		p, err := d.page(fd, idx)
		if err != nil {
			return err
		}
		n := copy(p[in:], data)
		data, off = data[n:], off+int64(n)
		d.size = max(d.size, off)
	}
	return nil
}

// truncate sets the visible size: bytes past it are gone, and come back as
// zeros if the file grows again.
func (d *dirty) truncate(size int64) {
	if size < d.size {
		for idx, p := range d.pages {
			start := idx * pageSize
			switch {
			case start >= size:
				delete(d.pages, idx)
			case start+pageSize > size:
				clear(p[size-start:])
			}
		}
		d.keep = min(d.keep, size)
	}
	d.size = size
}

// read fills buf from off with the visible content and returns how many
// bytes exist there.
func (d *dirty) read(fd int, buf []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, nil
	}
	buf = buf[:min(int64(len(buf)), d.size-off)]
	m := int64(0)
	if off < d.keep {
		m = min(int64(len(buf)), d.keep-off)
		if err := preadFull(fd, buf[:m], off); err != nil {
			return 0, err
		}
	}
	clear(buf[m:])
	for pos := off; pos < off+int64(len(buf)); {
		idx, in := pos/pageSize, pos%pageSize
		n := min(int64(pageSize)-in, off+int64(len(buf))-pos)
		if p, ok := d.pages[idx]; ok {
			copy(buf[pos-off:pos-off+n], p[in:in+n])
		}
		pos += n
	}
	return len(buf), nil
}

// flush writes the state through to the backing file and fsyncs it.
func (d *dirty) flush(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if d.keep < st.Size {
		if err := syscall.Ftruncate(fd, d.keep); err != nil {
			return err
		}
	}
	for idx, p := range d.pages {
		start := idx * pageSize
		if start >= d.size {
			continue
		}
		end := min(start+pageSize, d.size)
		if err := pwriteFull(fd, p[:end-start], start); err != nil {
			return err
		}
	}
	if err := syscall.Ftruncate(fd, d.size); err != nil {
		return err
	}
	return syscall.Fsync(fd)
}

// preadFull reads len(b) bytes at off; past the backing file's end it
// fills zeros.
func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := syscall.Pread(fd, b, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			clear(b)
			return nil
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := syscall.Pwrite(fd, b, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
