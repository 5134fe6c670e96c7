//go:build !linux

package lease

// selfProcess: no process identity outside Linux; leases of such holders
// are taken over only when they expire.
func selfProcess() (machine string, start uint64) { return "", 0 }

// processAlive cannot tell outside Linux.
func processAlive(pid int, start uint64) (alive, known bool) { return false, false }
