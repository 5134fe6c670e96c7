package testenv

import "syscall"

func sysProcAttr(detached bool) *syscall.SysProcAttr {
	if detached {
		return &syscall.SysProcAttr{Setsid: true}
	}
	// Own process group (so a kill reaches the whole tree) and killed if
	// the test binary dies (timeout panic, kill -9) without cleaning up.
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
