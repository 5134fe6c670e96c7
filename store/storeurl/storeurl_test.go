package storeurl_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
	"github.com/kbackup/kbackup/store/storeurl"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want storeurl.URL
	}{
		{"file:///tmp/x", storeurl.URL{Scheme: "file", Path: "/tmp/x"}},
		{"file:///tmp/x/", storeurl.URL{Scheme: "file", Path: "/tmp/x"}},
		{"file://localhost/tmp/x", storeurl.URL{Scheme: "file", Path: "/tmp/x"}},
		{"s3://my-bucket", storeurl.URL{Scheme: "s3", Host: "my-bucket"}},
		{"s3://my-bucket/", storeurl.URL{Scheme: "s3", Host: "my-bucket"}},
		{"s3://my.bucket/a/b/", storeurl.URL{Scheme: "s3", Host: "my.bucket", Path: "a/b"}},
		{"s3://b12/kbackup/prod=1", storeurl.URL{Scheme: "s3", Host: "b12", Path: "kbackup/prod=1"}},
	} {
		got, err := storeurl.Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestBadURLs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"/abs/dir", "did you mean file:///abs/dir"},
		{"relative/dir", "missing scheme"},
		{"file://relative/dir", "three slashes"},
		{"file:relative", "absolute path"},
		{"file:///", "refusing"},
		{"file:///a?x=1", "query"},
		{"http://bucket/x", `unsupported scheme "http"`},
		{"gs://bucket/x", `unsupported scheme "gs"`},
		{"s3://", "s3://bucket/prefix"},
		{"s3:bucket", "s3://bucket/prefix"},
		{"s3://Bucket/x", "invalid bucket name"},
		{"s3://ab/x", "invalid bucket name"},
		{"s3://a..b/x", "invalid bucket name"},
		{"s3://bucket:9000/x", "no port"},
		{"s3://bucket/a//b", "invalid prefix"},
		{"s3://bucket/a/../b", "invalid prefix"},
		{"s3://bucket/a b", "invalid prefix"},
		{"s3://bucket/x#frag", "fragments"},
		{"s3://user:hunter2@bucket/x", "must not contain credentials"},
		{"::::", "not a URL"},
	} {
		_, err := storeurl.Open(t.Context(), tc.in, storeurl.S3Flags{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): err = %v, want it to say %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) leaks the password: %v", tc.in, err)
		}
	}
}

func TestBadSSE(t *testing.T) {
	dir := "file://" + t.TempDir()
	for _, f := range []storeurl.S3Flags{
		{SSE: "aes256"},
		{SSE: "kms"},
		{SSEKMSKeyID: "k"},
		{SSE: "AES256", SSEKMSKeyID: "k"},
	} {
		if _, err := storeurl.Open(t.Context(), dir, f); err == nil || !strings.Contains(err.Error(), "--s3-sse") {
			t.Errorf("Open with %+v: err = %v, want an --s3-sse error", f, err)
		}
	}
}

func TestOpenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "archive")
	s, err := storeurl.Open(t.Context(), "file://"+dir, storeurl.S3Flags{Region: "ignored"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "k", strings.NewReader("v"), 1, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := storeurl.Open(t.Context(), "file://"+dir+"/missing/parent", storeurl.S3Flags{}); err == nil {
		t.Error("Open of a directory whose parent is missing succeeded")
	}
}

func TestOpenS3(t *testing.T) {
	srv, _ := s3fake.Start(t, "archive")
	// Credentials from the standard chain's environment step; keep the
	// chain away from shared files and the instance metadata service.
	t.Setenv("AWS_ACCESS_KEY_ID", "kbackup-fake-key")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "kbackup-fake-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	flags := storeurl.S3Flags{Endpoint: srv.URL, PathStyle: true, SSE: "AES256"}
	s, err := storeurl.Open(t.Context(), "s3://archive/team/prod/", flags)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "s3://archive/team/prod (endpoint "+srv.URL+")"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := s.Put(t.Context(), "k", strings.NewReader("v"), 1, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = storeurl.Open(t.Context(), "s3://nope/x", flags)
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "bucket nope does not exist") {
		t.Errorf("Open of a missing bucket: err = %v, want ErrPermanent naming the bucket", err)
	}
}
