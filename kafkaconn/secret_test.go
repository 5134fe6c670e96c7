package kafkaconn

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// everyPrint renders v every way a log line or message might.
func everyPrint(t *testing.T, v any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%10s", "%-30v"} {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	if b, err := json.Marshal(v); err != nil {
		t.Fatalf("json.Marshal: %v", err)
	} else {
		out["json"] = string(b)
	}
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		l := slog.New(h(&buf))
		l.Info("connect", "value", v)
		l.Info("connect", slog.Any("any", v))
		l.With("with", v).Info("connect")
		l.WithGroup("g").Info("connect", "value", v)
		out[name] = buf.String()
	}
	out["error"] = fmt.Errorf("wrapped %v: %w", v, fmt.Errorf("%+v", v)).Error()
	return out
}

func TestSecretNeverPrinted(t *testing.T) {
	t.Parallel()
	o := Options{
		Brokers:       []string{"k:9092"},
		TLSCAFile:     "/etc/kafka/ca.pem",
		SASLMechanism: "SCRAM-SHA-512",
		SASLUsername:  "svc-kbackup",
		SASLPassword:  testPassword,
	}
	type wrapper struct {
		Conn Options
		Ptr  *Options
	}
	for name, v := range map[string]any{
		"secret":         o.SASLPassword,
		"secret pointer": &o.SASLPassword,
		"options":        o,
		"options ptr":    &o,
		"in a struct":    wrapper{Conn: o, Ptr: &o},
		"in a slice":     []Options{o},
		"in a map":       map[string]Secret{"pw": o.SASLPassword},
	} {
		for how, s := range everyPrint(t, v) {
			if strings.Contains(s, testPassword) {
				t.Errorf("%s printed with %s reveals the password: %s", name, how, s)
			}
			// A hex dump of the secret would not contain it literally.
			if strings.Contains(strings.ToLower(s), fmt.Sprintf("%x", testPassword)) {
				t.Errorf("%s printed with %s reveals the password in hex: %s", name, how, s)
			}
		}
	}

	if got := o.SASLPassword.String(); got != "[REDACTED]" {
		t.Errorf("String() = %q", got)
	}
	if got := Secret("").String(); got != "" {
		t.Errorf("empty Secret String() = %q, want empty so a missing secret shows", got)
	}
	if got := o.SASLPassword.Reveal(); got != testPassword {
		t.Errorf("Reveal() = %q", got)
	}
	want := "brokers=k:9092 client_id=kbackup tls=true tls_ca=/etc/kafka/ca.pem sasl=SCRAM-SHA-512 sasl_username=svc-kbackup sasl_password=[REDACTED]"
	if got := o.String(); got != want {
		t.Errorf("String()\n got %s\nwant %s", got, want)
	}
	if got := (Options{Brokers: []string{"a:1,b:2"}}).String(); got != "brokers=a:1,b:2 client_id=kbackup tls=false sasl=none" {
		t.Errorf("plain String() = %s", got)
	}
}

// TestLogsNeverHoldPassword runs a SASL produce/consume with franz-go's logs
// bridged into slog at debug level, under both handlers, and checks the logs
// have content but never the password.
func TestLogsNeverHoldPassword(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mech string
		h    func(*bytes.Buffer) slog.Handler
	}{
		{"json plain", "PLAIN", func(b *bytes.Buffer) slog.Handler {
			return slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})
		}},
		{"text scram", "SCRAM-SHA-256", func(b *bytes.Buffer) slog.Handler {
			return slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(tc.mech, "alice", testPassword))
			o := Options{
				Brokers:       c.ListenAddrs(),
				SASLMechanism: tc.mech, SASLUsername: "alice", SASLPassword: testPassword,
				Logger: slog.New(tc.h(&buf)),
			}
			o.Logger.Info("connecting", "kafka", o)
			if err := roundTrip(t, o); err != nil {
				t.Fatal(err)
			}
			// A failed login logs too.
			bad := o
			bad.SASLPassword = "wrong-" + testPassword
			if err := roundTrip(t, bad); err == nil {
				t.Fatal("wrong password accepted")
			}
			logs := buf.String()
			if !strings.Contains(logs, "sasl") || !strings.Contains(logs, "connecting") {
				t.Fatalf("franz-go's logs did not reach the slog logger:\n%s", logs)
			}
			if strings.Contains(logs, testPassword) {
				t.Errorf("logs reveal the password:\n%s", logs)
			}
		})
	}
}

func TestSecretContext(t *testing.T) {
	t.Parallel()
	// LogValue is what keeps a secret out of a handler that would
	// otherwise print the underlying string.
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Log(context.Background(), slog.LevelInfo, "x", "pw", Secret(testPassword))
	if !strings.Contains(buf.String(), "pw=[REDACTED]") {
		t.Errorf("text handler wrote %q", buf.String())
	}
}
