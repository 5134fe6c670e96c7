package cli

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/kafkaconn"
)

const testPassword = "hunter2-Sup3rS3cr3t"

// runApp runs an app whose one subcommand "sub" has the Kafka connection
// flags (environment assigned as in the real app) and returns what
// kafkaConnOptions saw. Not parallel: the environment is the process's.
func runApp(t *testing.T, args ...string) kafkaconn.Options {
	t.Helper()
	var got kafkaconn.Options
	var called bool
	sub := &cli.Command{
		Name:  "sub",
		Flags: kafkaFlags(),
		Action: func(c *cli.Context) error {
			called = true
			got = kafkaConnOptions(c)
			return nil
		},
	}
	assignEnv(sub, "sub")
	app := &cli.App{Name: "kbackup", Commands: []*cli.Command{sub}, Writer: &bytes.Buffer{}, ErrWriter: &bytes.Buffer{}}
	if err := app.Run(append([]string{"kbackup"}, args...)); err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	if !called {
		t.Fatalf("run %v: subcommand not called", args)
	}
	return got
}

func TestKafkaFlagNamesAndEnv(t *testing.T) {
	t.Parallel()
	want := []string{
		"client-id", "tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name",
		"tls-insecure-skip-verify", "sasl-mechanism", "sasl-username", "sasl-password",
		"sasl-password-file", "aws-region", "dial-timeout",
	}
	// In every command, each connection flag reads KBACKUP_<FLAG> only.
	for _, cmd := range newApp(&bytes.Buffer{}, &bytes.Buffer{}, nil).Commands {
		var names []string
		for _, f := range cmd.Flags {
			if flagCategory(f) != kafkaFlagCategory {
				continue
			}
			name := f.Names()[0]
			names = append(names, name)
			env := f.(interface{ GetEnvVars() []string }).GetEnvVars()
			if wantEnv := "KBACKUP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")); !reflect.DeepEqual(env, []string{wantEnv}) {
				t.Errorf("%s --%s reads %v, want [%s]", cmd.Name, name, env, wantEnv)
			}
		}
		if names != nil && !reflect.DeepEqual(names, want) {
			t.Errorf("%s: flags %v\nwant  %v", cmd.Name, names, want)
		}
	}
	// Fresh values every call: two flag sets never share state.
	a, b := kafkaFlags(), kafkaFlags()
	for i := range a {
		if a[i] == b[i] {
			t.Errorf("kafkaFlags returned the same --%s twice", a[i].Names()[0])
		}
	}
}

func TestKafkaFlagsToOptions(t *testing.T) {
	got := runApp(t, "sub",
		"--client-id", "me",
		"--tls",
		"--tls-ca", "/ca.pem", "--tls-cert", "/cert.pem", "--tls-key", "/key.pem",
		"--tls-server-name", "kafka.internal", "--tls-insecure-skip-verify",
		"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "u",
		"--sasl-password", testPassword, "--sasl-password-file", "/pw",
		"--aws-region", "eu-west-1", "--dial-timeout", "3s",
	)
	want := kafkaconn.Options{
		ClientID: "me", TLS: true,
		TLSCAFile: "/ca.pem", TLSCertFile: "/cert.pem", TLSKeyFile: "/key.pem",
		TLSServerName: "kafka.internal", TLSInsecureSkipVerify: true,
		SASLMechanism: "SCRAM-SHA-512", SASLUsername: "u", SASLPassword: testPassword,
		SASLPasswordFile: "/pw", AWSRegion: "eu-west-1", DialTimeout: 3 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kafkaConnOptions\n got %#v\nwant %#v", got, want)
	}
	// No flags: the library's defaults, shown by --help, are what is used.
	if got := runApp(t, "sub"); !reflect.DeepEqual(got, kafkaconn.Options{ClientID: kafkaconn.DefaultClientID, DialTimeout: kafkaconn.DefaultDialTimeout}) {
		t.Errorf("no flags: got %#v", got)
	}
}

// TestKafkaFlagsFromEnv sets every connection flag through its environment
// variable. (t.Setenv rules out t.Parallel.)
func TestKafkaFlagsFromEnv(t *testing.T) {
	env := map[string]string{
		"KBACKUP_CLIENT_ID":                "me",
		"KBACKUP_TLS":                      "true",
		"KBACKUP_TLS_CA":                   "/ca.pem",
		"KBACKUP_TLS_CERT":                 "/cert.pem",
		"KBACKUP_TLS_KEY":                  "/key.pem",
		"KBACKUP_TLS_SERVER_NAME":          "kafka.internal",
		"KBACKUP_TLS_INSECURE_SKIP_VERIFY": "true",
		"KBACKUP_SASL_MECHANISM":           "PLAIN",
		"KBACKUP_SASL_USERNAME":            "u",
		"KBACKUP_SASL_PASSWORD":            testPassword,
		"KBACKUP_SASL_PASSWORD_FILE":       "/pw",
		"KBACKUP_AWS_REGION":               "eu-west-1",
		"KBACKUP_DIAL_TIMEOUT":             "3s",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	got := runApp(t, "sub")
	want := kafkaconn.Options{
		ClientID: "me", TLS: true,
		TLSCAFile: "/ca.pem", TLSCertFile: "/cert.pem", TLSKeyFile: "/key.pem",
		TLSServerName: "kafka.internal", TLSInsecureSkipVerify: true,
		SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: testPassword,
		SASLPasswordFile: "/pw", AWSRegion: "eu-west-1", DialTimeout: 3 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kafkaConnOptions\n got %#v\nwant %#v", got, want)
	}
	// A flag beats its environment variable.
	if got := runApp(t, "sub", "--sasl-username", "flag"); got.SASLUsername != "flag" {
		t.Errorf("flag did not override env: %q", got.SASLUsername)
	}

	// --help of the real commands, with the password in the environment,
	// does not show it.
	for _, args := range [][]string{{"archive", "--help"}, {"restore", "-h"}, {"verify", "--help"}} {
		out, _, code := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(out, "--sasl-password") || !strings.Contains(out, "KBACKUP_SASL_PASSWORD") {
			t.Fatalf("%v: exit %d, help lacks the password flag:\n%s", args, code, out)
		}
		if strings.Contains(out, testPassword) {
			t.Errorf("help %v reveals the password:\n%s", args, out)
		}
	}
}
