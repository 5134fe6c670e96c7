package archive

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/manifest"
)

func TestRetentionPolicyFor(t *testing.T) {
	t.Parallel()
	p := RetentionPolicy{Age: 24 * time.Hour, Bytes: 1 << 30,
		AgeOverrides:   []AgeOverride{{Topics: regexp.MustCompile(`^(?:audit.*)$`), Age: 0}, {Topics: regexp.MustCompile(`^(?:a.*)$`), Age: time.Hour}},
		BytesOverrides: []BytesOverride{{Topics: regexp.MustCompile(`^(?:big)$`), Bytes: 1 << 40}}}
	for topic, want := range map[string]manifest.Retention{
		"orders":  {Age: 24 * time.Hour, Bytes: 1 << 30},
		"audit.x": {Age: 0, Bytes: 1 << 30}, // the first match wins
		"ab":      {Age: time.Hour, Bytes: 1 << 30},
		"big":     {Age: 24 * time.Hour, Bytes: 1 << 40},
	} {
		if got := p.For(topic); got != want {
			t.Errorf("%s: %+v, want %+v", topic, got, want)
		}
	}
	if p.IsZero() || !(&RetentionPolicy{AgeOverrides: []AgeOverride{{Topics: regexp.MustCompile("x")}}}).IsZero() {
		t.Fatal("IsZero")
	}
}

// TestContinuousExpiry: an archiver with a retention expires the old
// commits of the partitions it owns while it archives, deletes them (no
// grace), exports the expired offsets and the archive start, and the
// archive verifies.
func TestContinuousExpiry(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "exp", 2, nil)
	cl := newClient(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	old := time.Now().Add(-10 * 24 * time.Hour)
	for p := int32(0); p < 2; p++ {
		for i := 0; i < 5; i++ {
			produce(t, cl, &kgo.Record{Topic: "exp", Partition: p, Timestamp: old.Add(time.Duration(i) * time.Millisecond), Value: []byte("old")})
		}
	}
	st := newStore(t)
	reg := prometheus.NewRegistry()
	stop := startArchiver(t, c, st, func(o *Options) {
		o.Registerer = reg
		o.Retention = RetentionPolicy{Age: 7 * 24 * time.Hour}
		o.RetentionInterval = 200 * time.Millisecond
		o.ExpiryGrace = -1
	})
	waitArchived(t, st, "exp", 10)
	for p := int32(0); p < 2; p++ {
		produce(t, cl, &kgo.Record{Topic: "exp", Partition: p, Value: []byte("new")})
	}
	waitArchived(t, st, "exp", 12)
	ctx := context.Background()
	a := openArchive(t, st)
	incs, err := a.Incarnations(ctx, "exp")
	if err != nil {
		t.Fatal(err)
	}
	id := incs[0].TopicID
	deadline := time.Now().Add(20 * time.Second)
	for p := int32(0); p < 2; p++ {
		for {
			s, err := a.Partition("exp", id, p).LoadStart(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s != nil && s.Start == 5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("partition %d: archive start %+v", p, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for {
		m := metricsText(t, reg)
		if strings.Contains(m, `kbackup_archive_expired_offsets_total{partition="1",topic="exp"} 5`) &&
			strings.Contains(m, `kbackup_archive_start_offset{partition="0",topic="exp"} 5`) &&
			strings.Contains(m, `kbackup_archive_start_offset{partition="1",topic="exp"} 5`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// It goes on archiving after the expiry.
	newer := time.Now().Add(time.Hour)
	produce(t, cl, &kgo.Record{Topic: "exp", Partition: 0, Timestamp: newer, Value: []byte("newer")})
	waitArchived(t, st, "exp", 13)
	for { // and its time key (written after the commit) is there
		if c, err := a.Partition("exp", id, 0).FindTime(ctx, newer.UnixMilli(), false); err == nil && c.Start == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the time key of the last commit is missing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var problems []string
	// The cluster still holds the expired offsets: verify --brokers does not
	// count them as missing (expiry is never a hole).
	completeness := Completeness(CompletenessOptions{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Allowance: -1})
	res, err := openArchive(t, st).Verify(ctx, manifest.VerifyOptions{Completeness: completeness}, func(f manifest.Finding) {
		if f.Severity >= manifest.SeverityWarning {
			problems = append(problems, f.String())
		}
	})
	if err != nil || len(problems) > 0 || res.ExpiredOffsets != 10 || res.AwaitingDeletion != 0 || res.Records != 3 {
		t.Fatalf("verify %+v %v\n%s", res, err, strings.Join(problems, "\n"))
	}
	if openArchive(t, st).FormatVersion() != 2 {
		t.Fatal("root not upgraded")
	}
}

// TestExpiredCounterStartsAtZero: every owned partition's expired-offsets
// counter exists at 0, as the gap counters do; without a retention no
// pass runs and nothing is upgraded.
func TestExpiredCounterStartsAtZero(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	createTopic(t, c, "zero", 1, nil)
	produce(t, newClient(t, c, kgo.DefaultProduceTopic("zero")), &kgo.Record{Value: []byte("x")})
	st := newStore(t)
	reg := prometheus.NewRegistry()
	stop := startArchiver(t, c, st, func(o *Options) { o.Registerer = reg; o.RetentionInterval = time.Millisecond })
	waitArchived(t, st, "zero", 1)
	m := metricsText(t, reg)
	if !strings.Contains(m, `kbackup_archive_expired_offsets_total{partition="0",topic="zero"} 0`) ||
		!strings.Contains(m, `kbackup_archive_start_offset{partition="0",topic="zero"} 0`) {
		t.Fatalf("metrics:\n%s", m)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if openArchive(t, st).FormatVersion() != 1 {
		t.Fatal("an archiver without retention upgraded the archive")
	}
}

// metricsText renders the registry in the text exposition format.
func metricsText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			b.WriteString(mf.GetName() + "{" + strings.Join(labels, ",") + "} " + strconv.FormatFloat(v, 'f', -1, 64) + "\n")
		}
	}
	return b.String()
}
