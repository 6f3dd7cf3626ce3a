package engine

import "syscall"

// checkDisk refuses writes below the free-space watermark. On ext4 and xfs
// a full disk can kill Badger with SIGBUS (its WAL and value log are sparse
// mmapped files), so the engine stops before the disk is full. Above it,
// ReserveBytes more are kept for the fleet's writes: below
// MinFreeBytes+ReserveBytes the user tables stop growing (PutKey answers
// ErrDiskReserved) while dispatch, the warehouse, drivers, phones and the
// devices table go on writing down to MinFreeBytes. A token that fills
// user tables thus never stops dispatch. MinFreeBytes 0 checks nothing.
func (e *Engine) checkDisk() {
	if e.cfg.MinFreeBytes <= 0 || e.cfg.DataDir == "" {
		return
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(e.cfg.DataDir, &st); err != nil {
		return // cannot tell: keep the last verdict
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	tight := free < e.cfg.MinFreeBytes+e.cfg.ReserveBytes
	if tight != e.diskTight.Load() {
		e.diskTight.Store(tight)
		if tight {
			e.log.Warn("free disk space in the fleet's reserve: refusing writes that grow user tables", "free_bytes", free,
				"min_free_bytes", e.cfg.MinFreeBytes, "reserve_bytes", e.cfg.ReserveBytes)
		} else {
			e.log.Info("free disk space back above the fleet's reserve: user tables may grow", "free_bytes", free)
		}
	}
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
