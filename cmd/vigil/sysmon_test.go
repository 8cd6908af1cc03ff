package main

import (
	"slices"
	"testing"
)

func TestGodebugWithSysmon(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		changed  bool
	}{
		{"", sysmonSetting, true},
		{"  ", sysmonSetting, true},
		{"madvdontneed=0", "madvdontneed=0," + sysmonSetting, true},
		{"schedtrace=0", "schedtrace=0", false},
		{"gctrace=1, schedtrace=1000", "gctrace=1, schedtrace=1000", false},
		{"schedtracex=1", "schedtracex=1," + sysmonSetting, true},
	} {
		got, changed := godebugWithSysmon(tc.in)
		if got != tc.want || changed != tc.changed {
			t.Errorf("godebugWithSysmon(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
}

func TestWithoutVar(t *testing.T) {
	env := []string{"A=1", "GODEBUG=x=1", "GODEBUGX=2", "B=3"}
	got := withoutVar(env, "GODEBUG")
	if want := []string{"A=1", "GODEBUGX=2", "B=3"}; !slices.Equal(got, want) {
		t.Errorf("withoutVar = %q, want %q", got, want)
	}
	if env[1] != "GODEBUG=x=1" {
		t.Errorf("withoutVar changed its argument: %q", env)
	}
}
