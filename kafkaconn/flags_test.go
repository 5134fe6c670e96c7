package kafkaconn

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// runApp runs an app whose root has global and whose one subcommand "sub"
// has sub flags, and returns what FromContext saw in the subcommand. Tests
// that run apps are not parallel: urfave/cli v2 writes its package-level
// HelpFlag on every run.
func runApp(t *testing.T, global, sub []cli.Flag, args ...string) Options {
	t.Helper()
	var got Options
	var called bool
	app := &cli.App{
		Name:  "kbackup",
		Flags: global,
		Commands: []*cli.Command{{
			Name:  "sub",
			Flags: sub,
			Action: func(c *cli.Context) error {
				called = true
				got = FromContext(c)
				return nil
			},
		}},
		Writer:    &bytes.Buffer{},
		ErrWriter: &bytes.Buffer{},
	}
	if err := app.Run(append([]string{"kbackup"}, args...)); err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	if !called {
		t.Fatalf("run %v: subcommand not called", args)
	}
	return got
}

func TestFlagNamesAndEnv(t *testing.T) {
	t.Parallel()
	want := []string{
		"brokers", "client-id", "tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name",
		"tls-insecure-skip-verify", "sasl-mechanism", "sasl-username", "sasl-password",
		"sasl-password-file", "aws-region", "dial-timeout",
	}
	var names []string
	for _, f := range Flags(true) {
		name := f.Names()[0]
		names = append(names, name)
		env := f.(interface{ GetEnvVars() []string }).GetEnvVars()
		if wantEnv := "KBACKUP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")); !reflect.DeepEqual(env, []string{wantEnv}) {
			t.Errorf("--%s reads %v, want [%s]", name, env, wantEnv)
		}
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("flags %v\nwant  %v", names, want)
	}
	for _, f := range Flags(false) {
		if f.Names()[0] == "brokers" {
			t.Error("Flags(false) includes --brokers")
		}
	}
	if EnvVar("tls-ca") != "KBACKUP_TLS_CA" {
		t.Errorf("EnvVar(tls-ca) = %s", EnvVar("tls-ca"))
	}
	// Fresh values every call: two flag sets never share state.
	a, b := Flags(true), Flags(true)
	for i := range a {
		if a[i] == b[i] {
			t.Errorf("Flags returned the same --%s twice", a[i].Names()[0])
		}
	}
}

func TestFromContextFlags(t *testing.T) {
	got := runApp(t, nil, Flags(true), "sub",
		"--brokers", "a:1,b:2", "--brokers", "c:3",
		"--client-id", "me",
		"--tls",
		"--tls-ca", "/ca.pem", "--tls-cert", "/cert.pem", "--tls-key", "/key.pem",
		"--tls-server-name", "kafka.internal", "--tls-insecure-skip-verify",
		"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "u",
		"--sasl-password", testPassword, "--sasl-password-file", "/pw",
		"--aws-region", "eu-west-1", "--dial-timeout", "3s",
	)
	want := Options{
		Brokers: []string{"a:1", "b:2", "c:3"}, ClientID: "me", TLS: true,
		TLSCAFile: "/ca.pem", TLSCertFile: "/cert.pem", TLSKeyFile: "/key.pem",
		TLSServerName: "kafka.internal", TLSInsecureSkipVerify: true,
		SASLMechanism: "SCRAM-SHA-512", SASLUsername: "u", SASLPassword: testPassword,
		SASLPasswordFile: "/pw", AWSRegion: "eu-west-1", DialTimeout: 3 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromContext\n got %#v\nwant %#v", got, want)
	}

	if got := runApp(t, nil, Flags(true), "sub"); !reflect.DeepEqual(got, Options{}) {
		t.Errorf("no flags: got %#v, want the zero Options", got)
	}
}

// TestFromContextEnv sets every flag through its environment variable.
// (t.Setenv rules out t.Parallel.)
func TestFromContextEnv(t *testing.T) {
	env := map[string]string{
		"KBACKUP_BROKERS":                  "a:1,b:2",
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
	got := runApp(t, nil, Flags(true), "sub")
	want := Options{
		Brokers: []string{"a:1", "b:2"}, ClientID: "me", TLS: true,
		TLSCAFile: "/ca.pem", TLSCertFile: "/cert.pem", TLSKeyFile: "/key.pem",
		TLSServerName: "kafka.internal", TLSInsecureSkipVerify: true,
		SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: testPassword,
		SASLPasswordFile: "/pw", AWSRegion: "eu-west-1", DialTimeout: 3 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromContext\n got %#v\nwant %#v", got, want)
	}
	// A flag beats its environment variable.
	if got := runApp(t, nil, Flags(true), "sub", "--sasl-username", "flag"); got.SASLUsername != "flag" {
		t.Errorf("flag did not override env: %q", got.SASLUsername)
	}

	// --help with the password in the environment does not show it.
	for _, args := range [][]string{{"kbackup", "sub", "--help"}, {"kbackup", "help", "sub"}} {
		var out bytes.Buffer
		app := &cli.App{
			Name:      "kbackup",
			Commands:  []*cli.Command{{Name: "sub", Flags: Flags(true), Action: func(*cli.Context) error { return nil }}},
			Writer:    &out,
			ErrWriter: &out,
		}
		if err := app.Run(args); err != nil {
			t.Fatal(err)
		}
		help := out.String()
		if !strings.Contains(help, "--sasl-password") || !strings.Contains(help, "KBACKUP_SASL_PASSWORD") {
			t.Fatalf("help lacks the password flag:\n%s", help)
		}
		if strings.Contains(help, testPassword) {
			t.Errorf("help %v reveals the password:\n%s", args, help)
		}
	}
}

// TestBrokersFromParent: the CLI defines --brokers once on the app and gives
// subcommands Flags(false); FromContext finds it either as BrokersFlag's
// string slice or as a plain string flag.
func TestBrokersFromParent(t *testing.T) {
	got := runApp(t, []cli.Flag{BrokersFlag()}, Flags(false), "--brokers", "a:1,b:2", "sub", "--tls")
	if !slices.Equal(got.Brokers, []string{"a:1", "b:2"}) || !got.TLS {
		t.Errorf("slice flag on the app: got %#v", got)
	}
	got = runApp(t, []cli.Flag{&cli.StringFlag{Name: "brokers"}}, Flags(false), "--brokers", "a:1,b:2", "sub")
	if !slices.Equal(got.brokers(), []string{"a:1", "b:2"}) {
		t.Errorf("string flag on the app: got %#v", got.Brokers)
	}
	got = runApp(t, nil, Flags(false), "sub")
	if got.Brokers != nil {
		t.Errorf("no brokers flag anywhere: got %#v", got.Brokers)
	}
}
