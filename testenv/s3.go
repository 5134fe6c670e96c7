package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3 describes an S3-compatible endpoint with a bucket (MinIO here).
type S3 struct {
	Endpoint  string // http://127.0.0.1:port
	Bucket    string
	AccessKey string
	SecretKey string
	Region    string
}

// Default MinIO credentials and bucket of servers this package starts.
const (
	MinIOAccessKey = "kbackup-test"
	MinIOSecretKey = "kbackup-test-secret"
	MinIOBucket    = "kbackup-test"
	defaultRegion  = "us-east-1"
)

// MinIOBinary returns the cached MinIO binary ($KBACKUP_MINIO_BIN, the
// cache's bin/minio, or minio on PATH).
func MinIOBinary() (string, error) {
	if p := os.Getenv("KBACKUP_MINIO_BIN"); p != "" {
		return p, nil
	}
	p := filepath.Join(CacheDir(), "bin", "minio")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("minio: no binary in %s or PATH (run testenv/install.sh minio): %w", filepath.Dir(p), ErrNotInstalled)
}

// Server is a running component process (MinIO, moto_server).
type Server struct {
	Endpoint string // http://127.0.0.1:port
	Dir      string
	LogPath  string
	proc     *proc
}

// Pid returns the server's process id.
func (s *Server) Pid() int { return s.proc.Pid() }

// Close stops the server (SIGTERM, SIGKILL after 10s).
func (s *Server) Close() error {
	_, err := s.proc.Stop(10 * time.Second)
	return err
}

// waitHTTP waits until url answers with a status < 500.
func waitHTTP(ctx context.Context, url string, p *proc) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v); log %s:\n%s", p.spec.Name, err, p.spec.LogPath, tail(p.spec.LogPath, 20))
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %v (last: %v); log %s:\n%s", p.spec.Name, url, ctx.Err(), last, p.spec.LogPath, tail(p.spec.LogPath, 20))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StartMinIO starts MinIO on a free port with its data under dir, waits
// until it is ready and creates MinIOBucket.
func StartMinIO(ctx context.Context, dir string, detached bool) (*Server, S3, error) {
	bin, err := MinIOBinary()
	if err != nil {
		return nil, S3{}, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, S3{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, S3{}, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p, err := startProc(procSpec{
		Name: "minio",
		Path: bin,
		Args: []string{"server", "--quiet", "--address", addr,
			"--console-address", fmt.Sprintf("127.0.0.1:%d", ports[1]), filepath.Join(dir, "data")},
		Env: []string{"MINIO_ROOT_USER=" + MinIOAccessKey, "MINIO_ROOT_PASSWORD=" + MinIOSecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1"},
		Dir:      dir,
		LogPath:  filepath.Join(dir, "minio.log"),
		Detached: detached,
	})
	if err != nil {
		return nil, S3{}, err
	}
	srv := &Server{Endpoint: "http://" + addr, Dir: dir, LogPath: p.spec.LogPath, proc: p}
	cfg := S3{Endpoint: srv.Endpoint, Bucket: MinIOBucket, AccessKey: MinIOAccessKey, SecretKey: MinIOSecretKey, Region: defaultRegion}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := waitHTTP(wctx, srv.Endpoint+"/minio/health/ready", p); err != nil {
		srv.Close()
		return nil, S3{}, err
	}
	if err := cfg.CreateBucket(wctx, cfg.Bucket); err != nil {
		srv.Close()
		return nil, S3{}, err
	}
	return srv, cfg, nil
}

// Client returns an S3 client for the endpoint (path-style addressing).
func (s S3) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// CreateBucket creates a bucket (an existing one owned by us is fine).
func (s S3) CreateBucket(ctx context.Context, bucket string) error {
	var last error
	for i := 0; i < 20; i++ {
		_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		if err == nil || strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("create bucket %s: %w (last: %v)", bucket, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("create bucket %s at %s: %w", bucket, s.Endpoint, last)
}

// Env returns the KBACKUP_TEST_S3_* variables describing s.
func (s S3) Env() []string {
	return []string{
		EnvS3Endpoint + "=" + s.Endpoint,
		EnvS3Bucket + "=" + s.Bucket,
		EnvS3AccessKey + "=" + s.AccessKey,
		EnvS3SecretKey + "=" + s.SecretKey,
		EnvS3Region + "=" + s.Region,
	}
}

// AWSEnv returns AWS_* variables with s's credentials and region, for code
// that reads the standard AWS credential chain (a kbackup subprocess).
func (s S3) AWSEnv() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// SetAWSEnv sets AWSEnv in this test's environment (tb.Setenv: the test
// must not be parallel).
func (s S3) SetAWSEnv(tb testing.TB) {
	tb.Helper()
	for _, kv := range s.AWSEnv() {
		k, v, _ := strings.Cut(kv, "=")
		tb.Setenv(k, v)
	}
}

// UniquePrefix returns a fresh key prefix ("t/<test>-<random>/") so tests
// sharing a bucket do not see each other's objects.
func UniquePrefix(tb testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	// Store keys refuse ".." segments and names of dots only.
	name := strings.ReplaceAll(unsafeName.ReplaceAllString(tb.Name(), "_"), ".", "_")
	if len(name) > 60 {
		name = name[:60]
	}
	return "t/" + name + "-" + hex.EncodeToString(b[:]) + "/"
}

// Prefix returns a fresh UniquePrefix for a test's objects on s, deleted
// when the test ends if it passed (a failed test's objects stay, to look
// at). A test environment kept up for a day (kbtestenv) otherwise fills
// its disk with every run's archives.
func (s S3) Prefix(tb testing.TB) string {
	tb.Helper()
	prefix := UniquePrefix(tb)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("testenv: kept s3://%s/%s at %s", s.Bucket, prefix, s.Endpoint)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := s.DeletePrefix(ctx, prefix); err != nil {
			tb.Logf("testenv: delete s3://%s/%s: %v", s.Bucket, prefix, err)
		}
	})
	return prefix
}

// DeletePrefix deletes every object under prefix (which must end in "/",
// and not be the bucket's root) and returns how many it deleted.
func (s S3) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" || !strings.HasSuffix(prefix, "/") || strings.Trim(prefix, "/") == "" {
		return 0, fmt.Errorf("delete prefix %q: not a folder below the bucket's root", prefix)
	}
	cl := s.Client()
	n := 0
	pages := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return n, fmt.Errorf("list %s: %w", prefix, err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		out, err := cl.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(s.Bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return n, fmt.Errorf("delete under %s: %w", prefix, err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return n, fmt.Errorf("delete %s: %s: %s (and %d more)", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message), len(out.Errors)-1)
		}
		n += len(ids)
	}
	return n, nil
}

// UseMinIO returns the S3 endpoint named by KBACKUP_TEST_S3_ENDPOINT (and
// _BUCKET, _ACCESS_KEY, _SECRET_KEY, _REGION) when set, else starts MinIO
// for this test (stopped at cleanup). The test is skipped (or failed under
// KBACKUP_TEST_REQUIRE=minio) when MinIO is not installed.
func UseMinIO(tb testing.TB) S3 {
	tb.Helper()
	if ep := os.Getenv(EnvS3Endpoint); ep != "" {
		cfg := S3{
			Endpoint:  ep,
			Bucket:    envOr(EnvS3Bucket, MinIOBucket),
			AccessKey: envOr(EnvS3AccessKey, MinIOAccessKey),
			SecretKey: envOr(EnvS3SecretKey, MinIOSecretKey),
			Region:    envOr(EnvS3Region, defaultRegion),
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cfg.CreateBucket(ctx, cfg.Bucket); err != nil {
			tb.Fatalf("testenv: %s=%s: %v", EnvS3Endpoint, ep, err)
		}
		return cfg
	}
	return StartMinIOTB(tb)
}

// StartMinIOTB starts a MinIO server for this test (see UseMinIO).
func StartMinIOTB(tb testing.TB) S3 {
	tb.Helper()
	if _, err := MinIOBinary(); err != nil {
		Unavailable(tb, ComponentMinIO, "%v", err)
	}
	dir := WorkDir(tb, "minio")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	srv, cfg, err := StartMinIO(ctx, dir, false)
	if err != nil {
		tb.Fatalf("testenv: start minio: %v", err)
	}
	tb.Logf("testenv: minio ready in %s at %s (dir %s)", time.Since(start).Round(100*time.Millisecond), cfg.Endpoint, dir)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("testenv: minio log %s:\n%s", srv.LogPath, tail(srv.LogPath, 10))
		}
		if err := srv.Close(); err != nil {
			tb.Errorf("testenv: stop minio: %v", err)
		}
	})
	return cfg
}

var errNoMoto = errors.New("moto_server not installed")
