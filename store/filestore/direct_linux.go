//go:build linux

package filestore

import (
	"os"

	"golang.org/x/sys/unix"
)

// setDirect turns O_DIRECT on (on true) or off for f's later reads and
// writes (f's own open file description). Turning it on is refused (false)
// unless f is on a local disk file system known to take direct I/O of
// aligned buffers (ext2/3/4, XFS, Btrfs, F2FS): elsewhere (tmpfs, overlay,
// NFS and other network file systems, where a direct write is a
// synchronous round trip) the page cache stays.
func setDirect(f *os.File, on bool) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	cerr := rc.Control(func(fd uintptr) {
		if on {
			var st unix.Statfs_t
			if unix.Fstatfs(int(fd), &st) != nil {
				return
			}
			switch uint32(st.Type) {
			case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.F2FS_SUPER_MAGIC:
			default:
				return
			}
		}
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			return
		}
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, err = unix.FcntlInt(fd, unix.F_SETFL, flags)
		ok = err == nil
	})
	return cerr == nil && ok
}

// pread is one pread(2) of f into b at off (os.File.ReadAt would go on
// after a short read, at an unaligned offset).
func pread(f *os.File, b []byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Pread(int(fd), b, off)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}
