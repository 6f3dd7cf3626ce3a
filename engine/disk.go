package engine

import "syscall"

// checkDisk refuses writes below the free-space watermark. On ext4 and xfs
// a full disk can kill Badger with SIGBUS (its WAL and value log are sparse
// mmapped files), so the engine stops before the disk is full.
func (e *Engine) checkDisk() {
	if e.cfg.MinFreeBytes <= 0 || e.cfg.DataDir == "" {
		return
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(e.cfg.DataDir, &st); err != nil {
		return // cannot tell: keep the last verdict
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	low := free < e.cfg.MinFreeBytes
	if low != e.diskLow.Load() {
		e.diskLow.Store(low)
		if low {
			e.log.Error("free disk space below the watermark: refusing writes", "free_bytes", free, "min_free_bytes", e.cfg.MinFreeBytes)
		} else {
			e.log.Info("free disk space back above the watermark: accepting writes", "free_bytes", free)
		}
	}
}
