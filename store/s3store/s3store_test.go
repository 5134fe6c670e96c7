package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
	"github.com/kbackup/kbackup/store/storetest"
)

// testPartSize is small so that the conformance suite's large object
// takes the multipart path (gofakes3 has no 5 MiB minimum).
const testPartSize = 256 << 10

func newStore(t *testing.T, srv *s3fake.Server, bucket, prefix string, mod ...func(*s3store.Options)) *s3store.Store {
	t.Helper()
	o := srv.Options(bucket)
	o.Prefix = prefix
	for _, m := range mod {
		m(&o)
	}
	o.PartSize = testPartSize
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { partsBack(t, s) })
	return s
}

// partsBack checks that every staged object's part buffers went back to
// the store's pool (the uploader hands its last one back after it ends).
func partsBack(t *testing.T, s *s3store.Store) {
	t.Helper()
	waitFor(t, "the staged parts' buffers back in the pool", func() bool { return s.PartBuffers().InUse == 0 })
}

func TestConformance(t *testing.T) {
	srv, _ := s3fake.Start(t, "kbackup")
	t.Run("root", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, srv, "kbackup", "") },
			storetest.LargeObject(3*testPartSize+123))
	})
	t.Run("prefix", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, srv, "kbackup", "some/prefix") },
			storetest.LargeObject(2*testPartSize))
	})
	// The CRC32 upload checksums used on AWS.
	t.Run("checksums", func(t *testing.T) {
		crc := func(o *s3store.Options) { o.Checksums = s3store.ChecksumCRC32 }
		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, srv, "kbackup", "crc", crc) },
			storetest.LargeObject(2*testPartSize+1))
	})
}

func TestNewMissingBucket(t *testing.T) {
	srv, o := s3fake.Start(t, "exists")
	o.Bucket = "missing"
	start := time.Now()
	_, err := s3store.New(t.Context(), o)
	if !errors.Is(err, store.ErrPermanent) {
		t.Fatalf("New on a missing bucket: err = %v, want ErrPermanent", err)
	}
	if !strings.Contains(err.Error(), "bucket missing does not exist") {
		t.Errorf("error %q does not say the bucket does not exist", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("New took %v to fail on a missing bucket", d)
	}
	if n := srv.Requests(); n != 1 {
		t.Errorf("New made %d requests, want 1 (no retries of a permanent error)", n)
	}
}

func TestPermanentErrors(t *testing.T) {
	srv, o := s3fake.Start(t, "b")
	o.Prefix = "p"
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		status     int
		code, want string
	}{
		{403, "AccessDenied", "access denied to s3://b/p/: check credentials"},
		{403, "InvalidAccessKeyId", "check credentials"},
		{403, "SignatureDoesNotMatch", "check credentials"},
		{404, "NoSuchBucket", "bucket b does not exist"},
		{301, "PermanentRedirect", "another region"},
	} {
		var n atomic.Int64
		srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			n.Add(1)
			s3fake.WriteError(w, tc.status, tc.code, "no")
			return true
		})
		err := s.Put(t.Context(), "k", strings.NewReader("x"), 1, store.PutOptions{})
		if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrPermanent saying %q", tc.code, err, tc.want)
		}
		if n.Load() != 1 {
			t.Errorf("%s: %d requests, want 1 (not retried)", tc.code, n.Load())
		}
		if strings.Contains(err.Error(), "kbackup-fake-secret") {
			t.Errorf("error leaks the secret key: %v", err)
		}
	}
	srv.SetHook(nil)
	// New fails fast on access denied too.
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		s3fake.WriteError(w, 403, "AccessDenied", "no")
		return true
	})
	if _, err := s3store.New(t.Context(), o); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("New with access denied: err = %v, want ErrPermanent", err)
	}
}

func TestTransientErrorsRetried(t *testing.T) {
	srv, o := s3fake.Start(t, "b")
	o.PartSize = testPartSize
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, status := range []int{500, 503} {
		before := srv.Requests()
		srv.FailNext(3, status)
		if err := s.Put(ctx, "k", strings.NewReader("hello"), 5, store.PutOptions{}); err != nil {
			t.Fatalf("Put after %d x %d: %v", 3, status, err)
		}
		if got := srv.Requests() - before; got != 4 {
			t.Errorf("status %d: %d requests, want 4 (3 failures + 1 success)", status, got)
		}
	}
	// Every kind of request retries, multipart parts included.
	big := bytes.Repeat([]byte("z"), 2*testPartSize+1)
	srv.FailNext(2, 500)
	if err := s.Put(ctx, "big", bytes.NewReader(big), int64(len(big)), store.PutOptions{}); err != nil {
		t.Fatalf("multipart Put with failures: %v", err)
	}
	srv.FailNext(2, 503)
	got, err := store.Get(ctx, s, "big")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Get after failures: %d bytes, %v", len(got), err)
	}
	srv.FailNext(2, 500)
	if _, err := s.Stat(ctx, "k"); err != nil {
		t.Errorf("Stat after failures: %v", err)
	}
	srv.FailNext(2, 500)
	if err := s.List(ctx, store.ListOptions{}, func(store.ListEntry) error { return nil }); err != nil {
		t.Errorf("List after failures: %v", err)
	}
	// An outage longer than the retries fails, without ErrPermanent.
	o.MaxRetries = 2
	s2, err := s3store.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	srv.FailNext(3, 500)
	err = s2.Put(ctx, "k2", strings.NewReader("x"), 1, store.PutOptions{})
	if err == nil || errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put through a long outage: err = %v, want a non-permanent error", err)
	}
	srv.FailNext(0, 0)
}

func TestMultipartFailureAborts(t *testing.T) {
	srv, o := s3fake.Start(t, "b")
	o.PartSize = testPartSize
	o.MaxRetries = -1
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	var aborted atomic.Bool
	var parts atomic.Int64
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		switch {
		case r.Method == http.MethodDelete && q.Has("uploadId"):
			aborted.Store(true)
		case r.Method == http.MethodPut && q.Has("partNumber"):
			if parts.Add(1) == 2 {
				s3fake.WriteError(w, 500, "InternalError", "injected")
				return true
			}
		}
		return false
	})
	big := bytes.Repeat([]byte("q"), 3*testPartSize)
	if err := s.Put(t.Context(), "big", bytes.NewReader(big), int64(len(big)), store.PutOptions{}); err == nil {
		t.Fatal("Put with a failing part succeeded")
	}
	if !aborted.Load() {
		t.Error("failed multipart upload was not aborted")
	}
	if _, err := s.Stat(t.Context(), "big"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after failed multipart Put, Stat err = %v, want ErrNotFound", err)
	}
}

func TestSSEHeaders(t *testing.T) {
	srv, o := s3fake.Start(t, "b")
	o.PartSize = testPartSize
	var mu sync.Mutex
	var seen []string
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		if r.Method == http.MethodPut && !q.Has("partNumber") || r.Method == http.MethodPost && q.Has("uploads") {
			mu.Lock()
			seen = append(seen, r.Header.Get("X-Amz-Server-Side-Encryption")+"|"+r.Header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"))
			mu.Unlock()
		}
		return false
	})
	for _, tc := range []struct{ sse, key, want string }{
		{"AES256", "", "AES256|"},
		{"aws:kms", "arn:aws:kms:us-east-1:111122223333:key/k1", "aws:kms|arn:aws:kms:us-east-1:111122223333:key/k1"},
		{"", "", "|"},
	} {
		o.SSE, o.SSEKMSKeyID = tc.sse, tc.key
		s, err := s3store.New(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		seen = nil
		mu.Unlock()
		big := make([]byte, testPartSize+1)
		if err := s.Put(t.Context(), "small", strings.NewReader("x"), 1, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(t.Context(), "big", bytes.NewReader(big), int64(len(big)), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if len(seen) != 2 || seen[0] != tc.want || seen[1] != tc.want {
			t.Errorf("SSE %q: upload headers %q, want 2 x %q", tc.sse, seen, tc.want)
		}
		mu.Unlock()
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []s3store.Options{
		{},
		{Bucket: "a/b"},
		{Bucket: "b", Prefix: "/p"},
		{Bucket: "b", Prefix: "p/"},
		{Bucket: "b", SSE: "rot13"},
		{Bucket: "b", SSEKMSKeyID: "k"},
		{Bucket: "b", SSE: "AES256", SSEKMSKeyID: "k"},
		{Bucket: "b", Endpoint: "ftp://x"},
		{Bucket: "b", PartSize: -1},
	} {
		if _, err := s3store.New(t.Context(), o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestString(t *testing.T) {
	_, o := s3fake.Start(t, "b")
	o.Prefix = "backups/prod"
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "s3://b/backups/prod (endpoint "+o.Endpoint+")"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestCanceledDuringRetries(t *testing.T) {
	srv, o := s3fake.Start(t, "b")
	o.MaxBackoff = time.Second
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	srv.FailNext(1000, 503)
	defer srv.FailNext(0, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Put(ctx, "k", strings.NewReader("x"), 1, store.PutOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put during an outage past its deadline: err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Put returned %v after its context ended", d)
	}
}

func TestConnectionResetRetried(t *testing.T) {
	srv, o := s3fake.Start(t, "b")
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	var drops atomic.Int64
	drops.Store(2)
	srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if drops.Add(-1) < 0 {
			return false
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return false
		}
		conn.Close() // the client sees the connection drop mid-request
		return true
	})
	if err := s.Put(t.Context(), "k", strings.NewReader("hello"), 5, store.PutOptions{}); err != nil {
		t.Fatalf("Put across dropped connections: %v", err)
	}
	if got, err := store.Get(t.Context(), s, "k"); err != nil || string(got) != "hello" {
		t.Fatalf("Get = %q, %v", got, err)
	}
}

// stageHook counts the multipart requests a staged object makes, fails
// the part numbered failPart (0: none), and every PutObject if failPut, and
// holds each upload's creation for createDelay and each part for partDelay
// before the server handles it.
type stageHook struct {
	creates, parts, completes, aborts, puts atomic.Int64
	copies, deletes, lists                  atomic.Int64 // UploadPartCopy, DeleteObject, ListObjectsV2
	copyRanges                              []string     // of the copies (one at a time)
	failPart                                int64
	failPut, failCopy                       atomic.Bool
	createDelay, partDelay                  time.Duration
	mu                                      sync.Mutex
	partSizes                               []int64 // of the parts uploaded, in order
}

func (h *stageHook) uploadedParts() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.partSizes)
}

func (h *stageHook) hook(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		h.creates.Add(1)
		time.Sleep(h.createDelay)
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
		h.copies.Add(1)
		h.copyRanges = append(h.copyRanges, r.Header.Get("X-Amz-Copy-Source-Range"))
		if h.failCopy.Load() {
			s3fake.WriteError(w, 403, "AccessDenied", "injected")
			return true
		}
	case r.Method == http.MethodPut && q.Has("partNumber"):
		n := h.parts.Add(1)
		h.mu.Lock()
		h.partSizes = append(h.partSizes, r.ContentLength)
		h.mu.Unlock()
		time.Sleep(h.partDelay)
		if n == h.failPart {
			s3fake.WriteError(w, 500, "InternalError", "injected")
			return true
		}
	case r.Method == http.MethodPost && q.Has("uploadId"):
		h.completes.Add(1)
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		h.aborts.Add(1)
	case r.Method == http.MethodDelete:
		h.deletes.Add(1)
	case r.Method == http.MethodGet && q.Has("list-type"):
		h.lists.Add(1)
	case r.Method == http.MethodPut:
		h.puts.Add(1)
		if h.failPut.Load() {
			s3fake.WriteError(w, 500, "InternalError", "injected")
			return true
		}
	}
	return false
}

func newStageStore(t *testing.T) (*s3store.Store, *stageHook) {
	t.Helper()
	srv, o := s3fake.Start(t, "b")
	o.PartSize = testPartSize
	o.MaxRetries = -1
	s, err := s3store.New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	h := &stageHook{}
	srv.SetHook(h.hook)
	return s, h
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStageAtStreams: a staged object's full parts are uploaded while it is
// written (the bytes are not held until Publish), an object smaller than a
// part is one PutObject, and an Abort aborts the upload.
func TestStageAtStreams(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	st, err := s.StageAt(ctx, "wal/one")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 4*testPartSize/16+7)
	if _, err := st.Write(data); err != nil {
		t.Fatal(err)
	}
	// Four full parts were handed over; the uploader holds at most one.
	waitFor(t, "three parts uploaded before Publish", func() bool { return h.parts.Load() >= 3 })
	if h.completes.Load() != 0 {
		t.Fatal("completed before Publish")
	}
	if err := st.Publish(ctx, "wal/one", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Get(ctx, s, "wal/one"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("published object: %d bytes, err %v; want %d bytes", len(got), err, len(data))
	}
	if c, p, d := h.creates.Load(), h.parts.Load(), h.completes.Load(); c != 1 || p != 5 || d != 1 {
		t.Errorf("requests: %d creates, %d parts, %d completes; want 1, 5, 1", c, p, d)
	}

	// Less than a part: one PUT, no multipart upload.
	h.creates.Store(0)
	st, _ = s.StageAt(ctx, "wal/small")
	st.Write(data[:testPartSize-1])
	if err := st.Publish(ctx, "wal/small", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if h.creates.Load() != 0 || h.puts.Load() != 1 {
		t.Errorf("a staged object smaller than a part: %d multipart uploads, %d PUTs; want 0, 1", h.creates.Load(), h.puts.Load())
	}
	partsBack(t, s)

	// Abort aborts the upload; nothing is left.
	st, _ = s.StageAt(ctx, "wal/two")
	st.Write(data)
	waitFor(t, "a part uploaded", func() bool { return h.parts.Load() >= 6 })
	st.Abort()
	waitFor(t, "the upload aborted", func() bool { return h.aborts.Load() == 1 })
	if _, err := s.Stat(ctx, "wal/two"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after Abort, Stat: %v, want ErrNotFound", err)
	}
	partsBack(t, s)

	// An Abort before the first part filled gives its buffer back too.
	st, _ = s.StageAt(ctx, "wal/three")
	st.Write(data[:100])
	st.Abort()
	partsBack(t, s)
}

// TestStageCopies: an object staged without its key (Stage) streams its
// full parts to a temporary key under StagingPrefix while it is written;
// Publish completes it there, copies it to its key (a multipart upload of
// UploadPartCopy parts, fenced at its completion) and deletes the
// temporary object. Less than a part is one PutObject to the key. A
// failed copy publishes nothing and leaves no temporary object or upload.
func TestStageCopies(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	staging := func() []string { return storetest.Keys(t, s, s3store.StagingPrefix) }
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*testPartSize/16+5)
	st, err := s.Stage(ctx, "topics/t/segments/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two parts uploaded before Publish", func() bool { return h.parts.Load() >= 2 })
	if err := st.Publish(ctx, "topics/t/segments/a", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Get(ctx, s, "topics/t/segments/a"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("published object: %d bytes, err %v; want %d bytes", len(got), len(data), err)
	}
	if c, p, d, cp, del := h.creates.Load(), h.parts.Load(), h.completes.Load(), h.copies.Load(), h.deletes.Load(); c != 2 || p != 4 || d != 2 || cp != 1 || del != 1 {
		t.Errorf("requests: %d creates, %d parts, %d completes, %d part copies, %d deletes; want 2, 4, 2, 1, 1", c, p, d, cp, del)
	}
	if want := fmt.Sprintf("bytes=0-%d", len(data)-1); len(h.copyRanges) != 1 || h.copyRanges[0] != want {
		t.Errorf("copied ranges %q, want %s", h.copyRanges, want)
	}
	if keys := staging(); len(keys) != 0 {
		t.Errorf("temporary objects left: %q", keys)
	}
	partsBack(t, s)

	// The copy is fenced like a PUT: over an existing key it fails with
	// ErrExists and changes nothing.
	st, _ = s.Stage(ctx, "")
	st.Write(bytes.ToUpper(data))
	if err := st.Publish(ctx, "topics/t/segments/a", store.PutOptions{IfNotExists: true}); !errors.Is(err, store.ErrExists) {
		t.Errorf("a copy over an existing key with IfNotExists: %v, want ErrExists", err)
	}
	if got, _ := store.Get(ctx, s, "topics/t/segments/a"); !bytes.Equal(got, data) {
		t.Error("a fenced copy changed the object")
	}

	// Less than a part: one PUT to the key, no upload, no copy.
	h.creates.Store(0)
	h.copies.Store(0)
	st, _ = s.Stage(ctx, "")
	st.Write(data[:testPartSize-1])
	if err := st.Publish(ctx, "topics/t/segments/small", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if h.creates.Load() != 0 || h.copies.Load() != 0 || h.puts.Load() != 1 {
		t.Errorf("a staged object smaller than a part: %d uploads, %d copies, %d PUTs; want 0, 0, 1", h.creates.Load(), h.copies.Load(), h.puts.Load())
	}

	// A failed copy: nothing published, the temporary object deleted.
	h.failCopy.Store(true)
	h.aborts.Store(0)
	st, _ = s.Stage(ctx, "")
	st.Write(data)
	if err := st.Publish(ctx, "topics/t/segments/b", store.PutOptions{IfNotExists: true}); err == nil {
		t.Fatal("Publish with a failed copy succeeded")
	}
	if _, err := s.Stat(ctx, "topics/t/segments/b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after a failed copy, Stat: %v, want ErrNotFound", err)
	}
	if keys := staging(); len(keys) != 0 {
		t.Errorf("temporary objects left after a failed copy: %q", keys)
	}
	if a := h.aborts.Load(); a != 1 {
		t.Errorf("%d uploads aborted after the failed copy, want the copy's", a)
	}
	partsBack(t, s)
	h.failCopy.Store(false)

	// Past the largest part a copy takes, in several parts.
	defer s3store.SetMaxCopyPart(testPartSize + 7)()
	h.copyRanges = nil
	st, _ = s.Stage(ctx, "")
	st.Write(data)
	if err := st.Publish(ctx, "topics/t/segments/c", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Get(ctx, s, "topics/t/segments/c"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("published object: %d bytes, err %v; want %d bytes", len(got), len(data), err)
	}
	var want []string
	for off := 0; off < len(data); off += testPartSize + 7 {
		want = append(want, fmt.Sprintf("bytes=%d-%d", off, min(off+testPartSize+7, len(data))-1))
	}
	if !slices.Equal(h.copyRanges, want) {
		t.Errorf("copied ranges %q, want %q", h.copyRanges, want)
	}
}

// TestSweepStaged: the temporary objects a writer killed between an
// upload's completion and its copy left are deleted once older than the
// cutoff, and only those under StagingPrefix.
func TestSweepStaged(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	for _, k := range []string{s3store.StagingPrefix + "1-dead", s3store.StagingPrefix + "2-dead", "topics/t/kept"} {
		if err := s.Put(ctx, k, strings.NewReader("x"), 1, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.SweepStaged(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("sweeping what is older than an hour: %d, %v; want nothing", n, err)
	}
	if n, err := s.SweepStaged(ctx, time.Now().Add(time.Minute)); err != nil || n != 2 {
		t.Fatalf("sweeping: %d, %v; want the 2 temporary objects", n, err)
	}
	if _, err := s.Stat(ctx, "topics/t/kept"); err != nil {
		t.Errorf("an archive object was swept: %v", err)
	}

	// A Store's first Stage sweeps in the background, and a later one
	// again once the staleness has passed since, not before.
	defer s3store.SetStaleStaging(500 * time.Millisecond)()
	stage := func() {
		t.Helper()
		st, err := s.Stage(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		st.Abort()
	}
	deadAged := func(key string) {
		t.Helper()
		if err := s.Put(ctx, s3store.StagingPrefix+key, strings.NewReader("x"), 1, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
	}
	swept := func(key string) {
		t.Helper()
		waitFor(t, key+" swept", func() bool {
			_, err := s.Stat(ctx, s3store.StagingPrefix+key)
			return errors.Is(err, store.ErrNotFound)
		})
	}
	deadAged("3-dead")
	h.lists.Store(0)
	stage()
	swept("3-dead")
	stage() // within the staleness of the last sweep: none
	time.Sleep(100 * time.Millisecond)
	if n := h.lists.Load(); n != 1 {
		t.Errorf("%d listings of %s after two Stages in a row, want the first's", n, s3store.StagingPrefix)
	}
	deadAged("4-dead")
	stage()
	swept("4-dead")
	if _, err := s.Stat(ctx, "topics/t/kept"); err != nil {
		t.Errorf("an archive object was swept: %v", err)
	}
}

// TestStageAtPartFailure: a part that fails makes the object lost: a later
// Write or the Publish fails, the upload is aborted, nothing is published.
func TestStageAtPartFailure(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	h.failPart = 2
	st, err := s.StageAt(ctx, "wal/lost")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 3*testPartSize)
	var werr error
	for off := 0; off < len(data) && werr == nil; off += 4096 {
		_, werr = st.Write(data[off : off+4096])
	}
	perr := st.Publish(ctx, "wal/lost", store.PutOptions{IfNotExists: true})
	if perr == nil {
		t.Fatalf("Publish after a failed part succeeded (Write: %v)", werr)
	}
	waitFor(t, "the upload aborted", func() bool { return h.aborts.Load() == 1 })
	if h.completes.Load() != 0 {
		t.Error("the upload was completed")
	}
	if _, err := s.Stat(ctx, "wal/lost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat: %v, want ErrNotFound", err)
	}
	partsBack(t, s)
	// The failed part's buffer, which the HTTP transport may still read,
	// is abandoned, never put back for reuse (the others are back:
	// partsBack).
	if got := s.PartBuffers(); got.Abandoned != 1 {
		t.Errorf("part buffers %+v, want the failed part's abandoned", got)
	}
}

// TestStageAtPipelineBound: staged objects fill their next part while the
// previous one uploads only while few part buffers are in use; beyond,
// Write waits for the upload, so each object holds one buffer. Four
// objects written a part and a half each, round robin, with slow part
// uploads: pipelined, each would hold two buffers (eight); bounded, the
// first two pipeline and the others wait (six). Every object is intact.
func TestStageAtPipelineBound(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	h.partDelay = 200 * time.Millisecond
	var sts []store.Staged
	var want [][]byte
	for i := range 4 {
		st, err := s.StageAt(ctx, fmt.Sprintf("wal/obj-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
		want = append(want, nil)
	}
	peak := 0
	for round := range 2 {
		for i, st := range sts {
			p := bytes.Repeat([]byte{byte('a' + 4*round + i)}, testPartSize*3/2)
			if _, err := st.Write(p); err != nil {
				t.Fatal(err)
			}
			want[i] = append(want[i], p...)
			peak = max(peak, s.PartBuffers().InUse)
		}
	}
	if peak > 6 {
		t.Errorf("%d part buffers in use at once, want at most 6 (two objects pipelined, two holding one each)", peak)
	}
	for i, st := range sts {
		key := fmt.Sprintf("wal/obj-%d", i)
		if err := st.Publish(ctx, key, store.PutOptions{IfNotExists: true}); err != nil {
			t.Fatal(err)
		}
		if got, err := store.Get(ctx, s, key); err != nil || !bytes.Equal(got, want[i]) {
			t.Fatalf("%s: %d bytes, err %v; want %d bytes", key, len(got), err, len(want[i]))
		}
	}
	partsBack(t, s)
}

// TestStageAtAbortWhileWaiting: a Write waiting for its part's upload
// (many buffers in use) returns at once when the object is aborted.
func TestStageAtAbortWhileWaiting(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	h.partDelay = 10 * time.Second
	var others []store.Staged
	for i := range 4 { // four objects holding a part buffer each
		st, err := s.StageAt(ctx, fmt.Sprintf("wal/held-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(make([]byte, testPartSize/2)); err != nil {
			t.Fatal(err)
		}
		others = append(others, st)
	}
	st, err := s.StageAt(ctx, "wal/waiting")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, testPartSize))
		wrote <- err
	}()
	waitFor(t, "the part's upload started", func() bool { return h.parts.Load() == 1 })
	select {
	case err := <-wrote:
		t.Fatalf("Write returned before its part was uploaded (%v), with %d buffers in use", err, s.PartBuffers().InUse)
	case <-time.After(50 * time.Millisecond):
	}
	start := time.Now()
	st.Abort()
	select {
	case err := <-wrote:
		if !errors.Is(err, store.ErrAborted) {
			t.Errorf("the waiting Write: %v, want ErrAborted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting Write did not return after Abort")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the waiting Write returned %v after Abort", d)
	}
	for _, o := range others {
		o.Abort()
	}
	partsBack(t, s)
}

// TestStageAtSmallPutFailure: a staged object smaller than a part is one
// PutObject; when it fails, Publish says so and the buffer it was sent from
// (which the HTTP transport may still read) is abandoned, not reused.
func TestStageAtSmallPutFailure(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	h.failPut.Store(true)
	st, err := s.StageAt(ctx, "wal/small")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("less than a part")); err != nil {
		t.Fatal(err)
	}
	if err := st.Publish(ctx, "wal/small", store.PutOptions{}); err == nil {
		t.Fatal("Publish of a failed PutObject succeeded")
	}
	if h.puts.Load() != 1 || h.creates.Load() != 0 {
		t.Errorf("%d PutObject, %d multipart uploads; want 1 and 0", h.puts.Load(), h.creates.Load())
	}
	partsBack(t, s)
	if got := s.PartBuffers(); got.Abandoned != 1 || got.Resident+got.Released != 0 {
		t.Errorf("part buffers %+v, want the one sent abandoned, none idle", got)
	}
	h.failPut.Store(false)
	st, err = s.StageAt(ctx, "wal/small")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if err := st.Publish(ctx, "wal/small", store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Get(ctx, s, "wal/small"); err != nil || string(got) != "again" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	partsBack(t, s)
}

// TestStageAtAbortDuringCreate: an Abort while the multipart upload is
// being created does not cut the creation off (the store would create an
// upload nobody knows of): the upload is created, then aborted by its id,
// and none is left.
func TestStageAtAbortDuringCreate(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	h.createDelay = 300 * time.Millisecond
	st, err := s.StageAt(ctx, "wal/aborted")
	if err != nil {
		t.Fatal(err)
	}
	// Three parts: the first is handed over and the Write then waits to
	// hand over the second, while the upload is being created.
	wrote := make(chan error, 1)
	go func() {
		_, err := st.Write(bytes.Repeat([]byte("a"), 3*testPartSize+10))
		wrote <- err
	}()
	waitFor(t, "the upload's creation started", func() bool { return h.creates.Load() == 1 })
	st.Abort()
	if err := <-wrote; !errors.Is(err, store.ErrAborted) {
		t.Errorf("the Write cut off by Abort: %v, want ErrAborted", err)
	}
	waitFor(t, "the upload aborted by its id", func() bool { return h.aborts.Load() == 1 })
	if n, err := s.SweepUploads(ctx, "", time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("%d incomplete uploads left (%v)", n, err)
	}
	partsBack(t, s)
}

// TestSweepUploads: the incomplete multipart uploads a killed writer left
// under a prefix are aborted once older than the cutoff; newer ones and
// those under other prefixes are kept.
func TestSweepUploads(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	data := bytes.Repeat([]byte("z"), 2*testPartSize)
	stageLeft := func(key string) store.Staged {
		st, err := s.StageAt(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(data); err != nil {
			t.Fatal(err)
		}
		return st
	}
	left := stageLeft("wal/w1/a")
	stageLeft("wal/w2/b")
	other := stageLeft("topics/x/seg")
	waitFor(t, "three uploads started", func() bool { return h.creates.Load() == 3 })
	if n, err := s.SweepUploads(ctx, "wal/", time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("sweeping uploads older than an hour: %d, %v; want none", n, err)
	}
	if n, err := s.SweepUploads(ctx, "wal/", time.Now().Add(time.Minute)); err != nil || n != 2 {
		t.Fatalf("sweeping every upload under wal/: %d, %v; want 2", n, err)
	}
	if err := left.Publish(ctx, "wal/w1/a", store.PutOptions{}); err == nil {
		t.Error("an upload swept away was published")
	}
	if err := other.Publish(ctx, "topics/x/seg", store.PutOptions{}); err != nil {
		t.Errorf("an upload under another prefix: %v", err)
	}
}

// TestStageAtReserve: bytes encoded in place in a staged object's part
// buffer (store.ReservingStaged) are the object's as if written, with
// writes between; a part ends at the first commit that takes it to the
// part size, so no reservation is split and every part but the last has
// at least the part size; PartLeft says how much the part lacks; the reserved room is left dirty from earlier
// use, and only what is committed counts. Misuse is refused: a write or a
// second reservation while one is out, a reservation beyond MaxReserve, a
// commit of more than was reserved, a publish during a reservation. An
// Abort during a reservation gives its buffer up (never reused: the writer
// may still write into it) and the commit then fails.
func TestStageAtReserve(t *testing.T) {
	ctx := t.Context()
	s, h := newStageStore(t)
	st, err := s.StageAt(ctx, "wal/reserved")
	if err != nil {
		t.Fatal(err)
	}
	rs := st.(store.ReservingStaged)
	if rs.MaxReserve() < 1<<20 {
		t.Fatalf("MaxReserve %d: less than a default block", rs.MaxReserve())
	}
	var want []byte
	fill := 0 // bytes in the part being filled
	for i := range 40 {
		if i%3 == 0 {
			p := bytes.Repeat([]byte{byte(i)}, 1000+i*100)
			if _, err := st.Write(p); err != nil {
				t.Fatal(err)
			}
			want = append(want, p...)
			fill = (fill + len(p)) % testPartSize // a write fills parts to the part size exactly
		}
		n := 20_000 + i*9_000
		b, err := rs.Reserve(n)
		if err != nil || len(b) != n {
			t.Fatalf("reserve %d: %d bytes, %v", n, len(b), err)
		}
		if left := rs.PartLeft(); left != testPartSize-fill {
			t.Fatalf("PartLeft %d with %d bytes in the part, want %d", left, fill, testPartSize-fill)
		}
		if _, err := st.Write([]byte("x")); !errors.Is(err, s3store.ErrReserved) {
			t.Fatalf("write during a reservation: %v, want refused", err)
		}
		if _, err := rs.Reserve(10); !errors.Is(err, s3store.ErrReserved) {
			t.Fatalf("second reservation: %v, want refused", err)
		}
		k := n - i*7 // the rest of the room stays as it was
		for j := range b[:k] {
			b[j] = byte(i*31 + j)
		}
		want = append(want, b[:k]...)
		if err := rs.Commit(k); err != nil {
			t.Fatal(err)
		}
		if fill += k; fill >= testPartSize {
			fill = 0 // the part went, past the part size
		}
		if st.Size() != int64(len(want)) {
			t.Fatalf("size %d after a commit, want %d", st.Size(), len(want))
		}
	}
	if _, err := rs.Reserve(rs.MaxReserve() + 1); err == nil {
		t.Fatal("a reservation beyond MaxReserve was granted")
	}
	if err := rs.Commit(0); err == nil {
		t.Fatal("a commit without a reservation succeeded")
	}
	if b, err := rs.Reserve(100); err != nil || rs.Commit(101) == nil || len(b) != 100 {
		t.Fatal("a commit beyond the reservation succeeded")
	}
	if err := st.Publish(ctx, "wal/reserved", store.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Get(ctx, s, "wal/reserved"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("published object: %d bytes, err %v; want %d bytes", len(got), err, len(want))
	}
	parts := h.uploadedParts()
	var total int64
	for i, n := range parts {
		total += n
		if i < len(parts)-1 && (n < testPartSize || n > testPartSize+int64(rs.MaxReserve())) {
			t.Errorf("part %d of %d: %d bytes, want %d to %d", i+1, len(parts), n, testPartSize, testPartSize+rs.MaxReserve())
		}
	}
	if total != int64(len(want)) || len(parts) < 3 {
		t.Fatalf("%d parts of %d bytes in all, want several of %d", len(parts), total, len(want))
	}
	partsBack(t, s)

	// A publish during a reservation is refused, and aborts.
	before := s.PartBuffers().Abandoned
	st, _ = s.StageAt(ctx, "wal/early")
	rs = st.(store.ReservingStaged)
	rs.Reserve(10)
	if err := st.Publish(ctx, "wal/early", store.PutOptions{}); !errors.Is(err, s3store.ErrReserved) {
		t.Fatalf("publish during a reservation: %v, want refused", err)
	}
	if err := rs.Commit(10); !errors.Is(err, store.ErrAborted) {
		t.Fatalf("commit after the refused publish: %v, want ErrAborted", err)
	}

	// An Abort during a reservation: the buffer is abandoned, not
	// reused; writing into the reservation afterwards harms nothing.
	st, _ = s.StageAt(ctx, "wal/aborted")
	rs = st.(store.ReservingStaged)
	st.Write(bytes.Repeat([]byte("a"), testPartSize/2))
	b, err := rs.Reserve(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	st.Abort()
	for i := range b {
		b[i] = 0xee
	}
	if err := rs.Commit(len(b)); !errors.Is(err, store.ErrAborted) {
		t.Fatalf("commit after Abort: %v, want ErrAborted", err)
	}
	if got := s.PartBuffers().Abandoned - before; got != 2 {
		t.Errorf("%d buffers abandoned by the aborts during reservations, want 2", got)
	}
	partsBack(t, s)
	for _, k := range []string{"wal/early", "wal/aborted"} {
		if _, err := s.Stat(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v, want nothing published", k, err)
		}
	}
}
