package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/internal/topicsel"
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

// topicFlags are --topics and --exclude of a command that reads topics;
// selection reads them back.
func topicFlags(what string) []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "topics", Usage: "only " + what + " whose whole name matches `REGEX` (repeatable; default: every topic but internal __ ones)"},
		&cli.StringSliceFlag{Name: "exclude", Usage: "skip topics whose whole name matches `REGEX` (repeatable)"},
	}
}

// selection compiles --topics and --exclude under the one topic selection
// rule (package topicsel, docs/CLI.md); nil selects every non-internal
// topic.
func selection(c *cli.Context) (*topicsel.Selector, error) {
	sel, err := topicsel.Compile(c.StringSlice("topics"), c.StringSlice("exclude"))
	if err != nil {
		return nil, usagef(c, "--topics/--exclude: %v", err)
	}
	return sel, nil
}
