// Package s3fake runs an in-process fake S3 server (gofakes3 over an
// in-memory backend) on a loopback port, for tests and the demo.
//
//	srv, err := s3fake.New()
//	...
//	defer srv.Close()
//	st, err := s3store.New(ctx, srv.Options("archive"))
//
// Beyond gofakes3 it enforces If-None-Match: * on
// CompleteMultipartUpload (gofakes3 checks it on PutObject only), serves
// UploadPartCopy (which gofakes3 lacks), and it
// can inject errors (FailNext, SetHook) to test retries and error paths.
// It checks no signatures: any credentials work.
package s3fake

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/kbackup/kbackup/store/s3store"
)

// Hook sees every request before the fake does. It returns true when it
// has written a response itself; false passes the request on.
type Hook func(w http.ResponseWriter, r *http.Request) bool

// Server is a running fake S3 server. Its methods are safe for concurrent
// use.
type Server struct {
	// URL is the endpoint, e.g. "http://127.0.0.1:40123".
	URL string

	backend  *s3mem.Backend
	fake     http.Handler
	srv      *http.Server
	ln       net.Listener
	cond     sync.Mutex // serializes conditional writes
	hook     atomic.Pointer[Hook]
	failN    atomic.Int64
	failCode atomic.Int64
	requests atomic.Int64
	ignoreIf atomic.Bool
	closeMu  sync.Once
}

// New starts a fake S3 server on 127.0.0.1 with no buckets.
func New() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3fake: listen: %w", err)
	}
	backend := s3mem.New()
	s := &Server{
		URL:     "http://" + ln.Addr().String(),
		backend: backend,
		fake:    gofakes3.New(backend).Server(),
		ln:      ln,
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed on Close
	return s, nil
}

// CreateBucket creates bucket; an existing bucket is not an error.
func (s *Server) CreateBucket(bucket string) error {
	if ok, _ := s.backend.BucketExists(bucket); ok {
		return nil
	}
	if err := s.backend.CreateBucket(bucket); err != nil {
		return fmt.Errorf("s3fake: create bucket %s: %w", bucket, err)
	}
	return nil
}

// Credentials are the static credentials Options uses. The fake checks
// no signatures, so they are not secret.
var Credentials = credentials.NewStaticCredentialsProvider("kbackup-fake-key", "kbackup-fake-secret", "")

// Options returns s3store options for bucket on this server, creating the
// bucket if needed: path-style addressing, static fake credentials, region
// us-east-1, and short retry backoff (100 ms) so error tests run fast.
func (s *Server) Options(bucket string) s3store.Options {
	_ = s.CreateBucket(bucket) // only fails for an invalid name; New then reports it
	return s3store.Options{
		Bucket:      bucket,
		Endpoint:    s.URL,
		Region:      "us-east-1",
		PathStyle:   true,
		Credentials: Credentials,
		MaxBackoff:  100 * time.Millisecond,
	}
}

// SetHook installs h (nil removes it).
func (s *Server) SetHook(h Hook) {
	if h == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&h)
}

// FailNext makes the next n requests fail with HTTP status (e.g. 500 or
// 503) before they reach the fake, as a transient outage would.
func (s *Server) FailNext(n int, status int) {
	s.failCode.Store(int64(status))
	s.failN.Store(int64(n))
}

// IgnoreIfNoneMatch makes the server behave like S3-compatible servers
// that ignore If-None-Match: conditional creates overwrite silently.
func (s *Server) IgnoreIfNoneMatch(ignore bool) { s.ignoreIf.Store(ignore) }

// Requests returns how many requests the server has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops the server.
func (s *Server) Close() {
	s.closeMu.Do(func() { s.srv.Close() })
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if h := s.hook.Load(); h != nil && (*h)(w, r) {
		return
	}
	if s.takeFailure() {
		status := int(s.failCode.Load())
		code := "InternalError"
		if status == http.StatusServiceUnavailable {
			code = "SlowDown"
		}
		WriteError(w, status, code, "injected failure")
		return
	}
	s.Serve(w, r)
}

// Serve serves r as the fake does, without the hook or injected failures:
// a hook can pass a request on and still answer it otherwise (a request
// that lands but reports failure).
func (s *Server) Serve(w http.ResponseWriter, r *http.Request) {
	if s.ignoreIf.Load() {
		r.Header.Del("If-None-Match")
	}
	if r.Header.Get("If-None-Match") != "" && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
		s.cond.Lock()
		defer s.cond.Unlock()
		if r.Method == http.MethodPost && r.URL.Query().Has("uploadId") && r.Header.Get("If-None-Match") == "*" {
			bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if _, err := s.backend.HeadObject(bucket, key); err == nil {
				WriteError(w, http.StatusPreconditionFailed, "PreconditionFailed",
					"At least one of the pre-conditions you specified did not hold")
				return
			} else if !gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchKey) {
				WriteError(w, http.StatusInternalServerError, "InternalError", err.Error())
				return
			}
		}
	}
	if r.Method == http.MethodPut && r.URL.Query().Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") != "" {
		s.uploadPartCopy(w, r)
		return
	}
	s.fake.ServeHTTP(w, r)
}

// uploadPartCopy serves UploadPartCopy: the source's bytes (or the
// x-amz-copy-source-range of them) are uploaded as the part, as an
// UploadPart of them would be.
func (s *Server) uploadPartCopy(w http.ResponseWriter, r *http.Request) {
	src, err := url.PathUnescape(strings.TrimPrefix(r.Header.Get("X-Amz-Copy-Source"), "/"))
	bucket, key, ok := strings.Cut(src, "/")
	if err != nil || !ok {
		WriteError(w, http.StatusBadRequest, "InvalidArgument", "bad x-amz-copy-source")
		return
	}
	var rng *gofakes3.ObjectRangeRequest
	if v := r.Header.Get("X-Amz-Copy-Source-Range"); v != "" {
		var from, to int64
		if _, err := fmt.Sscanf(v, "bytes=%d-%d", &from, &to); err != nil || from < 0 || to < from {
			WriteError(w, http.StatusBadRequest, "InvalidArgument", "bad x-amz-copy-source-range")
			return
		}
		rng = &gofakes3.ObjectRangeRequest{Start: from, End: to}
	}
	obj, err := s.backend.GetObject(bucket, key, rng)
	if err != nil {
		if gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchKey) {
			WriteError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
			return
		}
		WriteError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	body, err := io.ReadAll(obj.Contents)
	obj.Contents.Close()
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	part := r.Clone(r.Context())
	part.Header.Del("X-Amz-Copy-Source")
	part.Header.Del("X-Amz-Copy-Source-Range")
	part.Header.Set("Content-Length", strconv.Itoa(len(body)))
	part.ContentLength = int64(len(body))
	part.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	s.fake.ServeHTTP(rec, part)
	if rec.Code != http.StatusOK {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes()) //nolint:errcheck // the client sees a broken body
		return
	}
	res, err := xml.Marshal(struct {
		XMLName      xml.Name `xml:"CopyPartResult"`
		LastModified string
		ETag         string
	}{LastModified: time.Now().UTC().Format(time.RFC3339), ETag: rec.Header().Get("ETag")})
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Write([]byte(xml.Header)) //nolint:errcheck
	w.Write(res)                //nolint:errcheck
}

// takeFailure consumes one injected failure, if any are left.
func (s *Server) takeFailure() bool {
	for {
		n := s.failN.Load()
		if n <= 0 {
			return false
		}
		if s.failN.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// WriteError writes an S3 XML error response, for hooks.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	body, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"Error"`
		Code    string
		Message string
	}{Code: code, Message: message})
	if err != nil {
		body = nil
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header)) //nolint:errcheck // the client sees a broken body
	w.Write(body)               //nolint:errcheck
}

// TB is the part of testing.TB that Start needs (so that this package
// does not import testing).
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// Start starts a server that is closed when the test ends, creates
// bucket, and returns the server and options for it.
func Start(t TB, bucket string) (*Server, s3store.Options) {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Close)
	if err := s.CreateBucket(bucket); err != nil {
		t.Fatalf("%v", err)
	}
	return s, s.Options(bucket)
}
