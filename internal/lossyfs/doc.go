// Package lossyfs is a FUSE filesystem for tests that forgets, the way a
// machine forgets at a power cut.
//
// It is a passthrough over a backing directory. Every data write — write()
// and the writeback of shared writable mmap pages — and every change of a
// file's size (ftruncate, O_TRUNC, fallocate) is kept in memory, per file,
// until that file is fsynced (fsync, fdatasync, or msync, which reaches FUSE
// as an FSYNC with the datasync flag). Only then is it written through to the
// backing file, which is fsynced in turn. Crash drops every unsynced page and
// size change, so each file returns to its last synced content and size.
//
// Metadata operations (create, unlink, rename, mkdir, link, chmod, times)
// are applied to the backing directory at once and survive Crash: the
// filesystem is lossy for data only. That is weaker than a real power cut,
// where an unsynced directory can lose a new name, and it is stated here so
// that no test relies on it. sync() and syncfs() never reach a FUSE server,
// so data made durable only that way is lost at Crash, as it may be on a
// real machine.
//
// Faults on command: ENOSPC on data writes and on growing a file
// (SetNoSpace), EIO on fsync (SetFsyncEIO; the failed file's unsynced data is
// dropped, as Linux marks the pages clean after a failed writeback, so a
// later fsync succeeds although the data never reached the disk), and a low
// free-space figure from statfs (SetFreeBytes), so a free-disk watermark can
// be exercised.
//
// Rules for the caller, learned the hard way:
//   - A Go process must not fault on mmap pages served by its own FUSE
//     server: run the program that mmaps files on the mount (Badger, the
//     routehound binary) in a child process. Plain read/write syscalls from
//     the serving process are fine.
//   - Kill the child and wait until it is reaped before Crash: its last
//     mmap pages are written back while it exits.
//   - The /dev/fuse descriptor is close-on-exec, so a child never keeps a
//     dead mount alive. Mount detaches mounts left by a killed earlier test
//     process; Close unmounts (lazily and by aborting the connection if a
//     file is still open), and is safe to call twice.
//
// Mounting needs /dev/fuse and root (the mount is direct, no fusermount).
package lossyfs
