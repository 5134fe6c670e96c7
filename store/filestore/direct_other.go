//go:build !linux

package filestore

import "os"

// setDirect: direct writes are used on Linux only; elsewhere files are
// written through the page cache.
func setDirect(*os.File, bool) bool { return false }
