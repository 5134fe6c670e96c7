//go:build !linux

package bufpool

// alloc: outside Linux the buffers are ordinary heap slices.
func alloc(size int) []byte { return make([]byte, size) }

// release: the collector frees nothing in use; an idle heap buffer stays.
func release([]byte) {}

// abandon: the collector frees the buffer once nothing reads it.
func abandon([]byte) {}
