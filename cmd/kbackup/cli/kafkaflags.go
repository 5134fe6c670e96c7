package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/kafkaconn"
)

// Kafka connection flag names (--brokers is a global flag, see flags.go).
// Each reads the environment variable EnvVar(name), e.g. KBACKUP_TLS_CA for
// --tls-ca, in every command: the connection means the same everywhere.
const (
	flagClientID              = "client-id"
	flagTLS                   = "tls"
	flagTLSCA                 = "tls-ca"
	flagTLSCert               = "tls-cert"
	flagTLSKey                = "tls-key"
	flagTLSServerName         = "tls-server-name"
	flagTLSInsecureSkipVerify = "tls-insecure-skip-verify"
	flagSASLMechanism         = "sasl-mechanism"
	flagSASLUsername          = "sasl-username"
	flagSASLPassword          = "sasl-password"
	flagSASLPasswordFile      = "sasl-password-file"
	flagAWSRegion             = "aws-region"
	flagDialTimeout           = "dial-timeout"
)

// kafkaFlagCategory groups the connection flags in --help; assignEnv gives
// the flags of this category their shared environment variable.
const kafkaFlagCategory = "Kafka connection"

// kafkaFlags returns fresh flags for every kafkaconn.Options field but
// Brokers (a global flag) and Logger; kafkaConnOptions reads them back.
//
// The SASL password is best given through KBACKUP_SASL_PASSWORD or
// --sasl-password-file: a --sasl-password on the command line is visible to
// other users in the process list. Its flag never shows a value in --help.
func kafkaFlags() []cli.Flag {
	str := func(name, usage, value string) cli.Flag {
		return &cli.StringFlag{Name: name, Usage: usage, Value: value, Category: kafkaFlagCategory}
	}
	boolean := func(name, usage string) cli.Flag {
		return &cli.BoolFlag{Name: name, Usage: usage, Category: kafkaFlagCategory}
	}
	return []cli.Flag{
		str(flagClientID, "Kafka client.id", kafkaconn.DefaultClientID),
		boolean(flagTLS, "connect with TLS using the system root CAs (implied by any --tls-* flag and by AWS_MSK_IAM)"),
		str(flagTLSCA, "PEM `file` of CA certificates to verify the brokers with, instead of the system roots", ""),
		str(flagTLSCert, "PEM client certificate `file` for mutual TLS (with --tls-key)", ""),
		str(flagTLSKey, "PEM client private key `file` for mutual TLS (with --tls-cert)", ""),
		str(flagTLSServerName, "host `name` to verify in the brokers' certificates (default: the host dialled)", ""),
		boolean(flagTLSInsecureSkipVerify, "do not verify the brokers' certificates (tests only)"),
		str(flagSASLMechanism, "SASL `mechanism`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM", ""),
		str(flagSASLUsername, "SASL `user` for PLAIN and SCRAM", ""),
		&cli.GenericFlag{
			Name:     flagSASLPassword,
			Usage:    "SASL password for PLAIN and SCRAM; prefer the environment variable or --sasl-password-file, a command-line value shows in the process list",
			Category: kafkaFlagCategory,
			Value:    new(secretFlag),
		},
		str(flagSASLPasswordFile, "`file` holding the SASL password (one trailing newline is trimmed)", ""),
		str(flagAWSRegion, "AWS `region` for AWS_MSK_IAM credentials (default: the AWS chain's)", ""),
		&cli.DurationFlag{
			Name:     flagDialTimeout,
			Usage:    "bound on each connection attempt including the TLS handshake",
			Value:    kafkaconn.DefaultDialTimeout,
			Category: kafkaFlagCategory,
		},
	}
}

// kafkaConnOptions maps the connection flags onto kafkaconn.Options (Brokers
// and Logger are left for the caller). Flags a command does not define read
// as their zero value.
func kafkaConnOptions(c *cli.Context) kafkaconn.Options {
	var password kafkaconn.Secret
	if s, ok := c.Generic(flagSASLPassword).(*secretFlag); ok && s != nil {
		password = s.value
	}
	return kafkaconn.Options{
		ClientID:              c.String(flagClientID),
		TLS:                   c.Bool(flagTLS),
		TLSCAFile:             c.String(flagTLSCA),
		TLSCertFile:           c.String(flagTLSCert),
		TLSKeyFile:            c.String(flagTLSKey),
		TLSServerName:         c.String(flagTLSServerName),
		TLSInsecureSkipVerify: c.Bool(flagTLSInsecureSkipVerify),
		SASLMechanism:         c.String(flagSASLMechanism),
		SASLUsername:          c.String(flagSASLUsername),
		SASLPassword:          password,
		SASLPasswordFile:      c.String(flagSASLPasswordFile),
		AWSRegion:             c.String(flagAWSRegion),
		DialTimeout:           c.Duration(flagDialTimeout),
	}
}

// secretFlag is the --sasl-password flag value. Its String is what urfave/cli
// and the flag package print (help defaults, error messages), so it redacts.
type secretFlag struct{ value kafkaconn.Secret }

// Set stores the password.
func (s *secretFlag) Set(v string) error { s.value = kafkaconn.Secret(v); return nil }

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
