//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package filestore

import (
	"errors"
	"os"
	"syscall"
)

// lockTemp marks f, a temporary file just created, as in use by this
// process: an exclusive flock held on its descriptor until it is closed
// (the kernel drops it when the process dies, kill -9 included). Best
// effort: where the file system refuses locks, the file is judged by its
// age alone.
func lockTemp(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// removeIfUnused removes the temporary file at path unless a live process
// holds its lock (lockTemp). It reports whether the file was removed.
func removeIfUnused(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false // a live writer's
	}
	// Locked by us now (or locks are unsupported here: judged by age).
	return os.Remove(path) == nil
}
