package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kbackup/kbackup/store"
)

// maxStagePart caps a staged object's part size (PartSize, if smaller, is
// used): a staged object holds at most two parts in memory, the one being
// uploaded and the one filling, and one while the store has many in use
// (stagePipelineBuffers). 5 MiB is S3's minimum part size: a staged
// object exists to hold little. The part buffers come from a pool of the
// Store's (internal/bufpool), outside the Go heap.
const maxStagePart = 5 << 20

// stageReserveRoom is the room a part buffer has past the part's length
// for a reservation (store.ReservingStaged): a part ends at the first
// reservation's end past the part length, so a block of up to this many
// bytes encoded in place is never split across two buffers. It holds a
// streamed uncompressed segment's block at the default block size (1 MiB
// and room for the record that closes it, and its header); a larger one
// is written through Write. Only the pages written are ever resident.
const stageReserveRoom = 2 << 20

// The staged parts' pool keeps stageKeepIdle idle buffers resident (one
// staged object's), and the others until idle for stageIdleTime: a busy
// archiver reuses its buffers without faulting their pages in again, an
// idle one gives the memory back.
const (
	stageKeepIdle = 2
	stageIdleTime = 30 * time.Second
)

// stagePipelineBuffers bounds pipelining: a staged object fills its next
// part while the previous one uploads only while fewer than this many
// part buffers of the store are in use. Beyond, Write waits for each
// part's upload and fills the same buffer again, so each staged object
// holds one buffer: an archiver catching up on several busy partitions
// streams a flush object per partition and starts the next one while the
// last parts of the previous one upload, which pipelined took up to twelve
// buffers (60 MiB) for three partitions.
const stagePipelineBuffers = 4

var (
	_ store.KeyedStager     = (*Store)(nil)
	_ store.ReservingStaged = (*staged)(nil)
)

// errReserved: a staged object was written, reserved in or published
// while a reservation was out.
var errReserved = errors.New("a reservation is out")

// StageAt implements store.KeyedStager with a multipart upload to key,
// created when the first part is full: each full part is uploaded in the
// background while the next one fills, so the writer is slowed down only
// when it writes faster than the store takes the parts (or, while many
// part buffers of the store are in use, waits for each part's upload:
// stagePipelineBuffers). Publish uploads
// the rest as the last part and completes the upload (with If-None-Match
// for IfNotExists); an object that never filled a part is written with
// one PutObject instead. Abort cancels the uploads and aborts the
// multipart upload. Once Publish has begun it owns the object: an Abort
// then does nothing, and Publish reports the outcome. A process killed
// before Publish or Abort leaves an incomplete multipart upload, invisible
// to readers and listings, which the bucket's lifecycle rule for
// incomplete multipart uploads removes (docs/OPERATIONS.md).
//
// Write is for one goroutine at a time; Size and Abort may be called from
// others.
func (s *Store) StageAt(ctx context.Context, key string) (store.Staged, error) {
	if err := store.ValidateKey(key); err != nil {
		return nil, err
	}
	return s.stage(ctx, key, false)
}

func (s *Store) stage(ctx context.Context, key string, temp bool) (*staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stage %s: %w", s.url(key), err)
	}
	upCtx, cancel := context.WithCancel(ctx)
	st := &staged{s: s, key: key, temp: temp, ctx: upCtx, cancel: cancel,
		parts: make(chan []byte), quit: make(chan struct{}), upDone: make(chan struct{}), reserved: -1}
	st.uploaded.L = &st.mu
	return st, nil
}

// StagingPrefix is where Stage assembles the objects it stages before
// they are copied to their keys (docs/FORMAT.md: no reader lists it).
const StagingPrefix = "_staging/"

// staleStaging is the age from which an object under StagingPrefix is a
// dead writer's: a live one exists only between the completion of its
// upload and its copy (seconds).
var staleStaging = time.Hour

var _ store.Stager = (*Store)(nil)

// Stage implements store.Stager for objects whose key is known only once
// they are written (the segments layout's segment key names its last
// offset): it stages like StageAt, the multipart upload (created once a
// part is full) going to a new temporary key under StagingPrefix; Publish
// completes it there, copies it to its key in the store (a multipart
// upload of UploadPartCopy parts of up to 5 GiB, completed with
// If-None-Match for IfNotExists: MinIO ignores If-None-Match on
// CopyObject) and deletes the temporary object. An object that never
// filled a part is written to its key with one PutObject, as StageAt
// does: small objects cost no copy. prefix (a hint for stores that stage
// beside the key) is not used.
//
// A process killed before Publish leaves an incomplete multipart upload
// (the lifecycle rule for those removes it); one killed between the
// upload's completion and the deletion leaves a temporary object: the
// first Stage of a Store, and then one an hour at most, deletes in the
// background those (and the incomplete uploads under StagingPrefix) older
// than an hour, and a lifecycle rule expiring StagingPrefix removes them
// too (docs/OPERATIONS.md).
func (s *Store) Stage(ctx context.Context, prefix string) (store.Staged, error) {
	if now := time.Now(); s.sweepDue(now) {
		go s.sweepStaged(now.Add(-staleStaging))
	}
	var nonce [8]byte
	rand.Read(nonce[:]) //nolint:errcheck // never fails (crypto/rand)
	key := fmt.Sprintf("%s%d-%s", StagingPrefix, time.Now().UnixMilli(), hex.EncodeToString(nonce[:]))
	return s.stage(ctx, key, true)
}

// sweepDue reports whether a sweep of StagingPrefix is due at now: at the
// first Stage of the Store, then at most every staleStaging (a long-running
// archiver also sweeps what a writer killed after it started left).
func (s *Store) sweepDue(now time.Time) bool {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if !s.sweptAt.IsZero() && now.Sub(s.sweptAt) < staleStaging {
		return false
	}
	s.sweptAt = now
	return true
}

// sweepStaged deletes the temporary objects of Stage modified before
// cutoff (a killed writer's) and aborts the multipart uploads to them
// started before it (where the server lists uploads by prefix; MinIO
// lists them only per key). It gives up quietly: a later process sweeps
// again, and the lifecycle rule is the backstop.
func (s *Store) sweepStaged(cutoff time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, _ = s.SweepStaged(ctx, cutoff)
	_, _ = s.SweepUploads(ctx, StagingPrefix, cutoff)
}

// SweepStaged deletes the objects under StagingPrefix last modified
// before cutoff and returns how many it deleted.
func (s *Store) SweepStaged(ctx context.Context, cutoff time.Time) (int, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.objectKey(StagingPrefix))}
	n := 0
	for {
		out, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			return n, s.wrap("list", StagingPrefix+"*", err)
		}
		for _, o := range out.Contents {
			if o.LastModified == nil || !o.LastModified.Before(cutoff) {
				continue
			}
			if err := s.Delete(ctx, strings.TrimPrefix(aws.ToString(o.Key), s.prefix)); err != nil {
				return n, err
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// staged is a store.Staged on a multipart upload.
type staged struct {
	s      *Store
	key    string          // the upload's key: Publish's, or a temporary one (temp)
	temp   bool            // staged by Stage: Publish copies the object to its key
	ctx    context.Context // the uploads'; canceled by Abort
	cancel context.CancelFunc

	// The part buffers come from s.stageParts and go back to it once
	// uploaded (the uploader), written (Publish) or dropped (Abort); one
	// whose upload failed is abandoned (bufpool.Pool.Abandon).
	parts  chan []byte   // full parts to the uploader; closed by Publish
	quit   chan struct{} // closed by Abort
	upDone chan struct{} // closed when the uploader returns

	mu       sync.Mutex
	uploaded sync.Cond // on mu: the uploader finished a part, or the state changed
	handed   int       // parts handed to the uploader
	finished int       // parts the uploader is done with (uploaded, failed or drained)
	state    int       // stageOpen, stagePublished or stageAborted
	fill     []byte
	size     int64
	reserved int   // the reservation out (Reserve): its length, else -1
	started  bool  // the uploader runs
	upErr    error // the uploader's first error: the object is lost

	// the uploader's, read by Publish after upDone
	uploadID *string
	done     []types.CompletedPart
}

const (
	stageOpen = iota
	stagePublished
	stageAborted
)

func (st *staged) stateErr() error {
	switch {
	case st.state == stageAborted:
		return fmt.Errorf("put %s: %w", st.s.url(st.key), store.ErrAborted)
	case st.state == stagePublished:
		return fmt.Errorf("put %s: staged object already published", st.s.url(st.key))
	case st.upErr != nil:
		return st.upErr
	}
	return nil
}

func (st *staged) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.reserved >= 0 {
		return 0, fmt.Errorf("put %s: write: %w", st.s.url(st.key), errReserved)
	}
	n := 0
	for len(p) > 0 {
		if err := st.stateErr(); err != nil {
			return n, err
		}
		if st.fill == nil {
			st.fill = st.s.stageParts.Get()[:0]
		}
		k := min(len(p), st.s.stagePart-len(st.fill))
		st.fill = append(st.fill, p[:k]...)
		p, n, st.size = p[k:], n+k, st.size+int64(k)
		if len(st.fill) < st.s.stagePart {
			continue
		}
		if err := st.handOver(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// handOver hands the full part being filled to the uploader (starting
// it), with st.mu held; it releases the lock while it waits, so Abort and
// Size go on. While many part buffers of the store are in use it waits
// for the part's upload (stagePipelineBuffers).
func (st *staged) handOver() error {
	full := st.fill
	st.fill = nil
	if !st.started {
		st.started = true
		go st.upload()
	}
	st.mu.Unlock()
	handed := false
	select {
	case st.parts <- full:
		handed = true
	case <-st.quit:
		st.s.stageParts.Put(full)
	}
	st.mu.Lock()
	if !handed {
		return st.stateErr()
	}
	st.handed++
	if st.s.stageParts.InUse() >= stagePipelineBuffers {
		// Many parts in use: wait for this one's upload, whose buffer
		// then fills again (the pool hands out the buffer put back last).
		for st.finished < st.handed && st.state == stageOpen {
			st.uploaded.Wait()
		}
		return st.stateErr()
	}
	return nil
}

// MaxReserve implements store.ReservingStaged: the room of a part buffer
// past the part length.
func (st *staged) MaxReserve() int { return st.s.stageParts.Size() - st.s.stagePart }

// Reserve implements store.ReservingStaged: the room is in the part
// being filled, which is handed to the uploader at the Commit that takes
// it to the part length or past it (by up to MaxReserve bytes).
func (st *staged) Reserve(n int) ([]byte, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.reserved >= 0 {
		return nil, fmt.Errorf("put %s: reserve: %w", st.s.url(st.key), errReserved)
	}
	if n < 0 || n > st.MaxReserve() {
		return nil, fmt.Errorf("put %s: reserve %d bytes: at most %d", st.s.url(st.key), n, st.MaxReserve())
	}
	if err := st.stateErr(); err != nil {
		return nil, err
	}
	if st.fill == nil {
		st.fill = st.s.stageParts.Get()[:0]
	}
	st.reserved = n
	end := len(st.fill) + n // len(fill) < stagePart: a full part was handed over
	return st.fill[len(st.fill):end:end], nil
}

// PartLeft implements store.ReservingStaged.
func (st *staged) PartLeft() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.s.stagePart - len(st.fill)
}

// Commit implements store.ReservingStaged.
func (st *staged) Commit(k int) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.reserved
	if n < 0 {
		return fmt.Errorf("put %s: commit: no reservation is out", st.s.url(st.key))
	}
	st.reserved = -1
	if err := st.stateErr(); err != nil {
		return err // aborted (Abort gave the buffer up) or failed
	}
	if k < 0 || k > n {
		return fmt.Errorf("put %s: commit %d bytes of a reservation of %d", st.s.url(st.key), k, n)
	}
	st.fill = st.fill[:len(st.fill)+k]
	st.size += int64(k)
	if len(st.fill) < st.s.stagePart {
		return nil
	}
	return st.handOver()
}

func (st *staged) Size() int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.size
}

// upload creates the multipart upload and uploads the parts handed to it,
// in order, until Publish closes parts (it leaves the upload to Publish)
// or Abort closes quit (it aborts the upload). After an error it only
// drains the parts.
func (st *staged) upload() {
	defer close(st.upDone)
	var failed error
	for num := int32(1); ; {
		var buf []byte
		select {
		case b, ok := <-st.parts:
			if !ok {
				if failed != nil && st.uploadID != nil {
					_ = st.s.abortUpload(st.ctx, st.key, st.uploadID, failed)
				}
				return
			}
			buf = b
		case <-st.quit:
			if st.uploadID != nil {
				_ = st.s.abortUpload(st.ctx, st.key, st.uploadID, store.ErrAborted)
			}
			return
		}
		if failed == nil {
			failed = st.uploadOne(num, buf)
			num++
			if failed != nil {
				st.mu.Lock()
				st.upErr = failed
				st.mu.Unlock()
				// A request cut off may still be read by the HTTP
				// transport: this buffer is never reused.
				st.s.stageParts.Abandon(buf)
				st.partDone()
				continue
			}
		}
		st.s.stageParts.Put(buf)
		st.partDone()
	}
}

// partDone counts a part the uploader is done with and wakes a Write
// waiting for it.
func (st *staged) partDone() {
	st.mu.Lock()
	st.finished++
	st.uploaded.Broadcast()
	st.mu.Unlock()
}

// uploadOne uploads part num (creating the upload first for part 1). The
// creation is not canceled by Abort: an upload created whose reply was
// cut off would be left behind unknown, where one whose id is known is
// aborted.
func (st *staged) uploadOne(num int32, buf []byte) error {
	if st.uploadID == nil {
		id, err := st.s.createUpload(context.WithoutCancel(st.ctx), st.key)
		if err != nil {
			return err
		}
		st.uploadID = id
	}
	part, err := st.s.uploadPart(st.ctx, st.key, st.uploadID, num, buf)
	if err != nil {
		return err
	}
	st.done = append(st.done, part)
	return nil
}

func (st *staged) Publish(ctx context.Context, key string, opts store.PutOptions) error {
	if err := store.ValidateKey(key); err != nil {
		st.Abort()
		return err
	}
	if key != st.key && !st.temp {
		st.Abort()
		return fmt.Errorf("put %s: the object was staged for %s", st.s.url(key), st.s.url(st.key))
	}
	st.mu.Lock()
	if st.state != stageOpen {
		err := st.stateErr()
		st.mu.Unlock()
		return err
	}
	if st.reserved >= 0 {
		st.mu.Unlock()
		st.Abort()
		return fmt.Errorf("put %s: publish: %w", st.s.url(key), errReserved)
	}
	st.state = stagePublished
	fill, started := st.fill, st.started
	st.fill = nil
	st.mu.Unlock()
	defer st.cancel()
	if !started {
		// Less than a part: one PutObject.
		err := st.s.putObject(ctx, key, fill, opts)
		if err != nil {
			st.s.stageParts.Abandon(fill) // see upload
		} else {
			st.s.stageParts.Put(fill)
		}
		return err
	}
	if len(fill) > 0 {
		st.parts <- fill // the uploader drains until parts is closed
	} else {
		st.s.stageParts.Put(fill)
	}
	close(st.parts)
	<-st.upDone
	st.mu.Lock()
	upErr := st.upErr
	st.mu.Unlock()
	if upErr != nil {
		return upErr // the uploader aborted the upload
	}
	if st.temp {
		return st.publishCopy(ctx, key, opts)
	}
	if err := st.s.completeUpload(ctx, key, st.uploadID, st.done, opts); err != nil {
		// Fenced (ErrExists), or failed: the upload goes. (If a lost
		// response hid a completion, the abort finds no upload; the
		// caller looks for the object.)
		return st.s.abortUpload(ctx, key, st.uploadID, err)
	}
	return nil
}

// publishCopy publishes an object staged by Stage: it completes the
// upload at the temporary key, copies the object to key and deletes the
// temporary one (whatever the copy's outcome: a lost response may hide a
// copy that landed, which the caller can see at key).
func (st *staged) publishCopy(ctx context.Context, key string, opts store.PutOptions) error {
	if err := st.s.completeUpload(ctx, st.key, st.uploadID, st.done, store.PutOptions{}); err != nil {
		return st.s.abortUpload(ctx, st.key, st.uploadID, err)
	}
	err := st.s.copyObject(ctx, st.key, key, st.size, opts)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_ = st.s.Delete(dctx, st.key) // else swept later (Stage)
	return err
}

func (st *staged) Abort() {
	st.mu.Lock()
	if st.state != stageOpen {
		st.mu.Unlock()
		return
	}
	st.state = stageAborted
	fill, reserved := st.fill, st.reserved >= 0
	st.fill = nil
	st.uploaded.Broadcast()
	st.mu.Unlock()
	if reserved {
		// The writer may still write into its reservation (a sealed
		// segment's writer finishing while another goroutine aborts it):
		// the buffer is never reused.
		st.s.stageParts.Abandon(fill)
	} else {
		st.s.stageParts.Put(fill)
	}
	st.cancel()
	close(st.quit)
}

var _ store.UploadSweeper = (*Store)(nil)

var _ store.PartBufferReporter = (*Store)(nil)

// PartBuffers implements store.PartBufferReporter: the staged objects'
// part buffers (internal/bufpool).
func (s *Store) PartBuffers() store.PartBufferStats {
	st := s.stageParts.Stats()
	return store.PartBufferStats{Size: s.stageParts.Size(), Part: s.stagePart, InUse: st.InUse, Resident: st.Resident,
		Released: st.Released, Abandoned: st.Abandoned}
}

// SweepUploads implements store.UploadSweeper: it lists the incomplete
// multipart uploads under prefix and aborts those initiated before cutoff.
// It needs s3:ListBucketMultipartUploads (and s3:AbortMultipartUpload).
func (s *Store) SweepUploads(ctx context.Context, prefix string, cutoff time.Time) (int, error) {
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(s.objectKey(prefix))}
	n := 0
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, s.wrap("list multipart uploads", prefix, err)
		}
		for _, u := range out.Uploads {
			if u.Initiated == nil || !u.Initiated.Before(cutoff) {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.bucket), Key: u.Key, UploadId: u.UploadId})
			if err != nil {
				if code, _ := errorCode(err); code != "NoSuchUpload" {
					return n, s.wrap("abort multipart upload", strings.TrimPrefix(aws.ToString(u.Key), s.prefix), err)
				}
				continue
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
