package cli

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/manifest"
)

func catCommand() *cli.Command {
	return &cli.Command{
		Name:  "cat",
		Usage: "print archived records as JSON lines",
		Description: "Prints one JSON object per record, partition by partition in ascending order,\n" +
			"each partition in offset order:\n" +
			`  {"topic","partition","offset","timestamp","timestamp_type","key","value","headers":[{"key","value"}]}` + "\n" +
			"timestamp is unix milliseconds, timestamp_type CreateTime or LogAppendTime; key, value and\n" +
			"header values are base64 (standard encoding), null for null; header keys are strings.\n" +
			"TIME is RFC 3339 (2024-05-01T14:03:00Z), a date (2024-05-01: UTC midnight), unix milliseconds,\n" +
			"now, or relative to now (-2h, -30m, -7d). --from T starts at the first\n" +
			"offset whose timestamp is >= T; --to T stops before the first record whose timestamp is\n" +
			"after T. Offset bounds are inclusive. Bounds combine. Without --from or --from-offset, a\n" +
			"partition whose oldest offsets expired (kbackup expire) starts at its archive start (logged);\n" +
			"a bound below the archive start fails, naming the oldest recoverable offset and time.",
		Flags: append(globalFlags(),
			&cli.StringFlag{Name: "topic", Usage: "the `TOPIC` to print (required)"},
			&cli.Int64Flag{Name: "partition", Usage: "only this `PARTITION` (default: all)"},
			&cli.StringFlag{Name: "from", Usage: "start at the first offset whose timestamp is >= `TIME`"},
			&cli.StringFlag{Name: "to", Usage: "stop before the first record whose timestamp is after `TIME`"},
			&cli.Int64Flag{Name: "from-offset", Usage: "first `OFFSET` (inclusive)"},
			&cli.Int64Flag{Name: "to-offset", Usage: "last `OFFSET` (inclusive)"},
			&cli.StringFlag{Name: "topic-id", Usage: "the topic incarnation (its `HEX` id or a unique prefix, see ls) (default: the current one)"},
		),
		Action: runCat,
	}
}

// catRange maps the bound flags onto a logrange.Range.
func catRange(c *cli.Context) (logrange.Range, error) {
	var r logrange.Range
	if c.IsSet("from-offset") {
		r.FromOffset, r.HasFromOffset = c.Int64("from-offset"), true
		if r.FromOffset < 0 {
			return r, usagef(c, "--from-offset %d is negative", r.FromOffset)
		}
	}
	if c.IsSet("to-offset") {
		r.ToOffset, r.HasToOffset = c.Int64("to-offset"), true
		if r.ToOffset < 0 {
			return r, usagef(c, "--to-offset %d is negative", r.ToOffset)
		}
	}
	var err error
	if c.IsSet("from") {
		if r.FromTime, err = logrange.ParseTime(c.String("from")); err != nil {
			return r, usagef(c, "--from: %v", err)
		}
		r.HasFromTime = true
	}
	if c.IsSet("to") {
		if r.ToTime, err = logrange.ParseTime(c.String("to")); err != nil {
			return r, usagef(c, "--to: %v", err)
		}
		r.HasToTime = true
	}
	return r, nil
}

func runCat(c *cli.Context) error {
	ctx := c.Context
	s, err := setup(c)
	if err != nil {
		return err
	}
	topic := c.String("topic")
	if topic == "" {
		return usagef(c, "--topic is required")
	}
	if err := manifest.ValidTopic(topic); err != nil {
		return usagef(c, "--topic: %v", err)
	}
	var partition int32 = -1
	if c.IsSet("partition") {
		p := c.Int64("partition")
		if p < 0 || p > 1<<31-1 {
			return usagef(c, "--partition %d out of range", p)
		}
		partition = int32(p)
	}
	r, err := catRange(c)
	if err != nil {
		return err
	}
	a, err := openArchive(ctx, c, s)
	if err != nil {
		return err
	}
	inc, err := pickIncarnation(c, a, topic, c.String("topic-id"))
	if err != nil {
		return err
	}
	parts, err := a.Partitions(ctx, topic, inc.TopicID)
	if err != nil {
		return err
	}
	if partition >= 0 {
		found := false
		for _, p := range parts {
			found = found || p == partition
		}
		if !found {
			return fmt.Errorf("partition %d of topic %s is not in the archive (archived partitions: %s); nothing written",
				partition, topic, partitionList(parts))
		}
		parts = []int32{partition}
	}
	s.log.Debug("cat", "topic", topic, "topic_id", inc.TopicID.String(), "partitions", len(parts), "range", r.String())
	w := bufio.NewWriterSize(s.stdout, 256<<10)
	var line []byte
	for _, pn := range parts {
		p := a.Partition(topic, inc.TopicID, pn)
		var last int64 = -1
		err := logrange.Scan(ctx, p, r, func(it manifest.ScanItem) error {
			if it.Record == nil {
				return nil
			}
			last = it.Record.Offset
			line = appendRecordJSON(line[:0], topic, pn, it.Record)
			_, err := w.Write(line)
			return err
		})
		if errors.Is(err, manifest.ErrExpired) {
			_ = w.Flush()
			return fmt.Errorf("cat: %w", err)
		}
		if err != nil {
			_ = w.Flush()
			at := "at the start"
			if last >= 0 {
				at = fmt.Sprintf("after offset %d", last)
			}
			return fmt.Errorf("cat %s/%d stopped %s (output incomplete): %w", topic, pn, at, err)
		}
		if !r.LowerBound() {
			// Say that the partition was printed from its archive start.
			if st, err := p.ArchiveStart(ctx); err == nil && st != nil {
				args := []any{"partition", p.String(), "archive_start", st.Start}
				if ms, ok := st.RecoverableFrom(); ok {
					args = append(args, "oldest_recoverable_time", logrange.FormatTime(ms))
				}
				s.log.Info("printed from the archive start: the offsets below it are expired (retention)", args...)
			}
		}
	}
	return w.Flush()
}

// pickIncarnation returns the incarnation of topic that idPrefix names
// (a full topic id or a unique prefix), or the current one for "".
func pickIncarnation(c *cli.Context, a *manifest.Archive, topic, idPrefix string) (*manifest.TopicMarker, error) {
	notArchived := func() error {
		return fmt.Errorf("topic %s is not in the archive at %s (kbackup ls lists the archived topics); nothing written", topic, a.Store())
	}
	if idPrefix == "" {
		cur, err := a.CurrentIncarnation(c.Context, topic)
		if errors.Is(err, manifest.ErrNoIncarnation) {
			return nil, notArchived()
		}
		return cur, err
	}
	incs, err := a.Incarnations(c.Context, topic)
	if err != nil {
		return nil, err
	}
	if len(incs) == 0 {
		return nil, notArchived()
	}
	idPrefix = strings.ToLower(idPrefix)
	var match []*manifest.TopicMarker
	var ids []string
	for _, m := range incs {
		ids = append(ids, m.TopicID.String())
		if strings.HasPrefix(m.TopicID.String(), idPrefix) {
			match = append(match, m)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return nil, fmt.Errorf("topic %s has no incarnation with id %s in the archive (archived ids: %s); nothing written",
			topic, idPrefix, strings.Join(ids, ", "))
	}
	return nil, usagef(c, "--topic-id %s matches several incarnations of %s (%s): give more digits", idPrefix, topic, strings.Join(ids, ", "))
}

// partitionList renders partition numbers compactly: "0-3,7".
func partitionList(parts []int32) string {
	if len(parts) == 0 {
		return "none"
	}
	var b strings.Builder
	for i := 0; i < len(parts); {
		j := i
		for j+1 < len(parts) && parts[j+1] == parts[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j == i {
			fmt.Fprint(&b, parts[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", parts[i], parts[j])
		}
		i = j + 1
	}
	return b.String()
}

// appendRecordJSON appends one cat line, fields in the contract's order:
// {"topic","partition","offset","timestamp","timestamp_type","key","value","headers":[{"key","value"}]}.
func appendRecordJSON(b []byte, topic string, partition int32, r *manifest.Record) []byte {
	b = append(b, `{"topic":`...)
	b = appendJSONString(b, topic)
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, r.Offset, 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, r.Timestamp, 10)
	b = append(b, `,"timestamp_type":"`...)
	b = append(b, r.TimestampType.String()...)
	b = append(b, `","key":`...)
	b = appendBase64(b, r.Key)
	b = append(b, `,"value":`...)
	b = appendBase64(b, r.Value)
	b = append(b, `,"headers":[`...)
	for i, h := range r.Headers {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":`...)
		b = appendJSONString(b, h.Key)
		b = append(b, `,"value":`...)
		b = appendBase64(b, h.Value)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// appendBase64 appends v as a base64 JSON string, or null for nil.
func appendBase64(b, v []byte) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 (Kafka header
// keys are meant to be UTF-8) becomes U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	plain := utf8.ValidString(s)
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= 0x20 && s[i] != '"' && s[i] != '\\' && s[i] < 0x7f
	}
	if plain {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

var _ io.Writer = (*bufio.Writer)(nil)
