//go:build integration

package restore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kbackup/kbackup/testenv"
)

// TestRestoreCrashRandomized kills restore processes (SIGKILL) at random
// moments, 1 to 4 times per seed, then runs the same command again to the
// end: the target equals the archive, the offset map file is exact, and
// the group was moved exactly once to its translated offsets.
//
// Seeds: KBACKUP_CRASH_SEED=S runs that one seed; otherwise
// KBACKUP_CRASH_SEEDS=N (default 6, about 2-3 minutes) seeds from a random
// base, printed, so that every run explores new ones and any failure
// names its seed.
func TestRestoreCrashRandomized(t *testing.T) {
	s := newSafety(t, "crash", 3, 24_000)

	var seeds []uint64
	if v := os.Getenv("KBACKUP_CRASH_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("KBACKUP_CRASH_SEED=%q: %v", v, err)
		}
		seeds = []uint64{seed}
	} else {
		n := 6
		if v := os.Getenv("KBACKUP_CRASH_SEEDS"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 {
				t.Fatalf("KBACKUP_CRASH_SEEDS=%q: want a positive number", v)
			}
		}
		base := uint64(time.Now().UnixNano()) % 1_000_000_000
		for i := 0; i < n; i++ {
			seeds = append(seeds, base+uint64(i))
		}
	}
	t.Logf("seeds %v (reproduce one with KBACKUP_CRASH_SEED=S)", seeds)
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			began := time.Now()
			crashOnce(t, s, seed)
			t.Logf("seed %d passed in %s", seed, time.Since(began).Round(time.Millisecond))
		})
	}
}

func crashOnce(t *testing.T, s *safety, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (reproduce with KBACKUP_CRASH_SEED=%d): %s", seed, seed, fmt.Sprintf(format, args...))
	}
	dst := fmt.Sprintf("%s-c%d", s.topic, seed)
	mapFile := filepath.Join(t.TempDir(), "map.json")
	args := s.args(dst, "--groups", regexp.QuoteMeta(s.group), "--offset-map", mapFile,
		"--concurrency", strconv.Itoa(1+rng.IntN(3)))
	kills := 1 + rng.IntN(4)
	for i := 0; i < kills; i++ {
		p := s.start(t, args...)
		// A random moment: a quarter of the kills come at a random time in
		// the first 2 s (planning, leases, topic creation, the settle of
		// resumed partitions), the others once a random share of what is
		// left was written, plus up to 300 ms.
		before := s.ends(t, dst)
		what := ""
		if rng.IntN(4) == 0 {
			delay := time.Duration(rng.IntN(2000)) * time.Millisecond
			for deadline := time.Now().Add(delay); !p.Exited() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			what = fmt.Sprintf("after %s", delay)
		} else {
			goal := before + int64(rng.Float64()*float64(int64(s.total)-before))
			for deadline := time.Now().Add(30 * time.Second); !p.Exited() && s.ends(t, dst) < goal && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			what = fmt.Sprintf("past %d records", goal)
		}
		exited := p.Exited()
		p.Kill(t)
		t.Logf("run %d killed %s with %d of %d records in the target (had exited already: %v)", i, what, s.ends(t, dst), s.total, exited)
	}
	p := s.start(t, args...)
	if code := finish(t, p); code != 0 {
		fail("the final run: exit %d\n%s%s", code, p.Stdout(), p.Stderr())
	}
	m := completeLine.FindStringSubmatch(p.Stdout())
	if m == nil {
		fail("no completion line:\n%s", p.Stdout())
	}
	id := m[1]
	if !t.Run("target", func(t *testing.T) { targetEqualsArchive(t, s.k.Brokers(), dst, s.want) }) {
		fail("the target differs from the archive")
	}
	if !t.Run("offset-map", func(t *testing.T) { s.checkMap(t, id, mapFile) }) {
		fail("the offset map file is not exact")
	}
	got := testenv.RdkCommitted(t, s.k.Brokers(), dst, s.group)
	for part, at := range s.groupAt {
		if got[part] != at {
			fail("%s on %s/%d at %d, want %d (independent client)", s.group, dst, part, got[part], at)
		}
	}
	rec, err := loadGroupRecord(context.Background(), s.st, id, s.group)
	if err != nil || rec == nil || len(rec.Moves) != 1 || rec.Moves[0].State != moveMoved {
		fail("group record: %+v %v: want one finished move", rec, err)
	}
}
