// Package s3store implements store.Store on Amazon S3 and S3-compatible
// servers (MinIO, Ceph, gofakes3).
//
// Objects up to PartSize are written with one PutObject; larger ones with a
// multipart upload whose parts are uploaded one at a time from one reused
// buffer, so a Put holds at most PartSize bytes (rounded up so that an
// object fits in 10,000 parts) of memory. IfNotExists uses If-None-Match: *
// on PutObject, and on CompleteMultipartUpload for multipart objects (AWS
// S3 enforces both; some S3-compatible servers only the first). A failed
// multipart upload is aborted; a bucket lifecycle rule
// AbortIncompleteMultipartUpload cleans up after a crashed process.
//
// Transient errors (5xx, throttling, timeouts, connection resets) are
// retried by the SDK's standard retryer with exponential backoff and
// jitter; errors no retry can fix (access denied, no such bucket, bad
// credentials, wrong region) wrap store.ErrPermanent.
package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"

	"github.com/kbackup/kbackup/internal/bufpool"
	"github.com/kbackup/kbackup/store"
)

var _ store.Store = (*Store)(nil)

// Defaults for the zero values of Options.
const (
	DefaultPartSize   int64 = 16 << 20
	DefaultMaxRetries       = 8
	DefaultMaxBackoff       = 20 * time.Second
	// maxParts is S3's limit on the parts of one multipart upload.
	maxParts = 10000
)

// Valid values of Options.SSE.
const (
	SSEAES256 = "AES256"
	SSEKMS    = "aws:kms"
)

// Valid non-empty values of Options.Checksums.
const (
	ChecksumCRC32 = "crc32"
	ChecksumNone  = "none"
)

// Options configure a Store. The zero value of each field is documented.
type Options struct {
	// Bucket is the bucket name (required); Prefix is the key prefix
	// inside it, without leading or trailing slash ("" = bucket root).
	// Both come from s3://bucket/prefix.
	Bucket, Prefix string
	// Endpoint is a custom endpoint URL (MinIO, gofakes3); "" = AWS.
	Endpoint string
	// Region; "" = from the standard chain (AWS_REGION, shared config),
	// falling back to us-east-1.
	Region string
	// PathStyle addresses the bucket in the URL path instead of the host
	// name (needed by most S3-compatible servers).
	PathStyle bool
	// SSE is the server-side encryption: "" (bucket default), "AES256"
	// or "aws:kms".
	SSE string
	// SSEKMSKeyID is the KMS key with SSE "aws:kms"; "" = the AWS managed key.
	SSEKMSKeyID string
	// PartSize is the multipart part size; 0 = 16 MiB. Objects larger than
	// PartSize are uploaded in parts. AWS requires at least 5 MiB; smaller
	// values are for tests against fakes.
	PartSize int64
	// MaxRetries is how often a failed request is retried; 0 = 8. Use a
	// negative value for no retries.
	MaxRetries int
	// MaxBackoff caps the delay between retries; 0 = 20 s.
	MaxBackoff time.Duration
	// Checksums selects upload checksums: "" = CRC32 on AWS and none with
	// a custom Endpoint (many S3-compatible servers lack them), "crc32",
	// or "none".
	Checksums string
	// HTTPClient, when set, sends the requests (a custom transport or
	// proxy; tests inject faults with it); nil = the SDK's.
	HTTPClient *http.Client
	// Credentials, when set, sign the requests; nil = the standard chain
	// (environment, shared config and credentials files, web identity,
	// ECS/EC2 roles).
	Credentials aws.CredentialsProvider
}

// Store is a store.Store on one S3 bucket and prefix. It is safe for
// concurrent use.
type Store struct {
	client   *s3.Client
	bucket   string
	prefix   string // "" or ending in "/"
	partSize int64
	sse      string
	kmsKey   string
	// checksums: add CRC32 checksums to uploads (AWS); off for custom
	// endpoints, where many servers do not support them.
	checksums bool
	desc      string
	// stageParts holds the staged objects' part buffers (StageAt, Stage):
	// stagePart bytes, and stageReserveRoom past it.
	stageParts *bufpool.Pool
	stagePart  int
	// sweptAt is when Stage last swept dead temporary objects (sweepDue).
	sweepMu sync.Mutex
	sweptAt time.Time
}

// New returns a Store for o after checking that the bucket is reachable
// (HeadBucket). Errors that retrying cannot fix wrap store.ErrPermanent.
func New(ctx context.Context, o Options) (*Store, error) {
	if err := validate(&o); err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	s := &Store{
		bucket:    o.Bucket,
		partSize:  o.PartSize,
		sse:       o.SSE,
		kmsKey:    o.SSEKMSKeyID,
		checksums: o.Checksums == ChecksumCRC32 || (o.Checksums == "" && o.Endpoint == ""),
	}
	s.stagePart = int(min(s.partSize, maxStagePart))
	s.stageParts = bufpool.New(s.stagePart+stageReserveRoom, stageKeepIdle, stageIdleTime)
	if o.Prefix != "" {
		s.prefix = o.Prefix + "/"
	}
	s.desc = "s3://" + o.Bucket + "/" + o.Prefix
	if o.Endpoint != "" {
		s.desc += " (endpoint " + redactURL(o.Endpoint) + ")"
	}

	maxAttempts := o.MaxRetries + 1
	backoff := o.MaxBackoff
	var loadOpts []func(*config.LoadOptions) error
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	if o.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(o.Credentials))
	}
	if o.HTTPClient != nil {
		loadOpts = append(loadOpts, config.WithHTTPClient(o.HTTPClient))
	}
	loadOpts = append(loadOpts, config.WithLogger(logging.Nop{}), config.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = maxAttempts
			so.MaxBackoff = backoff
			// A long-running archiver must not run out of retry tokens
			// during an outage; each request gets its full attempts.
			so.RateLimiter = ratelimit.None
		})
	}))
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: load AWS configuration: %w", s.desc, err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	s.client = s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.UsePathStyle = o.PathStyle
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		if !s.checksums {
			so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		}
		// Ranged reads carry no checksum S3 could check; the archive
		// format has its own.
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		// Never print: the SDK's default logger writes to stderr.
		so.Logger = logging.Nop{}
	})

	if cfg.Credentials == nil {
		return nil, fmt.Errorf("s3 store %s: no AWS credentials configured: %w", s.desc, store.ErrPermanent)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("s3 store %s: %w", s.desc, ctx.Err())
		}
		// The provider's message names the sources it tried, never a secret.
		return nil, fmt.Errorf("s3 store %s: no usable AWS credentials (environment, shared config, web identity, instance role): %w: %w", s.desc, store.ErrPermanent, err)
	}
	// Fail fast: a few attempts, not the full retry budget.
	_, err = s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}, func(so *s3.Options) {
		so.Retryer = retry.AddWithMaxAttempts(so.Retryer, min(maxAttempts, 3))
	})
	if err != nil {
		return nil, s.wrap("open", "", err)
	}
	return s, nil
}

// validate checks o and fills in defaults.
func validate(o *Options) error {
	if o.Bucket == "" {
		return errors.New("bucket name is empty")
	}
	if strings.ContainsAny(o.Bucket, "/") {
		return fmt.Errorf("bucket name %q contains a slash", o.Bucket)
	}
	if o.Prefix != "" {
		if err := store.ValidateKey(o.Prefix); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	switch o.SSE {
	case "", SSEAES256:
		if o.SSEKMSKeyID != "" {
			return fmt.Errorf("an SSE KMS key ID needs SSE %q", SSEKMS)
		}
	case SSEKMS:
	default:
		return fmt.Errorf("unknown SSE %q: use %q or %q", o.SSE, SSEAES256, SSEKMS)
	}
	switch o.Checksums {
	case "", ChecksumCRC32, ChecksumNone:
	default:
		return fmt.Errorf("unknown checksums %q: use %q or %q", o.Checksums, ChecksumCRC32, ChecksumNone)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("endpoint %q is not an http(s) URL", redactURL(o.Endpoint))
		}
	}
	if o.PartSize < 0 {
		return fmt.Errorf("negative part size %d", o.PartSize)
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	return nil
}

// redactURL drops any user info from an endpoint URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

// String returns "s3://bucket/prefix", plus the endpoint if custom.
func (s *Store) String() string { return s.desc }

// objectKey is the S3 key of store key.
func (s *Store) objectKey(key string) string { return s.prefix + key }

// url names key for error messages.
func (s *Store) url(key string) string {
	return "s3://" + s.bucket + "/" + s.prefix + key
}
