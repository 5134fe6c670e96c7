// Package store defines the small object-store interface that the archive
// format is written to, and the errors callers branch on.
//
// Implementations live in sub-packages (filestore for a local directory,
// s3store for S3 and S3-compatible servers); storetest holds the one
// conformance suite every implementation must pass, and storeurl opens a
// store from a --store URL.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Implementations wrap them (errors.Is works) and add the
// key and backend context to the message.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists: a Put with IfNotExists found the key already present.
	// This is the fencing signal: somebody else committed first.
	ErrExists = errors.New("object already exists")
	// ErrPermanent marks errors that retrying cannot fix (access denied, no
	// such bucket, invalid credentials). Callers should fail fast on it.
	ErrPermanent = errors.New("permanent store error")
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// PutOptions tune a Put. The zero value is an unconditional overwrite.
type PutOptions struct {
	// IfNotExists makes the Put atomic create-if-absent: if Key already
	// exists the Put fails with ErrExists and the existing object is
	// untouched. Two concurrent Puts of the same key with IfNotExists: at
	// most one succeeds. (S3: If-None-Match: *; directory: link(2).)
	IfNotExists bool
}

// ListOptions select the keys a List returns.
type ListOptions struct {
	// Prefix restricts the listing to keys that start with it ("" = all).
	Prefix string
	// StartAfter skips every key <= StartAfter (byte order). "" = from the start.
	StartAfter string
	// Delimiter, when non-empty (only "/" is supported), rolls keys that
	// contain it after Prefix up into one CommonPrefix entry, as S3 does.
	Delimiter string
	// Limit stops the listing after this many entries (keys plus common
	// prefixes). 0 means no limit.
	Limit int
}

// ListEntry is one listed key, or (with a Delimiter) a common prefix.
type ListEntry struct {
	// Key is the full object key, or the common prefix ending with the
	// delimiter when IsPrefix is true.
	Key      string
	IsPrefix bool
	// Size is the object size; 0 for a prefix.
	Size int64
}

// Store is the object store the archive lives in. Keys are
// slash-separated relative paths without a leading slash, made of the
// characters [A-Za-z0-9._=/-]; implementations reject others with an
// error wrapping ErrInvalidKey (see ValidateKey). Every method is safe for
// concurrent use.
type Store interface {
	// Put stores size bytes read from r under key. The object becomes
	// visible atomically: a reader sees either the old object (or none) or
	// the complete new one, never a prefix. Large bodies may be uploaded
	// in parts. If r yields a different number of bytes than size, Put fails
	// and stores nothing.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error
	// GetRange returns length bytes of key starting at byte off. A length
	// < 0 reads to the end of the object. Reading past the end returns
	// what exists (possibly fewer bytes); off beyond the end is an error.
	// The caller closes the reader.
	GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error)
	// Stat returns the object's size and modification time, or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for the keys selected by opts in ascending byte order
	// of key. It stops at the first error fn returns and returns it.
	List(ctx context.Context, opts ListOptions, fn func(ListEntry) error) error
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String describes the store for messages (URL without credentials).
	String() string
}

// Stager is implemented by stores that can take an object's bytes while
// they are produced, before its key is known, and publish them under a key
// at the end: the archiver streams a large segment into one instead of
// holding it in memory until it is sealed (the segment's key names its last
// offset). A directory links a temporary file to the key; S3 copies a
// temporary object to it inside the store, so its Publish costs a copy.
// It is optional; a store without it gets whole objects by Put.
type Stager interface {
	// Stage starts an object to be published under a key beginning with
	// prefix (a hint: a directory store creates its temporary file there,
	// so that publishing is a link in the same directory).
	Stage(ctx context.Context, prefix string) (Staged, error)
}

// KeyedStager is implemented by stores that can take an object's bytes
// while they are produced when its key is known before the first byte (an
// object store's multipart upload goes to its key from the start). The
// packed layout's flush object of one busy partition (its key names a seq
// the writer reserves when staging starts) is streamed through it. The
// Staged it returns publishes only under key. It is optional; where a
// store implements both, the key known from the start is staged through
// StageAt (no copy).
type KeyedStager interface {
	StageAt(ctx context.Context, key string) (Staged, error)
}

// UploadSweeper is implemented by stores where an interrupted write leaves
// something no listing shows but which takes space: S3's incomplete
// multipart uploads (a killed writer's staged objects and large PUTs).
// SweepUploads removes those under prefix started before cutoff and
// returns how many it removed.
type UploadSweeper interface {
	SweepUploads(ctx context.Context, prefix string, cutoff time.Time) (int, error)
}

// PartBufferReporter is implemented by stores that hold staged objects'
// parts in buffers outside the Go heap (s3store), which Go's memory
// statistics do not show: the archiver exports their counts as metrics.
type PartBufferReporter interface {
	PartBuffers() PartBufferStats
}

// PartBufferStats are a store's part buffers: all of Size bytes, a part
// of up to Part bytes and room past it for a reservation
// (ReservingStaged), whose pages take memory only once written; InUse
// filling or uploading, Resident idle and holding their memory, Released
// idle with their memory returned to the kernel. Abandoned counts the
// buffers given up after a failed upload, or by an Abort while a writer
// had a reservation in them (ReservingStaged): never reused, unmapped
// later.
type PartBufferStats struct {
	Size, Part                int
	InUse, Resident, Released int
	Abandoned                 int
}

// Staged is an object being written. Write appends to it; Publish makes
// what was written the object at key, atomically and durably, as Put does;
// Abort discards it. After Publish (whatever its outcome) or Abort, the
// staged bytes are gone: a failed Publish must be redone from the data.
// It is safe for concurrent use: Abort may be called while another
// goroutine writes or publishes, which then fails.
type Staged interface {
	io.Writer
	// Size is the number of bytes written so far.
	Size() int64
	Publish(ctx context.Context, key string, opts PutOptions) error
	// Abort discards the staged bytes; it does nothing after Publish.
	Abort()
}

// BuffersWriter is a Staged that takes several buffers in one call, as
// consecutive Writes of each (filestore: one writev(2) for all of them): a
// streamed segment's blocks that queued while the previous ones were
// written go to the disk together. An error is as a Write's: the object is
// lost.
type BuffersWriter interface {
	Staged
	WriteBuffers(bufs [][]byte) error
}

// ReservingStaged is a Staged that lends the writer its own buffer: the
// writer encodes the object's next bytes where the store will send them
// from, instead of writing them from a buffer of its own (which the store
// would copy). s3store's staged objects implement it: a streamed
// uncompressed segment's blocks are encoded straight into the multipart
// part buffers.
//
// Reserve returns a buffer of n bytes (n ≤ MaxReserve), the object's next
// n bytes, not yet part of it. The writer fills what it needs of it and
// ends the reservation with Commit(k), which appends its first k bytes (k
// ≤ n; 0 appends nothing) to the object. PartLeft is how many more bytes
// the store's current part takes: the commit that reaches it ends the part
// (past it by what that commit brings), so a writer that ends its
// reservation soon after that point keeps the parts, and the memory each
// holds, at about the store's part size. While a reservation is out, only
// Commit, PartLeft, Size and Abort may be called. An Abort during a
// reservation does not recycle its buffer (the Commit then fails with
// ErrAborted): a write racing the Abort harms no other object. The buffer
// may be unmapped minutes later (s3store: bufpool.AbandonDelay), so a
// writer that sees the abort writes nothing more into it.
type ReservingStaged interface {
	Staged
	Reserve(n int) ([]byte, error)
	Commit(k int) error
	MaxReserve() int
	PartLeft() int
}

// ErrAborted: a Staged was written or published after Abort.
var ErrAborted = errors.New("staged object aborted")

// Get reads the whole object at key into memory. Use it for small objects
// (manifests, indexes, catalog captures) only.
func Get(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, err := s.GetRange(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return b, nil
}
