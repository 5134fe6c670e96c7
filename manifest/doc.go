// Package manifest is the kbackup archive format: object keys, the segment
// encoding (record blocks, block index, gap table, footer), commit entries
// (the per-partition manifest), the time index, catalog captures and the
// archive root marker. docs/FORMAT.md is its specification; this package is
// the reference implementation.
//
// The package is pure format code over the store.Store interface: it imports
// no Kafka client and no cloud SDK. Encoders are canonical: every decoder
// accepts only the bytes its encoder would produce for the decoded value, so
// decode followed by encode reproduces the input exactly.
package manifest

import (
	"errors"
	"fmt"
)

// FormatVersion is the archive format version this package writes and the
// only one it reads.
const FormatVersion = 1

// ErrCorrupt marks data that does not decode: a bad magic number, a checksum
// mismatch, a truncated object, a value out of range. Errors wrapping it name
// the object.
var ErrCorrupt = errors.New("corrupt archive data")

// ErrUnsupportedVersion marks an object written by a format version this
// reader does not know.
var ErrUnsupportedVersion = errors.New("unsupported archive format version")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func versionErr(what string, v int) error {
	return fmt.Errorf("%w: %s has format version %d, this kbackup reads version %d (upgrade kbackup)",
		ErrUnsupportedVersion, what, v, FormatVersion)
}
