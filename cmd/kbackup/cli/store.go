package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/store/storeurl"
)

// openArchive opens the archive named by --store for reading. A local
// directory that does not exist is reported as such rather than created:
// reading commands change nothing.
func openArchive(ctx context.Context, c *cli.Context, s *session) (*manifest.Archive, error) {
	raw := s.g.store
	if raw == "" {
		return nil, usagef(c, "no archive given: use --store URL or %s (file:///abs/dir or s3://bucket/prefix)", EnvVar(flagStore))
	}
	u, err := storeurl.Parse(raw)
	if err != nil {
		return nil, usagef(c, "%v", err)
	}
	if u.Scheme == "file" {
		fi, err := os.Stat(u.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w at %s (the directory does not exist: wrong --store, or nothing archived yet)", manifest.ErrNoArchive, raw)
		case err != nil:
			return nil, fmt.Errorf("store %s: %w", raw, err)
		case !fi.IsDir():
			return nil, fmt.Errorf("%w at %s (not a directory)", manifest.ErrNoArchive, raw)
		}
	}
	st, err := storeurl.Open(ctx, raw, storeurl.S3Flags{
		Endpoint:    s.g.s3Endpoint,
		Region:      s.g.s3Region,
		PathStyle:   s.g.s3PathStyle,
		SSE:         s.g.s3SSE,
		SSEKMSKeyID: s.g.s3KMSKeyID,
	})
	if err != nil {
		return nil, err
	}
	s.log.Debug("opening archive", "store", st.String())
	return manifest.Open(ctx, st)
}

// topicFilter compiles a --topics regular expression, matched against the
// whole topic name; "" selects every topic.
func topicFilter(c *cli.Context, pattern string) (func(string) bool, error) {
	if pattern == "" {
		return nil, nil
	}
	re, err := regexp.Compile(`^(?:` + pattern + `)$`)
	if err != nil {
		return nil, usagef(c, "invalid --topics regular expression %q: %v", pattern, err)
	}
	return re.MatchString, nil
}
