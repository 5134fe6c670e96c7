// Package cli is the kbackup command line: it maps flags onto the options
// of the packages that do the work, and nothing more.
//
// Exit status: 0 on success; 1 when the command fails (the reason is one
// line "kbackup: <reason>" on stderr); 2 on a usage error (unknown command
// or flag, bad flag value), also one line, with a hint where to find help.
// Other statuses are documented per command (docs/CLI.md), e.g. 5 when
// `restore --dry-run` shows a plan the real run would refuse.
//
// Every flag also reads the environment variable KBACKUP_<FLAG> (upper
// snake case: --s3-endpoint reads KBACKUP_S3_ENDPOINT). A flag on the
// command line wins over the environment. The global flags (--store,
// --brokers, --s3-*, --log-*) may be given before or after the command
// name: `kbackup --store S ls` and `kbackup ls --store S` are the same.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Version is the kbackup version, set at build time with
// -ldflags "-X github.com/kbackup/kbackup/cmd/kbackup/cli.Version=...".
var Version = "dev"

// Exit statuses (docs/CLI.md).
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
	// ExitDataLoss: archive --once finished, but offsets were recorded as
	// DATA-LOSS gaps (retention deleted them before they were archived).
	ExitDataLoss = 3
	// ExitNothingSelected: archive --once found no topic matching
	// --topics/--exclude in the cluster.
	ExitNothingSelected = 4
	// ExitRefused: `restore --dry-run` printed a plan that the real run
	// would refuse (the refusals are listed with the plan).
	ExitRefused = 5
)

// exitError ends a command with a specific exit status and a one-line
// reason on stderr.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Run runs the kbackup command line args (args[0] is the program name)
// with the given output streams and returns the exit status. main calls it;
// so do tests.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, os.LookupEnv)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	err := newApp(stdout, stderr, lookupEnv).RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(stderr, "kbackup: %s\n", oneLine(ee.err.Error()))
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "kbackup: %s (see '%s --help')\n", oneLine(ue.err.Error()), ue.cmd)
		return ExitUsage
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		fmt.Fprintf(stderr, "kbackup: interrupted\n")
		return ExitFailure
	}
	fmt.Fprintf(stderr, "kbackup: %s\n", oneLine(err.Error()))
	return ExitFailure
}

// NewApp returns the kbackup application writing to stdout and stderr and
// reading the process environment. Every call builds fresh flags, so apps
// can run concurrently.
func NewApp(stdout, stderr io.Writer) *cli.App {
	return newApp(stdout, stderr, os.LookupEnv)
}

// metaEnv is the App.Metadata key of the environment lookup function.
const metaEnv = "lookupEnv"

func newApp(stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) *cli.App {
	app := &cli.App{
		Name:  "kbackup",
		Usage: "back up Kafka topics to an object store, verify and restore them",
		Description: "kbackup archives every partition of the selected topics, in offset order, into\n" +
			"immutable compressed segments in S3 or a local directory, lists and verifies\n" +
			"the archive, and prints or restores any range of it.",
		Writer:    stdout,
		ErrWriter: stderr,
		// Help is a flag per command (helpFlag): urfave/cli's shared global
		// help flag and command would make concurrent apps race.
		HideHelp:        true,
		HideHelpCommand: true,
		HideVersion:     true,
		Flags:           append(globalFlags(), versionFlag(), helpFlag()),
		Metadata:        map[string]any{metaEnv: lookupEnv},
		OnUsageError:    onUsageError,
		ExitErrHandler:  func(*cli.Context, error) {}, // only main exits
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				return printVersion(c)
			}
			if c.Args().Present() {
				return &usageError{cmd: "kbackup", err: fmt.Errorf("unknown command %q", c.Args().First())}
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{versionCommand(), archiveCommand(), lsCommand(), catCommand(), verifyCommand(), expireCommand(), demoCommand(), restoreCommand(), offsetsCommand(), snapshotCommand(), completionCommand()},
	}
	for _, cmd := range app.Commands {
		cmd.HideHelp, cmd.HideHelpCommand = true, true
		cmd.OnUsageError = onUsageError
		cmd.Flags = append(cmd.Flags, helpFlag())
		if cmd.Name != "completion" {
			cmd.Before = noArgs
		}
		assignEnv(cmd, cmd.Name)
	}
	return app
}

func helpFlag() cli.Flag {
	return &cli.BoolFlag{Name: "help", Aliases: []string{"h"}, Usage: "show help"}
}

// usageError is a mistake on the command line; cmd names the command whose
// help explains it.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(c *cli.Context, format string, args ...any) error {
	return &usageError{cmd: commandName(c), err: fmt.Errorf(format, args...)}
}

func commandName(c *cli.Context) string {
	if c.Command != nil && c.Command.HelpName != "" {
		return c.Command.HelpName
	}
	return "kbackup"
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return &usageError{cmd: commandName(c), err: err}
}

// noArgs refuses positional arguments: every kbackup input is a flag.
func noArgs(c *cli.Context) error {
	if c.Args().Present() && (c.Command == nil || len(c.Command.Subcommands) == 0) { // a command with subcommands dispatches its arguments
		return usagef(c, "unexpected argument %q", c.Args().First())
	}
	return nil
}

// oneLine folds a multi-line message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// session is what every command needs: its output streams, the logger and
// the resolved global flags.
type session struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	g              globals
}

// setup resolves the global flags and builds the logger.
func setup(c *cli.Context) (*session, error) {
	g, err := resolveGlobals(c)
	if err != nil {
		return nil, err
	}
	log, err := newLogger(c.App.ErrWriter, g.logLevel, g.logFormat)
	if err != nil {
		return nil, usagef(c, "%v", err)
	}
	return &session{stdout: c.App.Writer, stderr: c.App.ErrWriter, log: log, g: g}, nil
}

// newLogger returns a slog logger writing to w at level (debug, info, warn,
// error) in format (text, json).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "", "info":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: use text or json", format)
}
