package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kbackup/kbackup/store/s3store"
)

// StoreOptions returns s3store options for s (path style, static
// credentials) under prefix ("" = bucket root; no leading/trailing slash).
func (s S3) StoreOptions(prefix string) s3store.Options {
	return s3store.Options{
		Bucket:      s.Bucket,
		Prefix:      strings.Trim(prefix, "/"),
		Endpoint:    s.Endpoint,
		Region:      s.Region,
		PathStyle:   true,
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	}
}

// Store opens an s3store on s under a fresh Prefix (deleted when the
// test passes).
func (s S3) Store(tb testing.TB) *s3store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s3store.New(ctx, s.StoreOptions(s.Prefix(tb)))
	if err != nil {
		tb.Fatalf("testenv: s3 store on %s: %v", s.Endpoint, err)
	}
	return st
}

// StoreURL returns the --store URL and flags for a kbackup subprocess
// using s under prefix (credentials come from AWSEnv).
func (s S3) StoreURL(prefix string) (url string, flags []string) {
	url = "s3://" + s.Bucket + "/" + strings.Trim(prefix, "/")
	return url, []string{"--s3-endpoint", s.Endpoint, "--s3-region", s.Region, "--s3-path-style"}
}
