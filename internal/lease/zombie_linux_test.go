package lease

import (
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kbackup/kbackup/internal/kfaketest"
)

// TestLeaseZombieHolder: a holder killed with kill -9 whose exit nobody
// has reaped yet (its parent shell exited, and the machine's init is slow
// to reap: /proc still lists it, in state Z) is gone, so a rerun takes its
// lanes over at once (a CI machine refused the docs' kill -9 rerun).
func TestLeaseZombieHolder(t *testing.T) {
	t.Parallel()
	st, _ := kfaketest.Store(t)
	m := testMgr(t, st, time.Hour)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	start, _, ok := procStat(strconv.Itoa(pid))
	if !ok {
		t.Fatal("no /proc entry for the child")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait() //nolint:errcheck // reaped at the end: a zombie until then
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, state, _ := procStat(strconv.Itoa(pid)); state == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed child did not become a zombie")
		}
		time.Sleep(10 * time.Millisecond)
	}
	zombie := m.Me
	zombie.ID, zombie.PID, zombie.ProcStart = "killed-run", pid, start
	if m.Live(&Record{Holder: zombie, ExpiresMs: time.Now().Add(time.Hour).UnixMilli()}) {
		t.Fatal("a killed, unreaped holder counts as live")
	}
}
