package kafkaconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	file string // the CA certificate, written to the test's temp dir
}

// issued is a certificate and key signed by a testCA, in memory and on disk.
type issued struct {
	pair     tls.Certificate
	certFile string
	keyFile  string
}

// newTestCA generates a CA and writes its certificate to dir.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, pool: pool, file: file}
}

// issue signs a leaf certificate for the given usage and SANs and writes it
// and its key to dir as name.pem and name-key.pem.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage, dnsNames []string, ips []net.IP) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := issued{certFile: filepath.Join(dir, name+".pem"), keyFile: filepath.Join(dir, name+"-key.pem")}
	writePEM(t, out.certFile, "CERTIFICATE", der)
	writePEM(t, out.keyFile, "PRIVATE KEY", keyDER)
	out.pair, err = tls.LoadX509KeyPair(out.certFile, out.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pki is what the TLS tests share: a CA, a server certificate for 127.0.0.1
// and localhost, a client certificate, and an unrelated second CA.
type pki struct {
	dir     string
	ca      *testCA
	server  issued
	client  issued
	otherCA *testCA
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	return pki{
		dir:     dir,
		ca:      ca,
		server:  ca.issue(t, dir, "server", x509.ExtKeyUsageServerAuth, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}),
		client:  ca.issue(t, dir, "client", x509.ExtKeyUsageClientAuth, nil, nil),
		otherCA: newTestCA(t, dir, "other-ca"),
	}
}

// serverTLS is the broker-side configuration; mutual requires and verifies
// a client certificate from the CA.
func (p pki) serverTLS(mutual bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{p.server.pair}, MinVersion: tls.VersionTLS12}
	if mutual {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = p.ca.pool
	}
	return cfg
}

// otherClient is a client certificate signed by the unrelated CA.
func (p pki) otherClient(t *testing.T) issued {
	t.Helper()
	return p.otherCA.issue(t, p.dir, "other-client", x509.ExtKeyUsageClientAuth, nil, nil)
}
