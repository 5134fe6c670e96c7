package bufpool

import (
	"syscall"
	"time"
)

// alloc maps size bytes of anonymous memory, or allocates them on the heap
// if the kernel refuses the mapping.
func alloc(size int) []byte {
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, size)
	}
	return b
}

// release gives b's pages back to the kernel: b stays mapped and reads as
// zeros until written again. On a heap slice (alloc's fallback) it fails
// (not page-aligned) or zeroes whole pages of an idle buffer, whose
// contents nobody reads: harmless either way.
func release(b []byte) {
	_ = syscall.Madvise(b, syscall.MADV_DONTNEED)
}

// abandon releases b's pages now and unmaps it after AbandonDelay (a heap
// slice, alloc's fallback, is left to the collector).
func abandon(b []byte) {
	release(b)
	time.AfterFunc(AbandonDelay, func() { _ = syscall.Munmap(b) })
}
