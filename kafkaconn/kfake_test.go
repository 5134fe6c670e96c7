package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const testTopic = "kafkaconn-test"

// newCluster starts a kfake cluster (three brokers, so the client has to
// authenticate every connection it opens after metadata, not only the seed)
// with one test topic.
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(1, testTopic)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// roundTrip pings the cluster through o, produces one record and consumes it
// back, all under one deadline. It returns the first error.
func roundTrip(t *testing.T, o Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := o.NewClient(ctx,
		kgo.DefaultProduceTopic(testTopic),
		kgo.ConsumeTopics(testTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := Ping(ctx, cl); err != nil {
		return err
	}
	want := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(want)}).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return fmt.Errorf("consume: %w", errs[0].Err)
		}
		for _, r := range fs.Records() {
			if string(r.Value) == want {
				return nil
			}
		}
	}
}

func TestRoundTripSecured(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	passFile := filepath.Join(p.dir, "password")
	if err := os.WriteFile(passFile, []byte("file-pass-S3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A server certificate that names only kafka.internal, to prove
	// TLSServerName is what gets verified.
	named := p.ca.issue(t, p.dir, "named", x509.ExtKeyUsageServerAuth, []string{"kafka.internal"}, nil)

	for _, tc := range []struct {
		name    string
		cluster []kfake.Opt
		opts    Options
	}{
		{name: "plaintext"},
		{
			name:    "tls",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(false))},
			opts:    Options{TLS: true, TLSCAFile: p.ca.file},
		},
		{
			name:    "tls implied by CA file",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(false))},
			opts:    Options{TLSCAFile: p.ca.file},
		},
		{
			name:    "tls insecure skip verify",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(false))},
			opts:    Options{TLSInsecureSkipVerify: true},
		},
		{
			name:    "tls server name",
			cluster: []kfake.Opt{kfake.TLS(serverTLSFor(named))},
			opts:    Options{TLSCAFile: p.ca.file, TLSServerName: "kafka.internal"},
		},
		{
			name:    "mutual tls",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(true))},
			opts:    Options{TLSCAFile: p.ca.file, TLSCertFile: p.client.certFile, TLSKeyFile: p.client.keyFile},
		},
		{
			name:    "sasl plain",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "plain-S3cr3t")},
			opts:    Options{SASLMechanism: "PLAIN", SASLUsername: "alice", SASLPassword: "plain-S3cr3t"},
		},
		{
			name:    "sasl scram-sha-256",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "bob", "scram256-S3cr3t")},
			opts:    Options{SASLMechanism: "SCRAM-SHA-256", SASLUsername: "bob", SASLPassword: "scram256-S3cr3t"},
		},
		{
			name:    "sasl scram-sha-512 lower-case mechanism",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "carol", "scram512-S3cr3t")},
			opts:    Options{SASLMechanism: "scram-sha-512", SASLUsername: "carol", SASLPassword: "scram512-S3cr3t"},
		},
		{
			name:    "sasl password file",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "dave", "file-pass-S3cr3t")},
			opts:    Options{SASLMechanism: "SCRAM-SHA-256", SASLUsername: "dave", SASLPasswordFile: passFile},
		},
		{
			name: "mutual tls with sasl scram-sha-512",
			cluster: []kfake.Opt{
				kfake.TLS(p.serverTLS(true)),
				kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "erin", "both-S3cr3t"),
			},
			opts: Options{
				TLS: true, TLSCAFile: p.ca.file, TLSCertFile: p.client.certFile, TLSKeyFile: p.client.keyFile,
				SASLMechanism: "SCRAM-SHA-512", SASLUsername: "erin", SASLPassword: "both-S3cr3t",
			},
		},
		{
			name: "tls with sasl plain",
			cluster: []kfake.Opt{
				kfake.TLS(p.serverTLS(false)),
				kfake.EnableSASL(), kfake.Superuser("PLAIN", "frank", "tlsplain-S3cr3t"),
			},
			opts: Options{TLSCAFile: p.ca.file, SASLMechanism: "PLAIN", SASLUsername: "frank", SASLPassword: "tlsplain-S3cr3t"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := tc.opts
			o.Brokers = newCluster(t, tc.cluster...).ListenAddrs()
			if err := roundTrip(t, o); err != nil {
				t.Fatalf("produce+consume with %s: %v", o, err)
			}
		})
	}
}

// serverTLSFor is a broker-side TLS configuration serving one certificate.
func serverTLSFor(cert issued) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert.pair}, MinVersion: tls.VersionTLS12}
}

// rejectSASL makes the cluster answer every SASLAuthenticate the way a real
// broker answers bad credentials: error code SASL_AUTHENTICATION_FAILED with
// a message. (kfake itself closes the connection instead.)
func rejectSASL(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
}

// TestConnectFailures proves each misconfiguration fails promptly with an
// error that names the brokers, says what to check, and never holds the
// password.
func TestConnectFailures(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	named := p.ca.issue(t, p.dir, "named", x509.ExtKeyUsageServerAuth, []string{"kafka.internal"}, nil)
	const closedSASL = "the broker closed the connection (with SASL on, usually rejected credentials"

	for _, tc := range []struct {
		name    string
		cluster []kfake.Opt
		control func(*kfake.Cluster)
		opts    Options
		want    []string // substrings of the error
		is      error    // errors.Is target, if any
		secret  string   // must not appear in the error
		slow    bool     // may only fail at the deadline
	}{
		{
			name:    "wrong CA",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(false))},
			opts:    Options{TLSCAFile: p.otherCA.file},
			want:    []string{"TLS certificate verification failed", "certificate signed by unknown authority"},
		},
		{
			name:    "system roots do not trust a private CA",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(false))},
			opts:    Options{TLS: true},
			want:    []string{"TLS certificate verification failed"},
		},
		{
			name:    "certificate for another host name",
			cluster: []kfake.Opt{kfake.TLS(serverTLSFor(named))},
			opts:    Options{TLSCAFile: p.ca.file},
			want:    []string{"TLS certificate verification failed", "doesn't contain any IP SANs"},
		},
		{
			name:    "wrong server name",
			cluster: []kfake.Opt{kfake.TLS(serverTLSFor(named))},
			opts:    Options{TLSCAFile: p.ca.file, TLSServerName: "kafka.other"},
			want:    []string{"TLS certificate verification failed", "kafka.other"},
		},
		{
			name:    "mutual tls without a client certificate",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(true))},
			opts:    Options{TLSCAFile: p.ca.file},
			want:    []string{"the broker refused the TLS handshake", "certificate required"},
		},
		{
			name:    "client certificate from another CA",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(true))},
			opts: Options{
				TLSCAFile:   p.ca.file,
				TLSCertFile: p.otherClient(t).certFile, TLSKeyFile: p.otherClient(t).keyFile,
			},
			want: []string{"the broker refused the TLS handshake"},
		},
		{
			// kfake waits for the rest of a "request" as long as the
			// ClientHello's first bytes say; a real broker closes at
			// once. Either way the caller's deadline bounds it.
			name: "tls client against a plaintext broker",
			opts: Options{TLSCAFile: p.ca.file},
			slow: true,
		},
		{
			name:    "plaintext client against a tls broker",
			cluster: []kfake.Opt{kfake.TLS(p.serverTLS(false))},
			opts:    Options{},
		},
		{
			name:    "wrong plain password",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "right-S3cr3t")},
			opts:    Options{SASLMechanism: "PLAIN", SASLUsername: "alice", SASLPassword: "wrong-S3cr3t"},
			want:    []string{closedSASL},
			secret:  "wrong-S3cr3t",
		},
		{
			name:    "wrong scram-sha-256 password",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "bob", "right-S3cr3t")},
			opts:    Options{SASLMechanism: "SCRAM-SHA-256", SASLUsername: "bob", SASLPassword: "wrong-S3cr3t"},
			want:    []string{closedSASL},
			secret:  "wrong-S3cr3t",
		},
		{
			name:    "wrong scram-sha-512 password",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "carol", "right-S3cr3t")},
			opts:    Options{SASLMechanism: "SCRAM-SHA-512", SASLUsername: "carol", SASLPassword: "wrong-S3cr3t"},
			want:    []string{closedSASL},
			secret:  "wrong-S3cr3t",
		},
		{
			name:    "unknown user",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "bob", "right-S3cr3t")},
			opts:    Options{SASLMechanism: "SCRAM-SHA-256", SASLUsername: "mallory", SASLPassword: "right-S3cr3t"},
			want:    []string{closedSASL},
			secret:  "right-S3cr3t",
		},
		{
			name:    "mechanism the cluster has no user for",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "bob", "right-S3cr3t")},
			opts:    Options{SASLMechanism: "PLAIN", SASLUsername: "bob", SASLPassword: "right-S3cr3t"},
			want:    []string{closedSASL},
			secret:  "right-S3cr3t",
		},
		{
			name:    "credentials rejected as a real broker does",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "carol", "right-S3cr3t")},
			control: rejectSASL,
			opts:    Options{SASLMechanism: "SCRAM-SHA-512", SASLUsername: "carol", SASLPassword: "wrong-S3cr3t"},
			want:    []string{"SASL authentication failed (check the mechanism, username and password)", "Invalid username or password"},
			is:      kerr.SaslAuthenticationFailed,
			secret:  "wrong-S3cr3t",
		},
		{
			name:    "no sasl against a sasl cluster",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "right-S3cr3t")},
			opts:    Options{},
			want:    []string{"SASL"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, tc.cluster...)
			if tc.control != nil {
				tc.control(c)
			}
			o := tc.opts
			o.Brokers = c.ListenAddrs()
			o.DialTimeout = 2 * time.Second
			timeout := 10 * time.Second
			if tc.slow {
				timeout = 3 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			cl, err := o.NewClient(ctx)
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			defer cl.Close()
			err = Ping(ctx, cl)
			if err == nil {
				t.Fatal("Ping succeeded, want an error")
			}
			t.Logf("error: %v", err)
			want := append([]string{"cannot reach Kafka at " + strings.Join(o.Brokers, ",") + ": "}, tc.want...)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q reveals the password", err)
			}
			if !tc.slow && ctx.Err() != nil {
				t.Errorf("Ping used up the whole deadline (%v); want a prompt failure", err)
			}
		})
	}
}

// TestUnreachable proves an unreachable cluster fails within the caller's
// deadline: a closed port (refused at once) and a listener that accepts but
// never answers (only the deadline ends the wait).
func TestUnreachable(t *testing.T) {
	t.Parallel()

	t.Run("closed port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl, err := Options{Brokers: []string{addr}}.NewClient(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		err = Ping(ctx, cl)
		if err == nil {
			t.Fatal("Ping of a closed port succeeded")
		}
		if want := "cannot reach Kafka at " + addr + ": "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q does not start with %q", err, want)
		}
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("error %q does not say the connection was refused", err)
		}
	})

	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("silent listener tls=%v", tlsOn), func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			accepted := make(chan []net.Conn, 1)
			go func() {
				var conns []net.Conn // held open, never answered
				for {
					c, err := ln.Accept()
					if err != nil {
						accepted <- conns
						return
					}
					conns = append(conns, c)
				}
			}()
			t.Cleanup(func() {
				ln.Close()
				for _, c := range <-accepted {
					c.Close()
				}
			})

			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			deadline, _ := ctx.Deadline()
			// DialTimeout is far beyond the deadline: the context alone
			// must end the wait.
			o := Options{Brokers: []string{ln.Addr().String()}, TLS: tlsOn, DialTimeout: time.Minute}
			cl, err := o.NewClient(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			done := make(chan error, 1)
			go func() { done <- Ping(ctx, cl) }()
			select {
			case err = <-done:
			// Generous slack, far below franz-go's own 10s request
			// timeout: this catches Ping outliving its context, not a
			// slow machine.
			case <-time.After(time.Until(deadline) + 5*time.Second):
				t.Fatal("Ping did not return when its context's deadline passed")
			}
			if err == nil {
				t.Fatal("Ping of a silent listener succeeded")
			}
			for _, w := range []string{"cannot reach Kafka at " + ln.Addr().String(), "no answer before the deadline"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
