//go:build !linux

package filestore

import "os"

// writev writes bufs in order (direct writes, its only caller, are Linux
// only).
func writev(f *os.File, bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		k, err := f.Write(b)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
