package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// EC2 describes an EC2 API endpoint (moto_server here).
type EC2 struct {
	Endpoint  string // http://127.0.0.1:port
	Region    string
	AccessKey string // moto accepts any credentials
	SecretKey string
}

// MotoBinary returns moto_server ($KBACKUP_MOTO_BIN, the cache's venv, or PATH).
func MotoBinary() (string, error) {
	if p := os.Getenv("KBACKUP_MOTO_BIN"); p != "" {
		return p, nil
	}
	venv := filepath.Join(CacheDir(), "venv")
	p := filepath.Join(venv, "bin", "moto_server")
	if _, err := os.Stat(filepath.Join(venv, ".complete")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("moto_server"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("moto: no moto_server in %s or PATH (run testenv/install.sh python): %w: %w", filepath.Dir(p), errNoMoto, ErrNotInstalled)
}

// StartMoto starts moto_server on a free port (log under dir) and waits
// until it answers.
func StartMoto(ctx context.Context, dir string, detached bool) (*Server, EC2, error) {
	bin, err := MotoBinary()
	if err != nil {
		return nil, EC2{}, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, EC2{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, EC2{}, err
	}
	p, err := startProc(procSpec{
		Name:     "moto_server",
		Path:     bin,
		Args:     []string{"-H", "127.0.0.1", "-p", fmt.Sprint(ports[0])},
		Dir:      dir,
		LogPath:  filepath.Join(dir, "moto.log"),
		Detached: detached,
	})
	if err != nil {
		return nil, EC2{}, err
	}
	srv := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), Dir: dir, LogPath: p.spec.LogPath, proc: p}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := waitHTTP(wctx, srv.Endpoint+"/moto-api/", p); err != nil {
		srv.Close()
		return nil, EC2{}, err
	}
	return srv, EC2{Endpoint: srv.Endpoint, Region: defaultRegion, AccessKey: "testing", SecretKey: "testing"}, nil
}

// Env returns the KBACKUP_TEST_EC2_ENDPOINT variable describing e.
func (e EC2) Env() []string { return []string{EnvEC2Endpoint + "=" + e.Endpoint} }

// AWSEnv returns AWS_* variables for an AWS SDK talking to e.
func (e EC2) AWSEnv() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + e.AccessKey, "AWS_SECRET_ACCESS_KEY=" + e.SecretKey,
		"AWS_REGION=" + e.Region, "AWS_EC2_METADATA_DISABLED=true"}
}

// UseMoto returns the EC2 endpoint named by KBACKUP_TEST_EC2_ENDPOINT when
// set, else starts moto_server for this test (stopped at cleanup). The
// test is skipped (or failed under KBACKUP_TEST_REQUIRE=moto) when moto is
// not installed.
func UseMoto(tb testing.TB) EC2 {
	tb.Helper()
	if ep := os.Getenv(EnvEC2Endpoint); ep != "" {
		return EC2{Endpoint: ep, Region: defaultRegion, AccessKey: "testing", SecretKey: "testing"}
	}
	return NewMoto(tb)
}

// NewMoto always starts a moto_server of this test's own (stopped at
// cleanup), for tests whose EC2 resources must be alone, e.g. found by
// fixed tags. Skipped or failed as UseMoto when moto is not installed.
func NewMoto(tb testing.TB) EC2 {
	tb.Helper()
	if _, err := MotoBinary(); err != nil {
		Unavailable(tb, ComponentMoto, "%v", err)
	}
	dir := WorkDir(tb, "moto")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	srv, cfg, err := StartMoto(ctx, dir, false)
	if err != nil {
		tb.Fatalf("testenv: start moto: %v", err)
	}
	tb.Logf("testenv: moto_server ready in %s at %s", time.Since(start).Round(100*time.Millisecond), cfg.Endpoint)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("testenv: moto log %s:\n%s", srv.LogPath, tail(srv.LogPath, 10))
		}
		if err := srv.Close(); err != nil {
			tb.Errorf("testenv: stop moto: %v", err)
		}
	})
	return cfg
}
