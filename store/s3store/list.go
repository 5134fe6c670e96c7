package s3store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kbackup/kbackup/store"
)

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// List implements store.Store with paginated ListObjectsV2. S3 returns
// keys and common prefixes in two lists per page; they are merged so that
// fn sees one ascending sequence.
func (s *Store) List(ctx context.Context, opts store.ListOptions, fn func(store.ListEntry) error) error {
	if opts.Delimiter != "" && opts.Delimiter != "/" {
		return fmt.Errorf("list %s: unsupported delimiter %q (only \"/\")", s, opts.Delimiter)
	}
	if opts.Limit < 0 {
		return fmt.Errorf("list %s: negative limit %d", s, opts.Limit)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", s, err)
	}
	in := &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + opts.Prefix),
	}
	if opts.Delimiter != "" {
		in.Delimiter = aws.String(opts.Delimiter)
	}
	if opts.StartAfter != "" {
		in.StartAfter = aws.String(s.prefix + opts.StartAfter)
	}
	n := 0
	for {
		if opts.Limit > 0 {
			in.MaxKeys = aws.Int32(int32(min(opts.Limit-n, 1000)))
		}
		out, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			return s.wrap("list", opts.Prefix+"*", err)
		}
		keys, prefixes := out.Contents, out.CommonPrefixes
		for len(keys) > 0 || len(prefixes) > 0 {
			var e store.ListEntry
			if len(prefixes) == 0 || (len(keys) > 0 && aws.ToString(keys[0].Key) < aws.ToString(prefixes[0].Prefix)) {
				e = store.ListEntry{Key: aws.ToString(keys[0].Key), Size: aws.ToInt64(keys[0].Size)}
				keys = keys[1:]
			} else {
				e = store.ListEntry{Key: aws.ToString(prefixes[0].Prefix), IsPrefix: true}
				prefixes = prefixes[1:]
			}
			k, ok := strings.CutPrefix(e.Key, s.prefix)
			if !ok {
				continue // not below our prefix: cannot happen with a conforming server
			}
			e.Key = k
			if err := fn(e); err != nil {
				return err
			}
			n++
			if opts.Limit > 0 && n >= opts.Limit {
				return nil
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}
