package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/s3store/s3fake"
)

// TestS3Store runs ls, cat and verify against an in-process S3 server
// through the --s3-* flags, and checks that ls costs a bounded number of
// requests. Not parallel: it sets the AWS credential variables.
func TestS3Store(t *testing.T) {
	fakeAWSEnv(t)
	srv, err := s3fake.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	o := srv.Options("archive")
	o.Prefix = "backups/prod"
	st, err := s3store.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	fillFixture(t, st)
	flags := []string{"--store", "s3://archive/backups/prod", "--s3-endpoint", srv.URL, "--s3-path-style"}
	env := map[string]string{"KBACKUP_S3_REGION": "us-east-1"}

	before := srv.Requests()
	out, errOut, code := runCLI(t, env, append([]string{"ls"}, flags...)...)
	if code != 0 || !strings.Contains(out, "2 topics, 4 partitions, 9 records") {
		t.Fatalf("ls: exit %d stderr %q\n%s", code, errOut, out)
	}
	// HeadBucket, GET kbackup.json, LIST topics, per topic LIST
	// incarnations (2), per incarnation GET marker (3) and LIST partitions
	// (3), per partition LIST and GET of the head (4 × 2).
	if n := srv.Requests() - before; n != 1+1+1+2+3+3+8 {
		t.Errorf("ls made %d requests, want 19", n)
	}

	out, errOut, code = runCLI(t, env, append([]string{"cat", "--topic", "orders", "--partition", "1"}, flags...)...)
	if code != 0 || out != lines(catOrders1) {
		t.Fatalf("cat: exit %d stderr %q\n%s", code, errOut, out)
	}
	out, errOut, code = runCLI(t, env, append([]string{"verify", "--topics", "orders"}, flags...)...)
	if code != 0 || !strings.HasPrefix(out, "verify OK: 1 topics, 3 partitions, 4 commits, 4 segments") {
		t.Fatalf("verify: exit %d stderr %q\n%s", code, errOut, out)
	}

	// A prefix holding no archive.
	_, errOut, code = runCLI(t, env, "ls", "--store", "s3://archive/elsewhere", "--s3-endpoint", srv.URL, "--s3-path-style")
	if code != 1 {
		t.Fatalf("empty prefix: exit %d", code)
	}
	oneLineErr(t, errOut, "no kbackup archive at s3://archive/elsewhere")
}

// fakeAWSEnv gives the AWS SDK static credentials for the in-process S3
// server and keeps it from looking anywhere else (instance metadata, the
// user's files).
func fakeAWSEnv(t *testing.T) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", "kbackup-fake-key")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "kbackup-fake-secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
}
