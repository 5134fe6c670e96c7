package restore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kbackup/kbackup/internal/logrange"
	"github.com/kbackup/kbackup/manifest"
)

// TestTimeWindows: --from/--to over out-of-order timestamps restore
// exactly the records the slow definition selects: from the first record
// with timestamp >= from, up to the first record with timestamp > to.
func TestTimeWindows(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "w", 2, 150)
	f.archive(t)
	all := map[int32][]rec{}
	for p := int32(0); p < f.parts; p++ {
		all[p], _ = archived(t, f.st, "w", p)
	}
	t0 := f.t0
	for _, tc := range []struct {
		name     string
		from, to *int64
	}{
		{"from only", ptr(t0 + 30_500), nil},
		{"to only", nil, ptr(t0 + 80_200)},
		{"window", ptr(t0 + 30_500), ptr(t0 + 80_200)},
		// exact timestamps of records; 4000 is also where an early record
		// (i=4, 3500 early... i%5==4) sits near
		{"exact bounds", ptr(t0 + 40_000), ptr(t0 + 100_000)},
		// a late record (i=9: t0+5500) lies before to=t0+6000 but after
		// records with larger timestamps: the prefix stops at the first > to
		{"to inside disorder", nil, ptr(t0 + 6_000)},
		{"before everything", nil, ptr(t0 - 10_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tgt := newCluster(t)
			o := f.opts(t, tgt)
			if tc.from != nil {
				o.Range.FromTime, o.Range.HasFromTime = *tc.from, true
			}
			if tc.to != nil {
				o.Range.ToTime, o.Range.HasToTime = *tc.to, true
			}
			run(t, o)
			got := readTopic(t, tgt, "w")
			for p := int32(0); p < f.parts; p++ {
				want := selectSlow(all[p], tc.from, tc.to)
				sameContent(t, fmt.Sprintf("w/%d %s", p, o.Range), want, got[p])
			}
		})
	}
}

// TestGroups: group offsets captured at or before the end time are
// translated: before the window to its first target offset, inside to the
// first restored record at or after it (also from a gap), after the window
// to the target end; a later capture is not used; a group with active
// members in the target is refused and nothing is written.
func TestGroups(t *testing.T) {
	t.Parallel()
	f := buildFixture(t, "g", 1, 120)
	f.archive(t)
	ctx := context.Background()
	recs, gaps := archived(t, f.st, "g", 0)
	from, to := f.t0+20_000, f.t0+90_000
	window := selectSlow(recs, &from, &to)
	first, last := window[0].Offset, window[len(window)-1].Offset
	var gap manifest.Gap
	for _, g := range gaps {
		if g.From > first+5 && g.To < last {
			gap = g
			break
		}
	}
	if gap.From == 0 {
		t.Fatalf("no gap inside the window %d..%d: %v", first, last, gaps)
	}
	inside := window[len(window)/2].Offset + 0
	offsets := map[string]int64{"before": first - 3, "inside": inside, "gap": gap.From, "after": last + 10, "at-end": last + 1}
	a, err := manifest.Open(ctx, f.st)
	if err != nil {
		t.Fatal(err)
	}
	capture := func(ms int64, shift int64) {
		gc := &manifest.GroupsCapture{CapturedMs: ms, ClusterID: "src"}
		for g, o := range offsets {
			gc.Groups = append(gc.Groups, manifest.GroupCatalog{Group: g, State: "Empty",
				Offsets: []manifest.GroupOffset{{Topic: "g", Partition: 0, Offset: o + shift, LeaderEpoch: -1}}})
		}
		if err := a.PutCatalog(ctx, gc); err != nil {
			t.Fatal(err)
		}
	}
	capture(to-1000, 0)
	capture(to+1000, 7) // after the end time: must not be used

	// expected: target offset = index of the first restored record at or after o
	expect := func(o int64) int64 {
		if o < first {
			return 0
		}
		for i, r := range window {
			if r.Offset >= o {
				return int64(i)
			}
		}
		return int64(len(window))
	}

	tgt := newCluster(t)
	o := f.opts(t, tgt)
	o.Rename = map[string]string{"g": "g2"}
	o.Range.FromTime, o.Range.HasFromTime = from, true
	o.Range.ToTime, o.Range.HasToTime = to, true
	o.Groups = mustRe(t, "before|inside|gap|after|at-end|busy")

	// An active member of "inside" in the target: refused, nothing written.
	createTopic(t, tgt, "unrelated", 1, nil)
	member := newClient(t, tgt, kgo.ConsumerGroup("inside"), kgo.ConsumeTopics("unrelated"))
	go member.PollFetches(ctx)
	waitMembers(t, tgt, "inside", 1)
	_, err = Run(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "active members") || !strings.Contains(err.Error(), "inside") {
		t.Fatalf("active group: %v", err)
	}
	assertNothingWritten(t, f, tgt, "g2")
	// A dry run shows the refusal, and every group's translated offsets
	// as the real run will commit them (predicted from the archive).
	dry := o
	dry.DryRun = true
	ds, err := Run(ctx, dry)
	if err != nil || len(ds.Plan.Refusals) != 1 || !strings.Contains(ds.Plan.Refusals[0].String(), "--force") {
		t.Fatalf("dry run: %v %+v", err, ds.Plan.Refusals)
	}
	for _, g := range ds.Plan.Groups {
		if len(g.Translated) != 1 || !g.Translated[0].Predicted || g.Translated[0].TargetOffset != expect(offsets[g.Group]) {
			t.Fatalf("dry run: group %s translated %+v, want %d", g.Group, g.Translated, expect(offsets[g.Group]))
		}
	}
	assertNothingWritten(t, f, tgt, "g2")
	member.Close()
	waitMembers(t, tgt, "inside", 0)

	sum := run(t, o)
	adm := kadm.NewClient(newClient(t, tgt))
	for g, off := range offsets {
		fo, err := adm.FetchOffsets(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := fo.Lookup("g2", 0)
		if !ok {
			t.Fatalf("group %s: no offset committed in the target (%+v)", g, sum.Groups)
		}
		if want := expect(off); got.At != want {
			t.Fatalf("group %s: source offset %d -> target %d, want %d (window %d..%d, gap %v)", g, off, got.At, want, first, last, gap)
		}
	}
	if len(sum.Groups) != len(offsets) {
		t.Fatalf("groups moved: %+v", sum.Groups)
	}
	// offsets translate does the same later from the stored map.
	res, err := TranslateGroups(ctx, TranslateOptions{Store: f.st, KafkaOpts: o.KafkaOpts, RestoreID: sum.RestoreID, Groups: mustRe(t, "gap"), DryRun: true})
	if err != nil || len(res) != 1 || res[0].Offsets[0].TargetOffset != expect(gap.From) {
		t.Fatalf("translate: %+v %v", res, err)
	}
	_ = logrange.FormatTime
}
