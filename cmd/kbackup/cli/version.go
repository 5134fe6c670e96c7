package cli

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/manifest"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:   "version",
		Usage:  "print the kbackup version, the Go version and the archive format version",
		Flags:  []cli.Flag{jsonFlag()},
		Action: printVersion,
	}
}

// versionInfo is what `kbackup version --json` prints.
type versionInfo struct {
	Schema        string `json:"schema"` // kbackup.version/v1
	Version       string `json:"version"`
	GoVersion     string `json:"go_version"`
	Platform      string `json:"platform"`
	FormatVersion int    `json:"format_version"`
}

func printVersion(c *cli.Context) error {
	v := versionInfo{Schema: "kbackup.version/v1", Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		FormatVersion: int(manifest.FormatVersion)}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, v)
	}
	_, err := fmt.Fprintf(c.App.Writer, "kbackup %s\nbuilt with %s %s\narchive format version %d\n",
		v.Version, v.GoVersion, v.Platform, v.FormatVersion)
	return err
}
