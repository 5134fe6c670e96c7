package cli

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/manifest"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the kbackup version, the Go version and the archive format version",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintf(c.App.Writer, "kbackup %s\nbuilt with %s %s/%s\narchive format version %d\n",
				Version, runtime.Version(), runtime.GOOS, runtime.GOARCH, manifest.FormatVersion)
			return err
		},
	}
}
