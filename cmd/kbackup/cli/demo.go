package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "a zero-setup tour: in-process Kafka, a sample archive, ls, cat and verify",
		Description: "Starts an in-process Kafka (franz-go's kfake) on 127.0.0.1, produces a realistic sample\n" +
			"(keys, headers, tombstones, several topics, a consumer group), archives it into a local\n" +
			"directory and runs ls, cat and verify on it, explaining each step. Nothing else is needed.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "archive into this `DIR` (default: a new temporary directory, kept afterwards)"},
		},
		Action: runDemo,
	}
}

// demoStep prints an explanation and the command, then runs it.
type demo struct {
	ctx context.Context
	out io.Writer
	err io.Writer
	env func(string) (string, bool)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n"+format+"\n", args...)
}

func (d *demo) run(args ...string) error {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if a == "" {
			shown[i] = "''"
		}
	}
	fmt.Fprintf(d.out, "\n  $ kbackup %s\n\n", strings.Join(shown, " "))
	// The tour's own commands log only errors, to keep the output readable.
	full := append([]string{"kbackup"}, args...)
	full = append(full, "--log-level", "error")
	if code := run(d.ctx, full, indent{d.out}, d.err, d.env); code != ExitOK {
		return fmt.Errorf("demo step `kbackup %s` failed (exit %d)", strings.Join(args, " "), code)
	}
	return nil
}

// indent prefixes every line with four spaces.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	s := strings.ReplaceAll(string(p), "\n", "\n    ")
	if strings.HasSuffix(s, "    ") {
		s = strings.TrimSuffix(s, "    ")
	}
	if _, err := io.WriteString(i.w, "    "+strings.TrimPrefix(s, "    ")); err != nil {
		return 0, err
	}
	return len(p), nil
}

func runDemo(c *cli.Context) error {
	ctx := c.Context
	dir := c.String("dir")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "kbackup-demo-"); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(dir, "/") {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		dir = wd + "/" + dir
	}
	lookup, _ := c.App.Metadata[metaEnv].(func(string) (string, bool))
	// The tour sets its own flags: ignore KBACKUP_* variables of the shell.
	noEnv := func(k string) (string, bool) {
		if strings.HasPrefix(k, "KBACKUP_") {
			return "", false
		}
		if lookup != nil {
			return lookup(k)
		}
		return "", false
	}
	d := &demo{ctx: ctx, out: c.App.Writer, err: c.App.ErrWriter, env: noEnv}
	store := "file://" + dir

	d.say("kbackup demo — a tour on an in-process Kafka (kfake) and a local directory archive.\n\n" +
		"1. Starting Kafka in this process and producing a sample: topic 'orders' (3 partitions, keys,\n" +
		"   headers with duplicates, out-of-order timestamps), 'customers' (updates and tombstones: null\n" +
		"   values), 'clicks' (empty keys and values); consumer group 'billing' commits offsets midway.")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return fmt.Errorf("start in-process Kafka: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()[0]
	if err := produceDemo(ctx, brokers); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   Kafka is at %s; the archive goes to %s\n", brokers, dir)

	d.say("2. Archive everything, once. In production this runs continuously (a Deployment); every\n" +
		"   partition is written in offset order into compressed segments, and progress lives in the\n" +
		"   store, so a restart resumes exactly where the last commit ended.")
	if err := d.run("archive", "--once", "--group", "", "--brokers", brokers, "--store", store); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    (archived)\n")

	d.say("3. What the archive holds: per partition, the offset and time range, records, bytes and gaps.")
	if err := d.run("ls", "--store", store); err != nil {
		return err
	}

	d.say("4. Records come back exactly: null (tombstone) is not empty, headers keep order and duplicates,\n" +
		"   timestamps and their type are kept. Here the 'customers' topic, as JSON lines (base64 bytes):")
	if err := d.run("cat", "--store", store, "--topic", "customers"); err != nil {
		return err
	}

	d.say("5. A point in time: 'orders' partition 0 as it was up to a moment, found through the time index\n" +
		"   with a handful of store requests (all offsets before the first record after that time):")
	if err := d.run("cat", "--store", store, "--topic", "orders", "--partition", "0", "--to", time.UnixMilli(demoBase+3*60_000).UTC().Format(time.RFC3339)); err != nil {
		return err
	}

	d.say("6. Verify: checksums of every block and segment, the commit chain, every gap explained, and,\n" +
		"   with --brokers, that the archive holds everything the live cluster holds.")
	if err := d.run("verify", "--store", store, "--brokers", brokers); err != nil {
		return err
	}
	mapFile := dir + "/orders.offset-map.json"
	d.say("7. Restore 'orders' from a point in time on, under a new name, and move consumer group 'billing'\n" +
		"   (as the archive captured it) to the translated offsets: it committed offset 12 on every\n" +
		"   'orders' partition; on 'orders-restored' it resumes at the first restored record at or after\n" +
		"   that offset. The offset map says where every restored source offset landed.")
	from := time.UnixMilli(demoBase + 2*60_000).UTC().Format(time.RFC3339)
	if err := d.run("restore", "--brokers", brokers, "--store", store, "--topics", "orders", "--rename", "orders=orders-restored",
		"--from", from, "--groups", "billing", "--offset-map", mapFile); err != nil {
		return err
	}
	if b, err := os.ReadFile(mapFile); err == nil {
		var pretty bytes.Buffer
		if json.Indent(&pretty, b, "", "  ") == nil {
			b = pretty.Bytes()
		}
		fmt.Fprintf(d.out, "\n  The offset map (%s):\n\n", mapFile)
		_, _ = indent{d.out}.Write(append(b, '\n'))
	}
	if err := showGroup(ctx, d.out, brokers, "billing", "orders-restored"); err != nil {
		return err
	}

	d.say("Done. The archive stays in %s: try `kbackup ls --store %s --json`.\n"+
		"Next: docs/OPERATIONS.md (deploying the archiver, restore runbook, snapshot cycles).", dir, store)
	return nil
}

// showGroup prints group's committed offsets on topic.
func showGroup(ctx context.Context, w io.Writer, brokers, group, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return err
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return fmt.Errorf("fetch offsets of %s: %w", group, err)
	}
	fmt.Fprintf(w, "\n  Group %q now commits, on %s:\n\n", group, topic)
	for _, o := range offs.Sorted() {
		if o.Topic == topic {
			fmt.Fprintf(w, "    partition %d: offset %d\n", o.Partition, o.At)
		}
	}
	return nil
}

// demoBase is the sample's first timestamp (2026-11-18T14:00:00Z).
const demoBase = int64(1795010400000)

func produceDemo(ctx context.Context, brokers string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	compact := "compact"
	for _, t := range []struct {
		name    string
		parts   int32
		configs map[string]*string
	}{{"orders", 3, nil}, {"customers", 1, map[string]*string{"cleanup.policy": &compact}}, {"clicks", 2, nil}} {
		if _, err := adm.CreateTopic(ctx, t.parts, 1, t.configs, t.name); err != nil {
			return fmt.Errorf("create topic %s: %w", t.name, err)
		}
	}
	var recs []*kgo.Record
	for i := 0; i < 60; i++ {
		ts := demoBase + int64(i)*15_000
		if i%10 == 7 {
			ts -= 90_000 // a late record: timestamps are not in offset order
		}
		recs = append(recs, &kgo.Record{Topic: "orders", Partition: int32(i % 3), Timestamp: time.UnixMilli(ts),
			Key:   []byte("customer-" + strconv.Itoa(i%7)),
			Value: []byte(fmt.Sprintf(`{"order":%d,"amount":%d.%02d,"currency":"EUR"}`, 1000+i, 10+i*3, i%100)),
			Headers: []kgo.RecordHeader{{Key: "trace-id", Value: []byte(fmt.Sprintf("%016x", i*7919))},
				{Key: "tag", Value: []byte("web")}, {Key: "tag", Value: []byte("eu")}}})
	}
	for i, v := range []string{`{"name":"Ada"}`, `{"name":"Grace"}`, "", `{"name":"Ada L."}`, ""} {
		r := &kgo.Record{Topic: "customers", Timestamp: time.UnixMilli(demoBase + int64(i)*60_000), Key: []byte("customer-" + strconv.Itoa(i%3))}
		if v != "" {
			r.Value = []byte(v)
		} // else: a tombstone (null value)
		recs = append(recs, r)
	}
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: "clicks", Partition: int32(i % 2), Timestamp: time.UnixMilli(demoBase + int64(i)*1000),
			Key: []byte{}, Value: []byte{}, Headers: []kgo.RecordHeader{{Key: "empty", Value: []byte{}}, {Key: "null", Value: nil}}})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce sample: %w", err)
	}
	offs := kadm.Offsets{}
	for p := int32(0); p < 3; p++ {
		offs.Add(kadm.Offset{Topic: "orders", Partition: p, At: 12, LeaderEpoch: -1})
	}
	if _, err := adm.CommitOffsets(ctx, "billing", offs); err != nil {
		return fmt.Errorf("commit group offsets: %w", err)
	}
	return nil
}
