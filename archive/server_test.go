package archive

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMetricsEndpoint: a running archiver serves its metrics, healthz and
// readyz; the archived-offset metric reaches the produced count.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "m", 1, nil)
	cl := newClient(t, c, kgo.DefaultProduceTopic("m"))
	for i := 0; i < 30; i++ {
		produce(t, cl, &kgo.Record{Value: []byte("x")})
	}
	reg := prometheus.NewRegistry()
	a, err := New(Options{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: newStore(t),
		Registerer: reg, FlushInterval: 50 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", reg, a.Ready, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("/metrics")
		rc, _ := get("/readyz")
		if code == 200 && rc == 200 && strings.Contains(body, `kbackup_archive_offset{partition="0",topic="m"} 30`) &&
			strings.Contains(body, "kbackup_archive_commit_seconds_bucket") && strings.Contains(body, `kbackup_archive_records_total{topic="m"} 30`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed 30 archived records:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
