package kafkaconn

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
)

const testPassword = "hunter2-Sup3rS3cr3t"

func TestValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	b := []string{"127.0.0.1:9092"}

	for _, tc := range []struct {
		name string
		opts Options
		want []string // substrings of the error; none means valid
	}{
		{name: "minimal", opts: Options{Brokers: b}},
		{name: "comma-separated brokers", opts: Options{Brokers: []string{"a:1, b:2", "c:3"}}},
		{name: "broker without port", opts: Options{Brokers: []string{"kafka"}}},
		{name: "ipv6 broker", opts: Options{Brokers: []string{"[::1]:9092"}}},
		{name: "zero options", opts: Options{}, want: []string{"no Kafka brokers given"}},
		{name: "blank brokers", opts: Options{Brokers: []string{" , ", ""}}, want: []string{"no Kafka brokers given"}},
		{name: "broker without host", opts: Options{Brokers: []string{":9092"}}, want: []string{`broker ":9092" has no host`}},
		{name: "broker with bad port", opts: Options{Brokers: []string{"kafka:http"}}, want: []string{`broker "kafka:http" has an invalid port "http"`}},
		{name: "broker with port 0", opts: Options{Brokers: []string{"kafka:0"}}, want: []string{`invalid port "0"`}},
		{name: "broker with too many colons", opts: Options{Brokers: []string{"a:b:c"}}, want: []string{`broker "a:b:c" is not host:port`}},
		{name: "negative dial timeout", opts: Options{Brokers: b, DialTimeout: -time.Second}, want: []string{"dial timeout -1s is negative"}},
		{
			name: "full tls",
			opts: Options{Brokers: b, TLS: true, TLSCAFile: file, TLSCertFile: file, TLSKeyFile: file, TLSServerName: "kafka"},
		},
		{name: "key without cert", opts: Options{Brokers: b, TLSKeyFile: file}, want: []string{"TLS client key " + file + " given without a client certificate"}},
		{name: "cert without key", opts: Options{Brokers: b, TLSCertFile: file}, want: []string{"TLS client certificate " + file + " given without its key"}},
		{name: "missing CA file", opts: Options{Brokers: b, TLSCAFile: missing}, want: []string{"TLS CA file: cannot read: open " + missing, "no such file"}},
		{name: "CA file is a directory", opts: Options{Brokers: b, TLSCAFile: dir}, want: []string{"TLS CA file: cannot read " + dir + ": is a directory"}},
		{
			name: "missing client key",
			opts: Options{Brokers: b, TLSCertFile: file, TLSKeyFile: missing},
			want: []string{"TLS client key: cannot read: open " + missing},
		},
		{
			name: "plain",
			opts: Options{Brokers: b, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: testPassword},
		},
		{
			name: "scram password file, lower case",
			opts: Options{Brokers: b, SASLMechanism: "scram-sha-512", SASLUsername: "u", SASLPasswordFile: file},
		},
		{name: "aws msk iam", opts: Options{Brokers: b, SASLMechanism: "AWS_MSK_IAM", AWSRegion: "eu-west-1"}},
		{
			name: "unknown mechanism",
			opts: Options{Brokers: b, SASLMechanism: "GSSAPI", SASLUsername: "u", SASLPassword: testPassword},
			want: []string{`unknown SASL mechanism "GSSAPI" (want PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM)`},
		},
		{
			name: "username without mechanism",
			opts: Options{Brokers: b, SASLUsername: "u"},
			want: []string{"SASL username or password given without a SASL mechanism"},
		},
		{
			name: "password without mechanism",
			opts: Options{Brokers: b, SASLPassword: testPassword},
			want: []string{"SASL username or password given without a SASL mechanism"},
		},
		{
			name: "password file without mechanism",
			opts: Options{Brokers: b, SASLPasswordFile: file},
			want: []string{"SASL username or password given without a SASL mechanism"},
		},
		{
			name: "scram without username",
			opts: Options{Brokers: b, SASLMechanism: "SCRAM-SHA-256", SASLPassword: testPassword},
			want: []string{"SASL SCRAM-SHA-256 needs a username"},
		},
		{
			name: "plain without password",
			opts: Options{Brokers: b, SASLMechanism: "PLAIN", SASLUsername: "u"},
			want: []string{"SASL PLAIN needs a password (KBACKUP_SASL_PASSWORD or --sasl-password-file)"},
		},
		{
			name: "password and password file",
			opts: Options{Brokers: b, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: testPassword, SASLPasswordFile: file},
			want: []string{"give the password or a password file, not both"},
		},
		{
			name: "missing password file",
			opts: Options{Brokers: b, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPasswordFile: missing},
			want: []string{"SASL password file: cannot read: open " + missing},
		},
		{
			name: "aws with password",
			opts: Options{Brokers: b, SASLMechanism: "AWS_MSK_IAM", SASLUsername: "u", SASLPassword: testPassword},
			want: []string{"SASL AWS_MSK_IAM takes its credentials from the AWS chain"},
		},
		{
			name: "every problem at once",
			opts: Options{TLSKeyFile: missing, SASLMechanism: "PLAIN", SASLPassword: testPassword, DialTimeout: -1},
			want: []string{
				"invalid Kafka connection options: ",
				"no Kafka brokers given",
				"given without a client certificate",
				"TLS client key: cannot read",
				"SASL PLAIN needs a username",
				"dial timeout",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.opts.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted invalid options")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("error %q reveals the password", err)
			}
			// ClientOpts refuses what Validate refuses, with the same error.
			if _, cerr := tc.opts.ClientOpts(context.Background()); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("ClientOpts error %v, want %v", cerr, err)
			}
		})
	}
}

// TestClientOptsFiles covers what only reading the files reveals.
func TestClientOptsFiles(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	write := func(name, content string) string {
		f := filepath.Join(p.dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	notPEM := write("not.pem", "this is not PEM")
	emptyPass := write("empty-pass", "\n")
	keyPEM, err := os.ReadFile(p.client.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b := []string{"127.0.0.1:9092"}

	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{name: "CA file without PEM", opts: Options{Brokers: b, TLSCAFile: notPEM}, want: "TLS CA file " + notPEM + " holds no PEM certificate"},
		{
			name: "key that does not match the certificate",
			opts: Options{Brokers: b, TLSCertFile: p.client.certFile, TLSKeyFile: p.server.keyFile},
			want: "load TLS client certificate " + p.client.certFile + " and key " + p.server.keyFile + ": tls: private key does not match public key",
		},
		{
			name: "key file that is not PEM",
			opts: Options{Brokers: b, TLSCertFile: p.client.certFile, TLSKeyFile: notPEM},
			want: "load TLS client certificate",
		},
		{
			name: "empty password file",
			opts: Options{Brokers: b, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPasswordFile: emptyPass},
			want: "SASL password file " + emptyPass + " is empty",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.opts.ClientOpts(context.Background())
			if err == nil {
				t.Fatal("ClientOpts succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(keyPEM[40:80])) {
				t.Errorf("error %q shows key material", err)
			}
		})
	}
}

func TestPasswordFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"pw", "pw"},
		{"pw\n", "pw"},
		{"pw\r\n", "pw"},
		{"pw\n\n", "pw\n"}, // only one newline is trimmed
		{" pw \n", " pw "}, // spaces are part of the password
		{"pw\r", "pw\r"},   // a lone CR is not a newline
		{"p\nw\n", "p\nw"}, // inner newlines are kept
	} {
		f := filepath.Join(dir, "pw")
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Options{SASLPasswordFile: f}.password()
		if err != nil || got != tc.want {
			t.Errorf("password file %q: got %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
}

// TestClientOptsValues checks the franz-go options built, through the
// client's own view of its configuration.
func TestClientOptsValues(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	o := Options{
		Brokers:       []string{"k1:9093,k2:9093"},
		TLSCAFile:     p.ca.file,
		TLSServerName: "kafka.internal",
		SASLMechanism: "scram-sha-256", SASLUsername: "u", SASLPassword: testPassword,
		DialTimeout: 3 * time.Second,
	}
	cl, err := o.NewClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.SeedBrokers).([]string); strings.Join(got, ",") != "k1:9093,k2:9093" {
		t.Errorf("seed brokers %v", got)
	}
	if got := cl.OptValue(kgo.ClientID); got != "kbackup" {
		t.Errorf("client id %v, want the default kbackup", got)
	}
	if got := cl.OptValue(kgo.DialTimeout); got != 3*time.Second {
		t.Errorf("dial timeout %v", got)
	}
	tlsCfg, _ := cl.OptValue(kgo.DialTLSConfig).(*tls.Config)
	switch {
	case tlsCfg == nil:
		t.Error("TLS not enabled though a CA file is set")
	case tlsCfg.ServerName != "kafka.internal" || tlsCfg.RootCAs == nil || tlsCfg.MinVersion != tls.VersionTLS12 || tlsCfg.InsecureSkipVerify:
		t.Errorf("TLS config: server name %q, roots set %v, min version %x, insecure %v",
			tlsCfg.ServerName, tlsCfg.RootCAs != nil, tlsCfg.MinVersion, tlsCfg.InsecureSkipVerify)
	}
	if mechs, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism); len(mechs) != 1 || mechs[0].Name() != "SCRAM-SHA-256" {
		t.Errorf("SASL mechanisms %v, want one SCRAM-SHA-256", mechs)
	}
	if cl.OptValue(kgo.WithLogger) != nil {
		t.Error("a logger was set though Options.Logger is nil")
	}

	plain, err := Options{Brokers: []string{"k:1"}, ClientID: "mine"}.NewClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.OptValue(kgo.DialTLS) != false {
		t.Error("TLS enabled with no TLS option set")
	}
	if got := plain.OptValue(kgo.ClientID); got != "mine" {
		t.Errorf("client id %v, want mine", got)
	}
	if got := plain.OptValue(kgo.DialTimeout); got != DefaultDialTimeout {
		t.Errorf("dial timeout %v, want the default", got)
	}
}
