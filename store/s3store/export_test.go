package s3store

import "time"

// SetMaxCopyPart makes Stage's copies use parts of at most n bytes until
// the returned function restores the limit (tests that run alone).
func SetMaxCopyPart(n int64) (restore func()) {
	old := maxCopyPart
	maxCopyPart = n
	return func() { maxCopyPart = old }
}

// SetStaleStaging sets the age from which Stage sweeps temporary objects
// until the returned function restores it (tests that run alone).
func SetStaleStaging(d time.Duration) (restore func()) {
	old := staleStaging
	staleStaging = d
	return func() { staleStaging = old }
}

// ErrReserved is errReserved, for tests.
var ErrReserved = errReserved
