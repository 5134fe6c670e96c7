package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	kaws "github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// ClientOpts validates the options and turns them into franz-go client
// options: seed brokers, client id, dial timeout, a TLS dialer, a SASL
// mechanism and the log bridge. It reads the TLS files and the password file
// now; for AWS_MSK_IAM it loads the AWS configuration and retrieves
// credentials once under ctx, so missing credentials fail here rather than at
// the first connection (they are retrieved again for every later session, so
// rotating credentials keep working). Callers append their own options
// (topics, groups, producer settings) after these.
func (o Options) ClientOpts(ctx context.Context) ([]kgo.Opt, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.brokers()...),
		kgo.ClientID(o.clientID()),
		kgo.DialTimeout(o.dialTimeout()),
	}
	if o.tlsEnabled() {
		cfg, err := o.tlsConfig()
		if err != nil {
			return nil, err
		}
		// DialTLSConfig clones the config per dial and fills ServerName
		// from the broker being dialled when TLSServerName is unset.
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if o.mechanism() != "" {
		mech, err := o.saslMechanism(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(mech))
	}
	if o.Logger != nil {
		opts = append(opts, kgo.WithLogger(kgoLogger{o.Logger}))
	}
	return opts, nil
}

// NewClient builds a franz-go client from ClientOpts followed by extra. It
// does not connect; see Ping.
func (o Options) NewClient(ctx context.Context, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := o.ClientOpts(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("create Kafka client: %w", err)
	}
	return cl, nil
}

// tlsConfig builds the client TLS configuration from the TLS fields.
func (o Options) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.TLSServerName,
		InsecureSkipVerify: o.TLSInsecureSkipVerify, //nolint:gosec // operator's explicit choice, documented as test-only
	}
	if o.TLSCAFile != "" {
		pem, err := os.ReadFile(o.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", o.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	if o.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			// The standard library's messages describe the PEM
			// structure, never the key material.
			return nil, fmt.Errorf("load TLS client certificate %s and key %s: %w", o.TLSCertFile, o.TLSKeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// password returns the SASL password, from the file when one is named.
func (o Options) password() (string, error) {
	if o.SASLPasswordFile == "" {
		return o.SASLPassword.Reveal(), nil
	}
	b, err := os.ReadFile(o.SASLPasswordFile)
	if err != nil {
		return "", fmt.Errorf("read SASL password file: %w", err)
	}
	p, cut := strings.CutSuffix(string(b), "\n")
	if cut {
		p = strings.TrimSuffix(p, "\r")
	}
	if p == "" {
		return "", fmt.Errorf("SASL password file %s is empty", o.SASLPasswordFile)
	}
	return p, nil
}

// saslMechanism builds the franz-go SASL mechanism named by SASLMechanism.
func (o Options) saslMechanism(ctx context.Context) (sasl.Mechanism, error) {
	switch mech := o.mechanism(); mech {
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		pass, err := o.password()
		if err != nil {
			return nil, err
		}
		switch mech {
		case MechanismPlain:
			return plain.Auth{User: o.SASLUsername, Pass: pass}.AsMechanism(), nil
		case MechanismScramSHA256:
			return scram.Auth{User: o.SASLUsername, Pass: pass}.AsSha256Mechanism(), nil
		default:
			return scram.Auth{User: o.SASLUsername, Pass: pass}.AsSha512Mechanism(), nil
		}
	case MechanismAWSMSKIAM:
		return o.mskIAMMechanism(ctx)
	default:
		// Validate refuses these; kept so the function is total.
		return nil, fmt.Errorf("unknown SASL mechanism %q", o.SASLMechanism)
	}
}

// mskIAMMechanism builds the AWS_MSK_IAM mechanism on the standard AWS
// credential chain.
func (o Options) mskIAMMechanism(ctx context.Context) (sasl.Mechanism, error) {
	var loadOpts []func(*awsconfig.LoadOptions) error
	if o.AWSRegion != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(o.AWSRegion))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration for %s: %w", MechanismAWSMSKIAM, err)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("no AWS credentials provider for " + MechanismAWSMSKIAM)
	}
	creds := cfg.Credentials // a cache: retrievals refresh only near expiry
	auth := func(ctx context.Context) (kaws.Auth, error) {
		c, err := creds.Retrieve(ctx)
		if err != nil {
			return kaws.Auth{}, fmt.Errorf("retrieve AWS credentials for %s: %w", MechanismAWSMSKIAM, err)
		}
		return kaws.Auth{AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, SessionToken: c.SessionToken}, nil
	}
	if _, err := auth(ctx); err != nil {
		return nil, err
	}
	return kaws.ManagedStreamingIAM(auth), nil
}
