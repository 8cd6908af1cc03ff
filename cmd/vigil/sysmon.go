package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
)

// The Go runtime's monitor thread, sysmon, parks when every P is idle, and
// the next system call any goroutine makes wakes it; once woken it polls
// every 20 µs for a millisecond or more before backing off. A server that
// answers one request at a time is idle twice per request (waiting for the
// client, waiting for the stub), so sysmon is parked, woken and set polling
// again for every request: on the 2-vCPU benchmark machine its thread made
// 3.3 of the server's 10.6 context switches per request at HTTP c=1
// (/proc/<pid>/task/*/status) and ~18 % of the server's CPU time. The
// runtime offers no setting for this except GODEBUG's schedtrace: with
// schedtrace > 0 sysmon never parks, and with nothing to retake it backs
// off to one poll every 10 ms. vigil serve runs with schedtrace at its
// largest value, so the trace it enables is written at most once per 24.8
// days of the host's monotonic clock (a single "SCHED …" line on stderr),
// unless GODEBUG already names schedtrace: GODEBUG=schedtrace=0 restores
// the runtime's default (docs/configuration.md).
const sysmonSetting = "schedtrace=2147483647"

// godebugWithSysmon returns the GODEBUG value to serve with, and whether
// it differs from godebug (which names schedtrace already, or not).
func godebugWithSysmon(godebug string) (string, bool) {
	for _, kv := range strings.Split(godebug, ",") {
		if k, _, _ := strings.Cut(strings.TrimSpace(kv), "="); k == "schedtrace" {
			return godebug, false
		}
	}
	if strings.TrimSpace(godebug) == "" {
		return sysmonSetting, true
	}
	return godebug + "," + sysmonSetting, true
}

// reexecWithSysmonSetting replaces the process with the same binary and
// arguments under GODEBUG with sysmonSetting, when GODEBUG does not name
// schedtrace yet: the runtime reads GODEBUG's scheduler settings only at
// start. It returns only when it does not re-execute, or exec failed (said
// on stderr; the server then runs with the runtime's default). The process
// keeps its PID and its name.
func reexecWithSysmonSetting(stderr io.Writer) {
	godebug, changed := godebugWithSysmon(os.Getenv("GODEBUG"))
	if !changed {
		return
	}
	env := append(withoutVar(os.Environ(), "GODEBUG"), "GODEBUG="+godebug)
	// The binary's own path, not /proc/self/exe: the kernel names the
	// process after the file executed (ps, top, /proc/<pid>/comm).
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, env)
	}
	fmt.Fprintf(stderr, "vigil: cannot re-execute with GODEBUG=%s (%v); serving with the Go runtime's default\n", godebug, err)
}

// withoutVar returns a copy of env without the entries of the variable
// name (syscall.Exec, unlike os/exec, passes duplicates on).
func withoutVar(env []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
}
