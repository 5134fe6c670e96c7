// Package kafkaconn holds the Kafka connection options shared by every kbackup
// command that talks to a cluster (archive, restore, verify --brokers,
// snapshot): seed brokers, TLS (CA, client certificate and key) and SASL
// (PLAIN, SCRAM-SHA-256/512, AWS MSK IAM through franz-go's sasl packages).
//
// Secrets (the SASL password) come from flags, environment variables or files
// and are never printed: Options.String, its LogValue and every error this
// package returns leave them out, and the Secret type redacts itself under fmt,
// log/slog and encoding/json.
//
// The CLI maps its flags onto Options; package code turns Options into
// franz-go client options with ClientOpts (or NewClient) and checks
// reachability with Ping. This package knows nothing of flags.
package kafkaconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// SASL mechanism names accepted in Options.SASLMechanism (case-insensitive).
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
	MechanismAWSMSKIAM   = "AWS_MSK_IAM"
)

// Defaults applied to zero-valued Options fields.
const (
	DefaultClientID    = "kbackup"
	DefaultDialTimeout = 10 * time.Second
)

// Options are the connection settings for one Kafka cluster. The zero value of
// every field is documented; the zero Options is invalid only because it names
// no brokers.
type Options struct {
	// Brokers are the seed brokers, host:port (a missing port means 9092, as
	// in franz-go). An entry may hold several comma-separated addresses, as
	// the KBACKUP_BROKERS environment variable does. Required.
	Brokers []string

	// ClientID is the Kafka client.id; "" means "kbackup".
	ClientID string

	// TLS enables TLS with the system root CAs. It is implied by any other
	// TLS field being set and by SASLMechanism AWS_MSK_IAM (MSK serves IAM
	// authentication only on its TLS listener). false and no TLS field set
	// means plaintext.
	TLS bool
	// TLSCAFile is a PEM file of CA certificates that replaces the system
	// roots for verifying the brokers; "" means the system roots.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the PEM client certificate and private
	// key for mutual TLS; both or neither. "" means no client certificate.
	TLSCertFile, TLSKeyFile string
	// TLSServerName overrides the host name verified in the brokers'
	// certificates; "" means the host of the address dialled.
	TLSServerName string
	// TLSInsecureSkipVerify disables verification of the brokers'
	// certificates. For tests only; false means verify.
	TLSInsecureSkipVerify bool

	// SASLMechanism is "" (no SASL), "PLAIN", "SCRAM-SHA-256",
	// "SCRAM-SHA-512" or "AWS_MSK_IAM"; case-insensitive.
	SASLMechanism string
	// SASLUsername is the user for PLAIN and SCRAM; required by them, and
	// refused with no or the AWS_MSK_IAM mechanism.
	SASLUsername string
	// SASLPassword is the password for PLAIN and SCRAM. It is never printed.
	// Exactly one of SASLPassword and SASLPasswordFile is required by PLAIN
	// and SCRAM.
	SASLPassword Secret
	// SASLPasswordFile names a file holding the password, read when the
	// client options are built (so a rotated file is picked up by the next
	// client); one trailing newline (\n or \r\n) is trimmed. "" means use
	// SASLPassword.
	SASLPasswordFile string

	// AWSRegion is the region for the AWS configuration that AWS_MSK_IAM
	// loads its credentials with (the standard chain: environment, shared
	// files, web identity, ECS/EC2 roles). "" means the chain's own region
	// (AWS_REGION, the profile). franz-go signs with the region in the
	// broker host name (every MSK broker name carries it) and falls back to
	// the AWS_REGION environment variable for other names.
	AWSRegion string

	// DialTimeout bounds each connection attempt, including the TLS
	// handshake; 0 means 10s.
	DialTimeout time.Duration

	// Logger receives franz-go's own log lines, its info lines at debug
	// (see kgoLogger); nil discards them.
	Logger *slog.Logger
}

// brokers returns the seed brokers with comma-separated entries split and
// blanks dropped.
func (o Options) brokers() []string {
	var out []string
	for _, b := range o.Brokers {
		for _, s := range strings.Split(b, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// clientID returns ClientID or its default.
func (o Options) clientID() string {
	if o.ClientID == "" {
		return DefaultClientID
	}
	return o.ClientID
}

// dialTimeout returns DialTimeout or its default.
func (o Options) dialTimeout() time.Duration {
	if o.DialTimeout == 0 {
		return DefaultDialTimeout
	}
	return o.DialTimeout
}

// mechanism returns SASLMechanism normalised to upper case.
func (o Options) mechanism() string { return strings.ToUpper(strings.TrimSpace(o.SASLMechanism)) }

// tlsEnabled reports whether connections use TLS, explicitly or implied.
func (o Options) tlsEnabled() bool {
	return o.TLS || o.TLSCAFile != "" || o.TLSCertFile != "" || o.TLSKeyFile != "" ||
		o.TLSServerName != "" || o.TLSInsecureSkipVerify || o.mechanism() == MechanismAWSMSKIAM
}

// Validate reports every problem with the options at once (joined), without
// connecting: no brokers or a malformed one, an unknown SASL mechanism, SASL
// credentials without a mechanism or missing for one, a client key without a
// certificate (or the reverse), a negative dial timeout, and files that
// cannot be read. Messages name the option and the file, never a secret.
func (o Options) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	brokers := o.brokers()
	if len(brokers) == 0 {
		add("no Kafka brokers given (set --brokers or KBACKUP_BROKERS to host:port,...)")
	}
	for _, b := range brokers {
		if err := checkBroker(b); err != nil {
			errs = append(errs, err)
		}
	}
	if o.DialTimeout < 0 {
		add("dial timeout %s is negative", o.DialTimeout)
	}

	if o.TLSKeyFile != "" && o.TLSCertFile == "" {
		add("TLS client key %s given without a client certificate (--tls-cert)", o.TLSKeyFile)
	}
	if o.TLSCertFile != "" && o.TLSKeyFile == "" {
		add("TLS client certificate %s given without its key (--tls-key)", o.TLSCertFile)
	}
	for _, f := range []struct{ what, path string }{
		{"TLS CA file", o.TLSCAFile},
		{"TLS client certificate", o.TLSCertFile},
		{"TLS client key", o.TLSKeyFile},
		{"SASL password file", o.SASLPasswordFile},
	} {
		if err := checkReadable(f.path); err != nil {
			add("%s: %w", f.what, err)
		}
	}

	hasPassword := o.SASLPassword != "" || o.SASLPasswordFile != ""
	switch mech := o.mechanism(); mech {
	case "":
		if o.SASLUsername != "" || hasPassword {
			add("SASL username or password given without a SASL mechanism (--sasl-mechanism %s, %s, %s or %s)",
				MechanismPlain, MechanismScramSHA256, MechanismScramSHA512, MechanismAWSMSKIAM)
		}
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		if o.SASLUsername == "" {
			add("SASL %s needs a username (--sasl-username)", mech)
		}
		switch {
		case o.SASLPassword != "" && o.SASLPasswordFile != "":
			add("SASL %s: give the password or a password file, not both", mech)
		case !hasPassword:
			add("SASL %s needs a password (KBACKUP_SASL_PASSWORD or --sasl-password-file)", mech)
		}
	case MechanismAWSMSKIAM:
		if o.SASLUsername != "" || hasPassword {
			add("SASL %s takes its credentials from the AWS chain, not a username or password", mech)
		}
	default:
		// The mechanism name is not a secret, but quote it so a stray
		// space or control character shows.
		add("unknown SASL mechanism %q (want %s, %s, %s or %s)", o.SASLMechanism,
			MechanismPlain, MechanismScramSHA256, MechanismScramSHA512, MechanismAWSMSKIAM)
	}

	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid Kafka connection options: %w", errors.Join(errs...))
}

// checkBroker reports a seed broker that franz-go could not dial.
func checkBroker(b string) error {
	host, port, err := net.SplitHostPort(b)
	if err != nil {
		var aerr *net.AddrError
		if errors.As(err, &aerr) && aerr.Err == "missing port in address" {
			return nil // franz-go uses the default port 9092
		}
		return fmt.Errorf("broker %q is not host:port: %w", b, err)
	}
	if host == "" {
		return fmt.Errorf("broker %q has no host", b)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("broker %q has an invalid port %q", b, port)
	}
	return nil
}

// checkReadable reports a named file that cannot be opened for reading or is
// a directory; "" is fine (the option is unset). It never reads the content.
func checkReadable(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot read: %w", err)
	}
	if st.IsDir() {
		return fmt.Errorf("cannot read %s: is a directory", path)
	}
	return nil
}

// String describes the options for logs: brokers, client id, TLS files and
// settings, SASL mechanism and user. A password shows only as "[REDACTED]"
// (or as the file it is read from); file contents are never included.
func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "brokers=%s client_id=%s", strings.Join(o.brokers(), ","), o.clientID())
	if o.tlsEnabled() {
		b.WriteString(" tls=true")
		for _, kv := range [][2]string{
			{"tls_ca", o.TLSCAFile},
			{"tls_cert", o.TLSCertFile},
			{"tls_key", o.TLSKeyFile},
			{"tls_server_name", o.TLSServerName},
		} {
			if kv[1] != "" {
				fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
			}
		}
		if o.TLSInsecureSkipVerify {
			b.WriteString(" tls_insecure_skip_verify=true")
		}
	} else {
		b.WriteString(" tls=false")
	}
	if mech := o.mechanism(); mech != "" {
		fmt.Fprintf(&b, " sasl=%s", mech)
	} else {
		b.WriteString(" sasl=none")
	}
	if o.SASLUsername != "" {
		fmt.Fprintf(&b, " sasl_username=%s", o.SASLUsername)
	}
	if o.SASLPassword != "" {
		fmt.Fprintf(&b, " sasl_password=%s", o.SASLPassword.String())
	}
	if o.SASLPasswordFile != "" {
		fmt.Fprintf(&b, " sasl_password_file=%s", o.SASLPasswordFile)
	}
	if o.AWSRegion != "" {
		fmt.Fprintf(&b, " aws_region=%s", o.AWSRegion)
	}
	if o.DialTimeout != 0 {
		fmt.Fprintf(&b, " dial_timeout=%s", o.DialTimeout)
	}
	return b.String()
}

// LogValue implements slog.LogValuer with the redacted String form, so
// slog.Any("kafka", opts) is safe under every handler.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }
