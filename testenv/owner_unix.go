//go:build unix

package testenv

import (
	"io/fs"
	"os"
	"syscall"
)

// ownedByUs reports whether fi is of a file owned by the process's user.
func ownedByUs(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
