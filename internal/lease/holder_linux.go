//go:build linux

package lease

import (
	"os"
	"strconv"
	"strings"
)

// selfProcess returns this process's machine identity (boot id and pid
// namespace) and start time, or "" and 0 when /proc does not tell.
func selfProcess() (machine string, start uint64) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", 0
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return "", 0
	}
	start, _, ok := procStat("self")
	if !ok {
		return "", 0
	}
	return strings.TrimSpace(string(boot)) + "/" + ns, start
}

// processAlive reports whether process pid runs and started at start
// (clock ticks since boot). known is false when /proc cannot tell.
func processAlive(pid int, start uint64) (alive, known bool) {
	got, state, ok := procStat(strconv.Itoa(pid))
	if ok && (state == "Z" || state == "X") {
		// A killed process nobody has reaped yet (its parent exited and
		// the machine's init does not reap quickly) is gone all the same.
		return false, true
	}
	if !ok {
		if _, err := os.Stat("/proc/self/stat"); err != nil {
			return false, false // no /proc at all
		}
		return false, true
	}
	return start == 0 || got == start, true
}

// procStat reads fields 3 (state) and 22 (starttime) of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses: fields are
// counted after its closing parenthesis.
func procStat(pid string) (start uint64, state string, ok bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, "", false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return v, f[0], true
}
