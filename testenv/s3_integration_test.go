//go:build integration

package testenv_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/s3store"
	"github.com/kbackup/kbackup/store/storetest"
	"github.com/kbackup/kbackup/testenv"
)

func TestMinIOBucket(t *testing.T) {
	m := testenv.UseMinIO(t)
	ctx := context.Background()
	key := testenv.UniquePrefix(t) + "hello"
	cl := m.Client()
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(m.Bucket), Key: aws.String(key), Body: strings.NewReader("hi")}); err != nil {
		t.Fatal(err)
	}
	out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(m.Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	if b, _ := io.ReadAll(out.Body); string(b) != "hi" {
		t.Fatalf("got %q", b)
	}
}

// A test's Prefix is deleted when it passes, and nothing beside it;
// DeletePrefix refuses the bucket's root.
func TestMinIOPrefixDeleted(t *testing.T) {
	m := testenv.UseMinIO(t)
	ctx := context.Background()
	cl := m.Client()
	put := func(key string) {
		t.Helper()
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(m.Bucket), Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(prefix string) int {
		t.Helper()
		out, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(m.Bucket), Prefix: aws.String(prefix)})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Contents)
	}
	beside := testenv.UniquePrefix(t)
	put(beside + "keep")
	var prefix string
	t.Run("passes", func(t *testing.T) {
		prefix = m.Prefix(t)
		for i := 0; i < 1500; i++ { // more than one page of a listing
			put(prefix + "o/" + strconv.Itoa(i))
		}
		put(strings.TrimSuffix(prefix, "/") + "x") // a sibling sharing the name's start
	})
	if n := count(prefix); n != 0 {
		t.Fatalf("%d objects left under the passed test's prefix %s", n, prefix)
	}
	if count(beside) != 1 || count(strings.TrimSuffix(prefix, "/")+"x") != 1 {
		t.Fatal("objects beside the prefix were deleted")
	}
	for _, bad := range []string{"", "/", "t"} {
		if _, err := m.DeletePrefix(ctx, bad); err == nil {
			t.Errorf("DeletePrefix(%q) accepted", bad)
		}
	}
	if n, err := m.DeletePrefix(ctx, beside); err != nil || n != 1 {
		t.Fatalf("DeletePrefix(%s) = %d, %v", beside, n, err)
	}
	if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(m.Bucket), Key: aws.String(strings.TrimSuffix(prefix, "/") + "x")}); err != nil {
		t.Fatal(err)
	}
}

// MinIO enforces the real S3 5 MiB minimum part size.
const minioPartSize = 5 << 20

// TestStoreConformanceMinIO runs the store conformance suite with s3store
// against a real MinIO server, without and with upload checksums.
func TestStoreConformanceMinIO(t *testing.T) {
	m := testenv.UseMinIO(t)
	for _, checksums := range []string{"none", s3store.ChecksumCRC32} {
		t.Run("checksums="+checksums, func(t *testing.T) {
			prefix := testenv.UniquePrefix(t)
			storetest.Run(t, func(t *testing.T) store.Store {
				o := m.StoreOptions(prefix)
				o.PartSize = minioPartSize
				o.Checksums = checksums
				s, err := s3store.New(t.Context(), o)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}, storetest.LargeObject(2*minioPartSize+123),
				// MinIO lists a key's uploads only (ListMultipartUploads
				// with the object's name), so a sweep by prefix finds
				// nothing there; it removes stale uploads itself after
				// 24 h (api stale_uploads_expiry).
				storetest.NoUploadSweep("MinIO lists incomplete uploads per object only"))
		})
	}
}

// TestProbeConditionalCreateMinIO: MinIO honours If-None-Match, so the
// writers' probe (manifest.ProbeConditionalCreate) accepts it.
func TestProbeConditionalCreateMinIO(t *testing.T) {
	m := testenv.UseMinIO(t)
	st, err := s3store.New(t.Context(), m.StoreOptions(testenv.UniquePrefix(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := manifest.ProbeConditionalCreate(t.Context(), st); err != nil {
		t.Fatalf("MinIO refused by the probe: %v", err)
	}
}

// TestMotoEC2 drives moto's EC2 Query API directly (no EC2 SDK needed
// here): create a volume, snapshot it, list the snapshot.
func TestMotoEC2(t *testing.T) {
	e := testenv.UseMoto(t)
	call := func(params url.Values) string {
		t.Helper()
		params.Set("Version", "2016-11-15")
		req, err := http.NewRequest("POST", e.Endpoint+"/", strings.NewReader(params.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+e.AccessKey+"/20260101/"+e.Region+"/ec2/aws4_request, SignedHeaders=host, Signature=0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s: %s", params.Get("Action"), resp.Status, b)
		}
		return string(b)
	}
	vol := call(url.Values{"Action": {"CreateVolume"}, "AvailabilityZone": {e.Region + "a"}, "Size": {"1"}})
	id := between(vol, "<volumeId>", "</volumeId>")
	if !strings.HasPrefix(id, "vol-") {
		t.Fatalf("CreateVolume: %s", vol)
	}
	snap := call(url.Values{"Action": {"CreateSnapshot"}, "VolumeId": {id}, "Description": {"kbackup testenv"}})
	sid := between(snap, "<snapshotId>", "</snapshotId>")
	if !strings.HasPrefix(sid, "snap-") {
		t.Fatalf("CreateSnapshot: %s", snap)
	}
	list := call(url.Values{"Action": {"DescribeSnapshots"}, "SnapshotId.1": {sid}})
	if !bytes.Contains([]byte(list), []byte(id)) {
		t.Fatalf("DescribeSnapshots does not show volume %s: %s", id, list)
	}
}

func between(s, a, b string) string {
	_, rest, ok := strings.Cut(s, a)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, b)
	return v
}
