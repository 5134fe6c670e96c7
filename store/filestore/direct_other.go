//go:build !linux

package filestore

import (
	"errors"
	"os"
)

// setDirect: direct writes are used on Linux only; elsewhere files are
// written through the page cache.
func setDirect(*os.File, bool) bool { return false }

// pread is not used where setDirect refuses every file.
func pread(*os.File, []byte, int64) (int, error) {
	return 0, errors.New("direct reads are Linux only")
}
