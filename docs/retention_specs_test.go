package docs

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/kbackup/kbackup/manifest"
	"github.com/kbackup/kbackup/testenv"
)

// The retention examples (OPERATIONS.md, "Retention"): s3://backups/clickstream
// archives clicks (2 partitions) and audit.login (1), each as a first commit
// of 300 records 45 days old and a second of 100 records 2 days old.
func init() {
	for id, s := range retentionSpecs {
		specs[id] = s
	}
}

const clickstream = "s3://backups/clickstream"

// clicksNew is when the first record of the 2-day-old part was written:
// the oldest recoverable time after a 30-day expiry.
var clicksNew time.Time

var retentionSpecs = map[string]blockSpec{
	"OPERATIONS.md#retention": {
		before: func(e *docEnv) {
			old := time.Now().Add(-45 * 24 * time.Hour).Truncate(time.Second)
			clicksNew = time.Now().Add(-48 * time.Hour).Truncate(time.Second)
			e.topic("clicks", 2)
			e.topic("audit.login", 1)
			archive := func() {
				if r := e.kbackup("archive", "--once", "--brokers", strings.Join(e.k.Brokers(), ","), "--store", e.sub(clickstream),
					"--topics", "clicks", "--topics", `audit\..*`); r.code != 0 {
					e.t.Fatalf("archive --once: exit %d\n%s", r.code, r.stderr)
				}
			}
			e.produce("clicks", 2, 300, old, time.Second)
			e.produce("audit.login", 1, 300, old, time.Second)
			archive()
			e.produce("clicks", 2, 100, clicksNew, time.Second)
			e.produce("audit.login", 1, 100, clicksNew, time.Second)
			archive()
		},
		codes: map[int]int{3: 1}, // cat below the archive start
		after: func(e *docEnv, r *blockRun) {
			for i, want := range map[int][]string{
				0: {"would expire clicks/0: archive start 0 -> 300 (retention-age): 300 records", "would expire clicks/1: archive start 0 -> 300",
					"(dry run: nothing written)"},
				1: {"expire clicks/0: archive start 0 -> 300 (retention-age): 300 records", "expire clicks/1: archive start 0 -> 300",
					"keep clicks/0 below offset 300 until", "3 partitions, 2 expired (600 records), 0 objects deleted"},
				2: {"below 300 (300 records)", "2 topics, 3 partitions, 600 records", "expired in 2 partitions: 600 records"},
				4: {"verify OK", "expired: 600 offsets below the archive start of 2 partitions", "objects await deletion"},
			} {
				for _, w := range want {
					if !strings.Contains(r.cmds[i].stdout, w) {
						e.t.Fatalf("%s lacks %q:\n%s", r.cmds[i].cmd, w, r.cmds[i].stdout)
					}
				}
			}
			if out := r.cmds[0].stdout + r.cmds[1].stdout; strings.Contains(out, "expire audit") {
				e.t.Fatalf("the audit topic expired:\n%s", out)
			}
			if errOut := r.cmds[3].stderr; !strings.Contains(errOut, "clicks/0 offset 0 is expired") ||
				!strings.Contains(errOut, "the oldest recoverable offset is 300, the oldest recoverable time "+manifest.FormatTime(clicksNew.UnixMilli())) {
				e.t.Fatalf("cat below the start:\n%s", errOut)
			}
			e.recoverable("clicks")
		},
	},
	"OPERATIONS.md#retention-now": {
		after: func(e *docEnv, r *blockRun) {
			if out := r.cmds[0].stdout; !strings.Contains(out, "delete clicks/0 below offset 300: ") || !strings.Contains(out, "delete clicks/1 below offset 300: ") {
				e.t.Fatalf("expire --grace 0s:\n%s", out)
			}
			var doc struct {
				OK               bool  `json:"ok"`
				ExpiredOffsets   int64 `json:"expired_offsets"`
				AwaitingDeletion int64 `json:"awaiting_deletion"`
				Records          int64 `json:"records"`
			}
			if err := json.Unmarshal([]byte(r.cmds[1].stdout), &doc); err != nil || !doc.OK || doc.ExpiredOffsets != 600 || doc.AwaitingDeletion != 0 ||
				doc.Records != 200+400 {
				e.t.Fatalf("verify --json (%v):\n%s", err, r.cmds[1].stdout)
			}
			e.recoverable("clicks")
			e.exact(clickstream, "audit.login")
		},
	},
}

// recoverable checks that the clickstream archive holds exactly the recoverable
// window of topic: every record from offset 300 on, as the cluster has it.
func (e *docEnv) recoverable(topic string) {
	e.t.Helper()
	var want []testenv.Record
	for _, rec := range testenv.ConsumeAll(e.t, e.k.Brokers(), topic, testenv.ReadCommitted) {
		if rec.Offset >= 300 {
			want = append(want, rec)
		}
	}
	sameRecords(e.t, clickstream+" "+topic+" window", want, e.cat(clickstream, topic))
}
