// Package storeurl opens a store.Store from a --store URL:
//
//	file:///abs/dir       a local directory (filestore)
//	s3://bucket/prefix    an S3 bucket and key prefix (s3store)
package storeurl

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/filestore"
	"github.com/kbackup/kbackup/store/s3store"
)

// S3Flags carry the --s3-* flags. They apply to s3:// URLs only; a
// file:// URL ignores them (they may come from the environment), but the
// SSE values are checked for either.
type S3Flags struct {
	// Endpoint is a custom endpoint URL (MinIO etc.); "" = AWS.
	Endpoint string
	// Region; "" = from the standard AWS chain, else us-east-1.
	Region string
	// PathStyle addresses buckets in the URL path (most S3-compatible servers).
	PathStyle bool
	// SSE is "", "AES256" or "aws:kms".
	SSE string
	// SSEKMSKeyID is the KMS key with SSE "aws:kms" ("" = AWS managed key).
	SSEKMSKeyID string
}

// bucketRE is the S3 bucket naming rule (3–63 characters, lowercase
// letters, digits, dots and hyphens, starting and ending alphanumeric).
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// Open parses rawURL and opens the store it names. Errors name the URL
// and say what form is expected.
func Open(ctx context.Context, rawURL string, o S3Flags) (store.Store, error) {
	if err := checkSSE(o); err != nil {
		return nil, err
	}
	u, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "file":
		s, err := filestore.New(u.Path)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", rawURL, err)
		}
		return s, nil
	default: // "s3"; Parse allows nothing else
		s, err := s3store.New(ctx, s3store.Options{
			Bucket:      u.Host,
			Prefix:      strings.Trim(u.Path, "/"),
			Endpoint:    o.Endpoint,
			Region:      o.Region,
			PathStyle:   o.PathStyle,
			SSE:         o.SSE,
			SSEKMSKeyID: o.SSEKMSKeyID,
		})
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", rawURL, err)
		}
		return s, nil
	}
}

// URL is a parsed store URL.
type URL struct {
	// Scheme is "file" or "s3".
	Scheme string
	// Host is the bucket for s3, "" for file.
	Host string
	// Path is the absolute directory for file, the key prefix (without
	// leading or trailing slash, possibly "") for s3.
	Path string
}

// Parse checks a store URL without opening anything.
func Parse(rawURL string) (URL, error) {
	bad := func(format string, args ...any) (URL, error) {
		return URL{}, fmt.Errorf("store URL %q: %s", rawURL, fmt.Sprintf(format, args...))
	}
	if rawURL == "" {
		return URL{}, fmt.Errorf("store URL is empty: use file:///abs/dir or s3://bucket/prefix")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return bad("not a URL (%v): use file:///abs/dir or s3://bucket/prefix", err)
	}
	if u.User != nil {
		// Never echo what may be a secret.
		return URL{}, fmt.Errorf("store URL must not contain credentials: use the standard AWS credential chain")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return bad("query strings and fragments are not supported")
	}
	switch u.Scheme {
	case "file":
		if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") {
			return bad("a file URL needs an absolute path: file:///abs/dir (three slashes)")
		}
		if !path.IsAbs(u.Path) {
			return bad("a file URL needs an absolute path: file:///abs/dir")
		}
		p := path.Clean(u.Path)
		if p == "/" {
			return bad("refusing to use / as the store directory")
		}
		return URL{Scheme: "file", Path: p}, nil
	case "s3":
		if u.Opaque != "" || u.Host == "" {
			return bad("an S3 URL is s3://bucket/prefix")
		}
		if u.Port() != "" {
			return bad("an S3 URL has no port: use --s3-endpoint for a custom server")
		}
		if !bucketRE.MatchString(u.Host) || strings.Contains(u.Host, "..") {
			return bad("invalid bucket name %q (3-63 lowercase letters, digits, dots, hyphens)", u.Host)
		}
		prefix := strings.Trim(u.Path, "/")
		if prefix != "" {
			if err := store.ValidateKey(prefix); err != nil {
				return bad("invalid prefix: %v", err)
			}
		}
		return URL{Scheme: "s3", Host: u.Host, Path: prefix}, nil
	case "":
		if strings.HasPrefix(rawURL, "/") {
			return bad("missing scheme: did you mean file://%s?", rawURL)
		}
		return bad("missing scheme: use file:///abs/dir or s3://bucket/prefix")
	default:
		return bad("unsupported scheme %q: use file:///abs/dir or s3://bucket/prefix", u.Scheme)
	}
}

// checkSSE validates the SSE flags.
func checkSSE(o S3Flags) error {
	switch o.SSE {
	case "", s3store.SSEAES256:
		if o.SSEKMSKeyID != "" {
			return fmt.Errorf("--s3-sse-kms-key-id needs --s3-sse %s", s3store.SSEKMS)
		}
	case s3store.SSEKMS:
	default:
		return fmt.Errorf("invalid --s3-sse %q: use %s or %s", o.SSE, s3store.SSEAES256, s3store.SSEKMS)
	}
	return nil
}
