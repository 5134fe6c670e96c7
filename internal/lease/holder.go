package lease

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"
)

// Holder identifies one process running a restore: the owner of a lease
// or a worker record (docs/FORMAT.md §10.4).
type Holder struct {
	// ID is random per Run: two runs in one process are two holders.
	ID   string `json:"id"`
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// Machine identifies the kernel and pid namespace the process ran in
	// ("" when unknown): a process with the same Machine can tell whether
	// PID still runs (Gone).
	Machine string `json:"machine,omitempty"`
	// ProcStart is the process's start time in the kernel's clock ticks
	// since boot (0 when unknown); it tells a reused pid apart.
	ProcStart uint64 `json:"proc_start,omitempty"`
	StartedMs int64  `json:"started_ms"`
	Version   string `json:"version"`
}

// String is "host/pid", how messages name a holder.
func (h Holder) String() string { return fmt.Sprintf("%s/%d", h.Host, h.PID) }

// activeRuns holds the holder ids of the runs of this process that have
// not returned yet (Track).
var activeRuns sync.Map

// Track records h as a run of this process that is going on, until the
// returned function is called (when the run returns): a lease of a run of
// this process that returned is free at once (Gone).
func Track(h Holder) (untrack func()) {
	activeRuns.Store(h.ID, true)
	return func() { activeRuns.Delete(h.ID) }
}

// NewHolder describes this process for a new run.
func NewHolder(version string, now time.Time) Holder {
	var b [8]byte
	_, _ = rand.Read(b[:])
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	machine, start := selfProcess()
	return Holder{ID: hex.EncodeToString(b[:]), Host: host, PID: os.Getpid(), Machine: machine, ProcStart: start,
		StartedMs: now.UnixMilli(), Version: version}
}

// Gone reports whether h is known to have ended: it ran on this
// kernel and pid namespace, in another process, and no process with its
// pid and start time exists now. Unknown (another machine, no /proc) is
// false: such a holder is trusted until its lease expires.
func (me Holder) Gone(h Holder) bool {
	if me.Machine == "" || h.Machine != me.Machine || h.PID <= 0 {
		return false
	}
	if h.PID == me.PID && h.ProcStart == me.ProcStart {
		// Another Run of this very process: gone once it returned.
		_, running := activeRuns.Load(h.ID)
		return !running
	}
	alive, known := processAlive(h.PID, h.ProcStart)
	return known && !alive
}
