//go:build linux

package filestore

import (
	"os"
	"runtime"
	"syscall"
	"unsafe" // go:linkname
)

// A direct write of a megabyte or more keeps its thread in the kernel
// until the disk has the bytes. Through syscall.Syscall the goroutine's P
// stays with it until sysmon takes it back, which can be up to 10 ms
// later when the scheduler looks idle: a --compression none archiver on 2
// cores spent about as long in such writes (4 partitions' segments
// streaming at once) as its whole run, and the goroutines decoding fetches
// and the loop appending records had one P between them for much of it
// (docs/PERFORMANCE.md, "Blocking writes"). These writes give the P up at
// once instead, as the runtime's own blocking calls do, through
// runtime.entersyscallblock: exported for packages doing this (gVisor
// calls it the same way); a Go release that stops exporting it fails the
// build, not the run.
//
// Smaller writes keep the P: they return within a fraction of a
// millisecond, and a goroutine whose P went to a compressing goroutine
// waits for it when it returns (a zstd archiver was 5-10% slower with every
// write and fsync handing its P off).
const blockingWriteMin = 1 << 20

//go:linkname entersyscallblock runtime.entersyscallblock
func entersyscallblock()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()

// blockingSyscall is syscall.Syscall for a call known to block: the P is
// handed off on entry. It must not grow the stack between
// entersyscallblock and exitsyscall (nosplit), and is not instrumented by
// the race detector, which needs a P (as syscall.RawSyscall6).
//
//go:nosplit
//go:norace
func blockingSyscall(trap, a1, a2, a3 uintptr) (r1 uintptr, err syscall.Errno) {
	entersyscallblock()
	r1, _, err = syscall.RawSyscall6(trap, a1, a2, a3, 0, 0, 0)
	exitsyscall()
	return
}

// writev writes bufs (none empty) to f at its offset with one writev(2),
// retried on EINTR, and returns the bytes written: possibly fewer than
// asked, as write(2).
func writev(f *os.File, bufs [][]byte) (int, error) {
	iov := make([]syscall.Iovec, len(bufs))
	total := 0
	for i, b := range bufs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
		total += len(b)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n uintptr
	var errno syscall.Errno
	if err := rc.Write(func(fd uintptr) bool {
		for {
			if total >= blockingWriteMin {
				n, errno = blockingSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			} else {
				n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			}
			if errno != syscall.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	runtime.KeepAlive(iov) // passed by address: its Base pointers keep bufs alive until here
	if errno != 0 {
		return 0, &os.PathError{Op: "writev", Path: f.Name(), Err: errno}
	}
	return int(n), nil
}
