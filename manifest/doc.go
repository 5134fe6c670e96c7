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

// FormatVersion is the newest archive format version: the root marker's
// version of an archive with packed flush objects and claims (docs/FORMAT.md
// §12). This package reads archives of versions
// MinFormatVersion..FormatVersion.
const FormatVersion = PackedFormatVersion

// Root marker versions: ExpiryFormatVersion once an archive has an
// archive-start marker, PackedFormatVersion once it has a claim.
const (
	ExpiryFormatVersion = 2
	PackedFormatVersion = 3
)

// MinFormatVersion is the oldest archive format version this package reads.
// A version-1 archive continues as version 2 without a rewrite: the first
// archive-start marker upgrades its root marker (UpgradeRoot).
const MinFormatVersion = 1

// objectVersion is the version field of the objects version 1 defined
// (segments, indexes, footers, commit entries, topic markers, catalog
// captures): format version 2 adds objects and keeps these as they are.
const objectVersion = 1

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

// versionErr reports an object of an unknown version; reads says which
// version(s) this kbackup reads of it.
func versionErr(what string, v int, reads string) error {
	return fmt.Errorf("%w: %s has format version %d, this kbackup reads %s (upgrade kbackup)",
		ErrUnsupportedVersion, what, v, reads)
}

// objectVersionText is what versionErr says of the version-1 objects.
var objectVersionText = fmt.Sprintf("version %d", objectVersion)
