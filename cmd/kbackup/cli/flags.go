package cli

import (
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Global flag names.
const (
	flagStore           = "store"
	flagBrokers         = "brokers"
	flagS3Endpoint      = "s3-endpoint"
	flagS3Region        = "s3-region"
	flagS3PathStyle     = "s3-path-style"
	flagS3SSE           = "s3-sse"
	flagS3SSEKMSKeyID   = "s3-sse-kms-key-id"
	flagLogLevel        = "log-level"
	flagLogFormat       = "log-format"
	flagBootstrapServer = "bootstrap-server" // the Kafka tools' name for --brokers
	globalFlagCategory  = "Global"
)

// EnvVar is the environment variable a flag reads: KBACKUP_ and the flag
// name in upper snake case (--s3-endpoint: KBACKUP_S3_ENDPOINT).
func EnvVar(flag string) string {
	return "KBACKUP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// CommandEnvVar is the command-scoped environment variable of a command's
// own flag: KBACKUP_<COMMAND>_<FLAG> (--topics of restore:
// KBACKUP_RESTORE_TOPICS; subcommands share their top command's scope:
// KBACKUP_SNAPSHOT_CONFIG).
func CommandEnvVar(command, flag string) string {
	return EnvVar(command + "-" + flag)
}

// archiverOnlyEnv are the flags whose short variable (KBACKUP_TOPICS, ...)
// belongs to the archiver: they configure its Deployment or systemd unit,
// so an env file shared with other commands must not change what ls, cat,
// verify, restore or offsets select. Those commands read only their
// command-scoped variable for these flags.
var archiverOnlyEnv = map[string]bool{"topics": true, "exclude": true, "groups": true}

// assignEnv gives every flag of cmd (and its subcommands) its environment
// variables (the one place that rule lives; documented in docs/CLI.md):
//   - the Kafka connection flags read KBACKUP_<FLAG> in every command;
//   - a command's own flag reads KBACKUP_<COMMAND>_<FLAG> first, then
//     KBACKUP_<FLAG>, except --topics, --exclude and --groups outside
//     archive (see archiverOnlyEnv);
//   - the global flags are resolved by resolveGlobals (KBACKUP_<FLAG>).
func assignEnv(cmd *cli.Command, top string) {
	for _, f := range cmd.Flags {
		name := f.Names()[0]
		var vars []string
		switch {
		case flagCategory(f) == globalFlagCategory || name == "help":
			continue
		case flagCategory(f) == kafkaFlagCategory:
			vars = []string{EnvVar(name)}
		case archiverOnlyEnv[name] && top != "archive":
			vars = []string{CommandEnvVar(top, name)}
		default:
			vars = []string{CommandEnvVar(top, name), EnvVar(name)}
		}
		setEnvVars(f, vars)
	}
	for _, sub := range cmd.Subcommands {
		assignEnv(sub, top)
	}
}

func flagCategory(f cli.Flag) string {
	if cf, ok := f.(cli.CategorizableFlag); ok {
		return cf.GetCategory()
	}
	return ""
}

func setEnvVars(f cli.Flag, vars []string) {
	switch f := f.(type) {
	case *cli.StringFlag:
		f.EnvVars = vars
	case *cli.StringSliceFlag:
		f.EnvVars = vars
	case *cli.BoolFlag:
		f.EnvVars = vars
	case *cli.IntFlag:
		f.EnvVars = vars
	case *cli.Int64Flag:
		f.EnvVars = vars
	case *cli.DurationFlag:
		f.EnvVars = vars
	case *cli.GenericFlag:
		f.EnvVars = vars
	}
	// A flag of another type reads no environment variable:
	// TestEveryFlagReadsTheEnvironment fails until it is added here.

}

// envUsage appends the environment variable to a global flag's usage text
// (global flags have no EnvVars, see globalFlags).
func envUsage(name, usage string) string { return usage + " [$" + EnvVar(name) + "]" }

// globalFlags returns fresh global flags. They are defined on the app and
// on every command that uses them, so they may be given before or after
// the command name. They deliberately do not use urfave/cli's EnvVars: a
// variable would then count as set on the command and hide a value given
// before the command name. resolveGlobals reads the environment after the
// command line instead.
func globalFlags() []cli.Flag {
	str := func(name, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, Usage: envUsage(name, usage), Category: globalFlagCategory}
	}
	return []cli.Flag{
		str(flagStore, "archive `URL`: file:///abs/dir or s3://bucket/prefix"),
		&cli.StringSliceFlag{Name: flagBrokers, Aliases: []string{flagBootstrapServer},
			Usage: envUsage(flagBrokers, "Kafka seed brokers, a comma-separated list of `host:port` (--bootstrap-server is the same flag)"), Category: globalFlagCategory},
		str(flagS3Endpoint, "custom S3 endpoint `URL` (MinIO etc.) (default: AWS)"),
		str(flagS3Region, "S3 `region` (default: from the AWS chain, else us-east-1)"),
		&cli.BoolFlag{Name: flagS3PathStyle, Usage: envUsage(flagS3PathStyle, "address buckets in the URL path (most S3-compatible servers)"), Category: globalFlagCategory},
		str(flagS3SSE, "S3 server-side `encryption`: AES256 or aws:kms (default: the bucket's)"),
		str(flagS3SSEKMSKeyID, "KMS key `id` for --s3-sse aws:kms (default: the AWS managed key)"),
		&cli.StringFlag{Name: flagLogLevel, Value: "info", Usage: envUsage(flagLogLevel, "log `level`: debug, info, warn or error"), Category: globalFlagCategory},
		&cli.StringFlag{Name: flagLogFormat, Value: "text", Usage: envUsage(flagLogFormat, "log `format`: text or json"), Category: globalFlagCategory},
	}
}

// globals are the resolved global flags.
type globals struct {
	store       string
	brokers     []string
	s3Endpoint  string
	s3Region    string
	s3PathStyle bool
	s3SSE       string
	s3KMSKeyID  string
	logLevel    string
	logFormat   string
}

// flagValue returns the value of a global flag: from the command line
// nearest the command (after the command name wins over before it), else
// from its environment variable, else "" (set == false).
func flagValue(c *cli.Context, name string) (cmdline *cli.Context, env string, set bool) {
	for _, cc := range c.Lineage() {
		if cc.Command == nil {
			continue
		}
		for _, n := range cc.LocalFlagNames() {
			if n == name || name == flagBrokers && n == flagBootstrapServer {
				return cc, "", true
			}
		}
	}
	if lookup, ok := c.App.Metadata[metaEnv].(func(string) (string, bool)); ok {
		if v, ok := lookup(EnvVar(name)); ok {
			return nil, v, true
		}
	}
	return nil, "", false
}

func globalString(c *cli.Context, name string) string {
	cc, env, _ := flagValue(c, name)
	if cc != nil {
		return cc.String(name)
	}
	return env
}

func resolveGlobals(c *cli.Context) (globals, error) {
	g := globals{
		store:      globalString(c, flagStore),
		s3Endpoint: globalString(c, flagS3Endpoint),
		s3Region:   globalString(c, flagS3Region),
		s3SSE:      globalString(c, flagS3SSE),
		s3KMSKeyID: globalString(c, flagS3SSEKMSKeyID),
		logLevel:   globalString(c, flagLogLevel),
		logFormat:  globalString(c, flagLogFormat),
	}
	if cc, env, set := flagValue(c, flagBrokers); cc != nil {
		g.brokers = splitList(strings.Join(cc.StringSlice(flagBrokers), ","))
	} else if set {
		g.brokers = splitList(env)
	}
	if cc, env, set := flagValue(c, flagS3PathStyle); cc != nil {
		g.s3PathStyle = cc.Bool(flagS3PathStyle)
	} else if set && env != "" {
		v, err := strconv.ParseBool(env)
		if err != nil {
			return g, usagef(c, "invalid %s %q: want true or false", EnvVar(flagS3PathStyle), env)
		}
		g.s3PathStyle = v
	}
	return g, nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
