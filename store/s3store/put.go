package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kbackup/kbackup/store"
)

// abortTimeout bounds the abort of a failed multipart upload, which runs
// even when the Put's context is done.
const abortTimeout = 30 * time.Second

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %s: negative size %d", s.url(key), size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.url(key), err)
	}
	if ra, ok := r.(readSeekerAt); ok {
		return s.putAt(ctx, key, ra, size, opts)
	}
	if size > s.partSize {
		return s.putMultipart(ctx, key, r, size, opts)
	}
	// The SDK needs a seekable body to sign it and to resend it on retry.
	buf := make([]byte, size)
	if err := readExact(r, buf, true); err != nil {
		return fmt.Errorf("put %s: %w", s.url(key), err)
	}
	return s.putObject(ctx, key, buf, opts)
}

// readSeekerAt is a body that can be read at any offset: a bytes.Reader,
// or a segment or flush object held in memory (manifest.SegmentReader).
type readSeekerAt interface {
	io.ReaderAt
	io.Seeker
}

// putAt is Put of a body readable at any offset: it is sent as it is (in
// sections of it for a multipart upload) instead of being copied into a
// buffer first, so a Put holds no second copy of what the caller holds.
// The body is read from its current position, and must hold exactly size
// bytes from there.
func (s *Store) putAt(ctx context.Context, key string, r readSeekerAt, size int64, opts store.PutOptions) error {
	base, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("put %s: read body: %w", s.url(key), err)
	}
	var one [1]byte
	if size > 0 {
		if n, err := r.ReadAt(one[:], base+size-1); n != 1 {
			return fmt.Errorf("put %s: body is shorter than the declared size %d: %v", s.url(key), size, err)
		}
	}
	if n, _ := r.ReadAt(one[:], base+size); n > 0 {
		return fmt.Errorf("put %s: body is longer than the declared size %d", s.url(key), size)
	}
	if size <= s.partSize {
		return s.putBody(ctx, key, io.NewSectionReader(r, base, size), size, opts)
	}
	partSize := max(s.partSize, (size+maxParts-1)/maxParts)
	return s.putParts(ctx, key, size, partSize, opts, func(off, n int64) (io.ReadSeeker, error) {
		return io.NewSectionReader(r, base+off, n), nil
	})
}

// putObject writes buf as the object at key with one PutObject.
func (s *Store) putObject(ctx context.Context, key string, buf []byte, opts store.PutOptions) error {
	return s.putBody(ctx, key, bytes.NewReader(buf), int64(len(buf)), opts)
}

// putBody writes the size bytes of body as the object at key with one
// PutObject (the SDK signs it, and resends it on retry, by seeking).
func (s *Store) putBody(ctx context.Context, key string, body io.ReadSeeker, size int64, opts store.PutOptions) error {
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.objectKey(key)),
		Body:          body,
		ContentLength: aws.Int64(size),
	}
	if opts.IfNotExists {
		in.IfNoneMatch = aws.String("*")
	}
	if s.sse != "" {
		in.ServerSideEncryption = types.ServerSideEncryption(s.sse)
		if s.kmsKey != "" {
			in.SSEKMSKeyId = aws.String(s.kmsKey)
		}
	}
	if s.checksums {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	if _, err := s.client.PutObject(ctx, in); err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

// readExact fills buf from r. With last set, r must then be at EOF.
func readExact(r io.Reader, buf []byte, last bool) error {
	n, err := io.ReadFull(r, buf)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("body ended after %d bytes, short of the declared size", n)
		}
		return fmt.Errorf("read body: %w", err)
	}
	if !last {
		return nil
	}
	var one [1]byte
	m, err := io.ReadFull(r, one[:])
	if m > 0 {
		return errors.New("body is longer than the declared size")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read body: %w", err)
	}
	return nil
}

// putMultipart uploads a body larger than PartSize in parts, one at a
// time from one buffer, and aborts the upload on any failure so nothing
// becomes visible.
func (s *Store) putMultipart(ctx context.Context, key string, r io.Reader, size int64, opts store.PutOptions) error {
	partSize := max(s.partSize, (size+maxParts-1)/maxParts)
	buf := make([]byte, min(partSize, size))
	return s.putParts(ctx, key, size, partSize, opts, func(off, n int64) (io.ReadSeeker, error) {
		if err := readExact(r, buf[:n], off+n == size); err != nil {
			return nil, err
		}
		return bytes.NewReader(buf[:n]), nil
	})
}

// putParts uploads size bytes as a multipart upload of parts of partSize,
// each read by part (in order, one at a time), and aborts the upload on any
// failure so nothing becomes visible.
func (s *Store) putParts(ctx context.Context, key string, size, partSize int64, opts store.PutOptions,
	part func(off, n int64) (io.ReadSeeker, error)) (err error) {
	uploadID, err := s.createUpload(ctx, key)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = s.abortUpload(ctx, key, uploadID, err)
		}
	}()
	var parts []types.CompletedPart
	for off, num := int64(0), int32(1); off < size; off, num = off+partSize, num+1 {
		n := min(partSize, size-off)
		body, err := part(off, n)
		if err != nil {
			return fmt.Errorf("put %s: %w", s.url(key), err)
		}
		p, err := s.uploadPartBody(ctx, key, uploadID, num, body, n)
		if err != nil {
			return err
		}
		parts = append(parts, p)
	}
	return s.completeUpload(ctx, key, uploadID, parts, opts)
}

// createUpload starts a multipart upload to key.
func (s *Store) createUpload(ctx context.Context, key string) (*string, error) {
	return s.createUploadOpts(ctx, key, s.checksums)
}

// createUploadOpts starts a multipart upload to key whose parts carry
// checksums if checksums is set.
func (s *Store) createUploadOpts(ctx context.Context, key string, checksums bool) (*string, error) {
	create := &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.objectKey(key)),
	}
	if s.sse != "" {
		create.ServerSideEncryption = types.ServerSideEncryption(s.sse)
		if s.kmsKey != "" {
			create.SSEKMSKeyId = aws.String(s.kmsKey)
		}
	}
	if checksums {
		create.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	out, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return nil, s.wrap("put (create multipart upload)", key, err)
	}
	return out.UploadId, nil
}

// uploadPart uploads part num of an upload from buf.
func (s *Store) uploadPart(ctx context.Context, key string, uploadID *string, num int32, buf []byte) (types.CompletedPart, error) {
	return s.uploadPartBody(ctx, key, uploadID, num, bytes.NewReader(buf), int64(len(buf)))
}

// uploadPartBody uploads the size bytes of body as part num of an upload.
func (s *Store) uploadPartBody(ctx context.Context, key string, uploadID *string, num int32, body io.ReadSeeker, size int64) (types.CompletedPart, error) {
	in := &s3.UploadPartInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.objectKey(key)),
		UploadId:      uploadID,
		PartNumber:    aws.Int32(num),
		Body:          body,
		ContentLength: aws.Int64(size),
	}
	if s.checksums {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	po, err := s.client.UploadPart(ctx, in)
	if err != nil {
		return types.CompletedPart{}, s.wrap(fmt.Sprintf("put (part %d)", num), key, err)
	}
	return types.CompletedPart{PartNumber: aws.Int32(num), ETag: po.ETag, ChecksumCRC32: po.ChecksumCRC32}, nil
}

// completeUpload completes an upload of parts: the object appears (with
// IfNotExists, only if key does not exist: else ErrExists).
func (s *Store) completeUpload(ctx context.Context, key string, uploadID *string, parts []types.CompletedPart, opts store.PutOptions) error {
	complete := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(s.objectKey(key)),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	if opts.IfNotExists {
		complete.IfNoneMatch = aws.String("*")
	}
	if _, err := s.client.CompleteMultipartUpload(ctx, complete); err != nil {
		return s.wrap("put (complete multipart upload)", key, err)
	}
	return nil
}

// maxCopyPart is the most UploadPartCopy copies in one part (S3: 5 GiB).
var maxCopyPart int64 = 5 << 30

// copyObject copies the size bytes of the object at src to dst as a
// multipart upload of UploadPartCopy parts, completed with If-None-Match
// for IfNotExists: S3-compatible servers that ignore If-None-Match on
// CopyObject (MinIO) honour it on CompleteMultipartUpload, and the parts
// take any size. The copy happens in the store; the new upload asks for no
// checksums (the bytes were checked on their way in).
func (s *Store) copyObject(ctx context.Context, src, dst string, size int64, opts store.PutOptions) error {
	id, err := s.createUploadOpts(ctx, dst, false)
	if err != nil {
		return err
	}
	source := url.PathEscape(s.bucket) + "/" + escapeKey(s.objectKey(src))
	var parts []types.CompletedPart
	for off, num := int64(0), int32(1); off < size; num++ {
		n := min(size-off, maxCopyPart)
		out, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket:          aws.String(s.bucket),
			Key:             aws.String(s.objectKey(dst)),
			UploadId:        id,
			PartNumber:      aws.Int32(num),
			CopySource:      aws.String(source),
			CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
		})
		if err != nil {
			return s.abortUpload(ctx, dst, id, s.wrap(fmt.Sprintf("put (copy part %d from %s)", num, src), dst, err))
		}
		if out.CopyPartResult == nil || out.CopyPartResult.ETag == nil {
			return s.abortUpload(ctx, dst, id, fmt.Errorf("put %s (copy part %d from %s): no ETag in the reply", s.url(dst), num, src))
		}
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(num), ETag: out.CopyPartResult.ETag})
		off += n
	}
	if err := s.completeUpload(ctx, dst, id, parts, opts); err != nil {
		return s.abortUpload(ctx, dst, id, err)
	}
	return nil
}

// escapeKey URL-escapes each segment of an object key.
func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return strings.Join(segs, "/")
}

// abortUpload aborts an upload that failed with err (even when ctx is
// done) and returns err, noting a failed abort.
func (s *Store) abortUpload(ctx context.Context, key string, uploadID *string, err error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(s.objectKey(key)),
		UploadId: uploadID,
	})
	if aerr != nil {
		return fmt.Errorf("%w (and aborting the multipart upload failed: %v)", err, aerr)
	}
	return err
}
