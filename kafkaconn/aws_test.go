package kafkaconn

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
)

// isolateAWS points the AWS chain at nothing but the environment: no shared
// files, no instance metadata, so the tests make no network call.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE":                        filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE":            filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_PROFILE":                            "",
		"AWS_REGION":                             "",
		"AWS_DEFAULT_REGION":                     "",
		"AWS_ROLE_ARN":                           "",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
		"AWS_ACCESS_KEY_ID":                      "",
		"AWS_SECRET_ACCESS_KEY":                  "",
		"AWS_SESSION_TOKEN":                      "",
	} {
		t.Setenv(k, v)
	}
}

// TestAWSMSKIAMStaticCredentials builds the AWS_MSK_IAM mechanism from
// credentials in the environment and checks the signed challenge it would
// send carries them, without any network.
func TestAWSMSKIAMStaticCredentials(t *testing.T) {
	isolateAWS(t)
	const (
		keyID  = "AKIAKBACKUPTEST00001"
		secret = "kbackup/Test/Secret/Access/Key/0000000000"
		token  = "kbackup-session-token"
		host   = "b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com"
	)
	t.Setenv("AWS_ACCESS_KEY_ID", keyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", token)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o := Options{Brokers: []string{host + ":9098"}, SASLMechanism: "AWS_MSK_IAM", AWSRegion: "eu-west-1"}
	cl, err := o.NewClient(ctx)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer cl.Close()

	if cl.OptValue(kgo.DialTLSConfig) == nil {
		t.Error("AWS_MSK_IAM did not imply TLS")
	}
	mechs, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism)
	if len(mechs) != 1 || mechs[0].Name() != "AWS_MSK_IAM" {
		t.Fatalf("SASL mechanisms %v, want one AWS_MSK_IAM", mechs)
	}
	_, first, err := mechs[0].Authenticate(ctx, host+":9098")
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	var msg map[string]string
	if err := json.Unmarshal(first, &msg); err != nil {
		t.Fatalf("challenge %q: %v", first, err)
	}
	if cred := msg["x-amz-credential"]; !strings.HasPrefix(cred, keyID+"/") || !strings.Contains(cred, "/eu-west-1/kafka-cluster/aws4_request") {
		t.Errorf("x-amz-credential = %q", cred)
	}
	if got := msg["x-amz-security-token"]; got != token {
		t.Errorf("x-amz-security-token = %q", got)
	}
	if msg["host"] != host || msg["action"] != "kafka-cluster:Connect" || msg["x-amz-signature"] == "" {
		t.Errorf("challenge %v", msg)
	}
	if strings.Contains(string(first), secret) {
		t.Error("the challenge holds the secret key itself")
	}
	if s := o.String(); strings.Contains(s, secret) || !strings.Contains(s, "sasl=AWS_MSK_IAM") || !strings.Contains(s, "tls=true") {
		t.Errorf("String() = %s", s)
	}
}

// TestAWSMSKIAMNoCredentials: an empty chain fails when the options are
// built, naming the mechanism, not at the first connection.
func TestAWSMSKIAMNoCredentials(t *testing.T) {
	isolateAWS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Options{Brokers: []string{"b-1.x.kafka.eu-west-1.amazonaws.com:9098"}, SASLMechanism: "AWS_MSK_IAM"}.ClientOpts(ctx)
	if err == nil {
		t.Fatal("ClientOpts succeeded with no AWS credentials")
	}
	if !strings.Contains(err.Error(), "retrieve AWS credentials for AWS_MSK_IAM") {
		t.Errorf("error %q", err)
	}
	if ctx.Err() != nil {
		t.Errorf("credential lookup ran into the deadline: %v", err)
	}
}
