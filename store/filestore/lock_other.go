//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package filestore

import "os"

// lockTemp does nothing where flock is not available: temporary files are
// judged by their age alone.
func lockTemp(*os.File) {}

// removeIfUnused removes the temporary file at path.
func removeIfUnused(path string) bool { return os.Remove(path) == nil }
