package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
)

// DefaultPingTimeout bounds Ping when its context has no deadline.
const DefaultPingTimeout = 15 * time.Second

// Ping checks that the cluster behind cl answers a metadata request, trying
// each known broker once (so TLS and SASL are exercised too). It returns
// when ctx is done, or after DefaultPingTimeout when ctx has no deadline, so
// an unreachable cluster fails in bounded time. The error reads
// "cannot reach Kafka at host:port,...: ..." with a hint for the usual causes
// (SASL rejected the credentials, TLS verification failed, the broker closed
// the connection, the deadline passed) and wraps franz-go's error.
func Ping(ctx context.Context, cl *kgo.Client) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPingTimeout)
		defer cancel()
	}
	// franz-go honours ctx while dialling, but a broker that accepts the
	// connection and then says nothing is only timed out by the client's
	// own request timeout (10s and more by default), so the wait for the
	// answer is bounded here. An abandoned ping ends by that timeout or
	// when the caller closes the client.
	done := make(chan error, 1)
	go func() { done <- cl.Ping(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("cannot reach Kafka at %s: %s%w", seedList(cl), hint(ctx, cl, err), err)
}

// hint explains a Ping failure in an operator's terms, ending in ": ", or
// returns "" when franz-go's own message says enough. It never quotes
// configuration values, so no secret can leak through it.
func hint(ctx context.Context, cl *kgo.Client, err error) string {
	var (
		firstEOF *kgo.ErrFirstReadEOF
		opErr    *net.OpError
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return "SASL authentication failed (check the mechanism, username and password): "
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return "the broker does not offer this SASL mechanism: "
	case isTLSVerifyError(err):
		return "TLS certificate verification failed (check the CA file and server name): "
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// A TLS alert from the broker (crypto/tls reports it this way).
		return "the broker refused the TLS handshake (check the client certificate and key): "
	case errors.As(err, &firstEOF):
		return "" // franz-go guesses TLS or SASL missing, in its own words
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		if sasls, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism); len(sasls) > 0 {
			return "the broker closed the connection (with SASL on, usually rejected credentials: check the mechanism, username and password, and whether the listener expects TLS): "
		}
		return "the broker closed the connection (does the listener expect TLS or SASL?): "
	case errors.Is(err, context.DeadlineExceeded), errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "no answer before the deadline: "
	default:
		return ""
	}
}

// seedList names the client's seed brokers for an error message.
func seedList(cl *kgo.Client) string {
	if seeds, ok := cl.OptValue(kgo.SeedBrokers).([]string); ok && len(seeds) > 0 {
		return strings.Join(seeds, ",")
	}
	return "the configured brokers"
}

// isTLSVerifyError reports whether err is a failure to verify the peer's
// certificate.
func isTLSVerifyError(err error) bool {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		hnerr x509.HostnameError
		cierr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &hnerr) || errors.As(err, &cierr)
}
