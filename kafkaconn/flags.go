package kafkaconn

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Flag names, shared by Flags and FromContext. Each flag also reads the
// environment variable EnvVar(name), e.g. KBACKUP_TLS_CA for --tls-ca.
const (
	FlagBrokers               = "brokers"
	FlagClientID              = "client-id"
	FlagTLS                   = "tls"
	FlagTLSCA                 = "tls-ca"
	FlagTLSCert               = "tls-cert"
	FlagTLSKey                = "tls-key"
	FlagTLSServerName         = "tls-server-name"
	FlagTLSInsecureSkipVerify = "tls-insecure-skip-verify"
	FlagSASLMechanism         = "sasl-mechanism"
	FlagSASLUsername          = "sasl-username"
	FlagSASLPassword          = "sasl-password"
	FlagSASLPasswordFile      = "sasl-password-file"
	FlagAWSRegion             = "aws-region"
	FlagDialTimeout           = "dial-timeout"
)

// flagCategory groups the connection flags in --help.
const flagCategory = "Kafka connection"

// EnvVar returns the environment variable a flag reads: KBACKUP_ followed by
// the flag name in upper snake case (--tls-ca reads KBACKUP_TLS_CA).
func EnvVar(flag string) string {
	return "KBACKUP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// BrokersFlag returns the --brokers flag (a comma-separated list, repeatable,
// env KBACKUP_BROKERS), for a CLI that defines it once at the top level and
// passes Flags(false) to its subcommands.
func BrokersFlag() cli.Flag {
	return &cli.StringSliceFlag{
		Name:     FlagBrokers,
		Usage:    "Kafka seed brokers, `host:port,...`",
		EnvVars:  []string{EnvVar(FlagBrokers)},
		Category: flagCategory,
	}
}

// Flags returns fresh urfave/cli flags for every Options field but Logger;
// with includeBrokers false it leaves out --brokers (see BrokersFlag).
// FromContext reads them back. Every call returns new flag values, so flag
// sets never share state.
//
// The SASL password is best given through KBACKUP_SASL_PASSWORD or
// --sasl-password-file: a --sasl-password on the command line is visible to
// other users in the process list. Its flag never shows a value in --help.
func Flags(includeBrokers bool) []cli.Flag {
	var flags []cli.Flag
	if includeBrokers {
		flags = append(flags, BrokersFlag())
	}
	str := func(name, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, Usage: usage, EnvVars: []string{EnvVar(name)}, Category: flagCategory}
	}
	boolean := func(name, usage string) cli.Flag {
		return &cli.BoolFlag{Name: name, Usage: usage, EnvVars: []string{EnvVar(name)}, Category: flagCategory}
	}
	return append(flags,
		str(FlagClientID, "Kafka client.id (default \"kbackup\")"),
		boolean(FlagTLS, "connect with TLS using the system root CAs (implied by any --tls-* flag and by AWS_MSK_IAM)"),
		str(FlagTLSCA, "PEM `file` of CA certificates to verify the brokers with, instead of the system roots"),
		str(FlagTLSCert, "PEM client certificate `file` for mutual TLS (with --tls-key)"),
		str(FlagTLSKey, "PEM client private key `file` for mutual TLS (with --tls-cert)"),
		str(FlagTLSServerName, "host `name` to verify in the brokers' certificates (default: the host dialled)"),
		boolean(FlagTLSInsecureSkipVerify, "do not verify the brokers' certificates (tests only)"),
		str(FlagSASLMechanism, "SASL `mechanism`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM"),
		str(FlagSASLUsername, "SASL `user` for PLAIN and SCRAM"),
		&cli.GenericFlag{
			Name:     FlagSASLPassword,
			Usage:    "SASL password for PLAIN and SCRAM; prefer the environment variable or --sasl-password-file, a command-line value shows in the process list",
			EnvVars:  []string{EnvVar(FlagSASLPassword)},
			Category: flagCategory,
			Value:    new(secretFlag),
		},
		str(FlagSASLPasswordFile, "`file` holding the SASL password (one trailing newline is trimmed)"),
		str(FlagAWSRegion, "AWS `region` for AWS_MSK_IAM credentials (default: the AWS chain's)"),
		&cli.DurationFlag{
			Name:     FlagDialTimeout,
			Usage:    "bound on each connection attempt including the TLS handshake (default 10s)",
			EnvVars:  []string{EnvVar(FlagDialTimeout)},
			Category: flagCategory,
		},
	)
}

// FromContext maps the connection flags onto Options, looking through the
// command's ancestors so a --brokers defined on the app is found (as a string
// slice or a plain string). Flags that are not defined read as their zero
// value. Logger is left nil: the caller sets it.
func FromContext(c *cli.Context) Options {
	var brokers []string
	switch v := c.Value(FlagBrokers).(type) {
	case nil:
	case string:
		brokers = []string{v}
	default:
		brokers = c.StringSlice(FlagBrokers)
	}
	var password Secret
	if s, ok := c.Generic(FlagSASLPassword).(*secretFlag); ok {
		password = s.value
	}
	return Options{
		Brokers:               brokers,
		ClientID:              c.String(FlagClientID),
		TLS:                   c.Bool(FlagTLS),
		TLSCAFile:             c.String(FlagTLSCA),
		TLSCertFile:           c.String(FlagTLSCert),
		TLSKeyFile:            c.String(FlagTLSKey),
		TLSServerName:         c.String(FlagTLSServerName),
		TLSInsecureSkipVerify: c.Bool(FlagTLSInsecureSkipVerify),
		SASLMechanism:         c.String(FlagSASLMechanism),
		SASLUsername:          c.String(FlagSASLUsername),
		SASLPassword:          password,
		SASLPasswordFile:      c.String(FlagSASLPasswordFile),
		AWSRegion:             c.String(FlagAWSRegion),
		DialTimeout:           c.Duration(FlagDialTimeout),
	}
}

// secretFlag is the --sasl-password flag value. Its String is what urfave/cli
// and the flag package print (help defaults, error messages), so it redacts.
type secretFlag struct{ value Secret }

// Set stores the password.
func (s *secretFlag) Set(v string) error { s.value = Secret(v); return nil }

// String returns the redacted form.
func (s *secretFlag) String() string {
	if s == nil {
		return ""
	}
	return s.value.String()
}

// Get implements flag.Getter (urfave/cli's Context.Value needs it) with the
// Secret, which redacts itself when printed.
func (s *secretFlag) Get() any { return s.value }
