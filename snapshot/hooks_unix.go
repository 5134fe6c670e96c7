//go:build unix

package snapshot

import (
	"os/exec"
	"syscall"
)

// killGroupOnCancel runs the hook in its own process group and kills the
// whole group when it runs over (an ssh or a sleep it started included).
func killGroupOnCancel(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
}
