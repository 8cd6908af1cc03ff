package main

import (
	"bytes"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/api/rest"
	"github.com/vigilhq/vigil/internal/health"
)

// The documentation says what the binary does: these tests read the
// binary's own help and compare it with the docs, so that a flag added
// without its documentation, or documentation of a flag that is gone,
// fails the suite.

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// helpFlags runs `vigil <command> -h` and returns the flag names it lists.
func helpFlags(t *testing.T, command string) (names []string, help string) {
	t.Helper()
	var out, errOut bytes.Buffer
	run([]string{command, "-h"}, &out, &errOut)
	help = out.String() + errOut.String()
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("vigil %s -h lists no flags:\n%s", command, help)
	}
	return names, help
}

func TestEveryFlagIsDocumented(t *testing.T) {
	for _, tc := range []struct{ command, doc string }{
		{"serve", "docs/configuration.md"},
		{"manifests", "docs/kubernetes.md"},
		{"probe", "docs/kubernetes.md"},
	} {
		names, help := helpFlags(t, tc.command)
		doc := readDoc(t, tc.doc)
		for _, n := range names {
			if !strings.Contains(doc, "`--"+n) {
				t.Errorf("vigil %s --%s is not documented in %s", tc.command, n, tc.doc)
			}
		}
		// The flag package adds "(default X)" itself: a usage text that
		// says it too prints it twice.
		if m := regexp.MustCompile(`\(default [^)]*\) \(default `).FindString(help); m != "" {
			t.Errorf("vigil %s -h says a default twice: %q", tc.command, m)
		}
	}
}

// TestDocumentedServeFlagsExist checks the other direction for the flag
// table of docs/configuration.md: every flag it lists is a real flag.
func TestDocumentedServeFlagsExist(t *testing.T) {
	names, _ := helpFlags(t, "serve")
	doc := readDoc(t, "docs/configuration.md")
	section, _, _ := strings.Cut(doc[strings.Index(doc, "## `vigil serve` flags"):], "\n## Environment")
	for _, m := range regexp.MustCompile("`--([a-z0-9-]+)").FindAllStringSubmatch(section, -1) {
		if !slices.Contains(names, m[1]) {
			t.Errorf("docs/configuration.md documents --%s, which vigil serve does not have", m[1])
		}
	}
}

func TestREADMEListsEveryCommandAndMakeVariable(t *testing.T) {
	readme := readDoc(t, "README.md")
	var out bytes.Buffer
	usage(&out)
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z]+) {2,}`).FindAllStringSubmatch(out.String(), -1) {
		if !strings.Contains(readme, "vigil "+m[1]) {
			t.Errorf("README.md does not mention `vigil %s`", m[1])
		}
	}
	makefile := readDoc(t, "Makefile")
	for _, m := range regexp.MustCompile(`(?m)^([A-Z_]+) +\?=`).FindAllStringSubmatch(makefile, -1) {
		if !strings.Contains(readme, m[1]) {
			t.Errorf("README.md does not mention the Makefile variable %s", m[1])
		}
	}
}

// TestREADMEIdentityDatatypes checks the README's list of identity's
// datatypes against the model's configuration.
func TestREADMEIdentityDatatypes(t *testing.T) {
	cfg := readDoc(t, "examples/models/identity/config.pbtxt")
	readme := readDoc(t, "README.md")
	var row string
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(line, "| `identity` |") {
			row = line
		}
	}
	if row == "" {
		t.Fatal("README.md has no row for identity")
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`data_type: TYPE_([A-Z0-9]+)`).FindAllStringSubmatch(cfg, -1) {
		dt := m[1]
		if dt == "STRING" {
			dt = "BYTES"
		}
		if !seen[dt] {
			seen[dt] = true
			if !strings.Contains(row, dt) {
				t.Errorf("README's identity row does not name %s, which the model has", dt)
			}
		}
	}
	if !strings.Contains(row, wordFor(len(seen))+" datatypes") {
		t.Errorf("README's identity row does not say %q (the model has %d): %s", wordFor(len(seen))+" datatypes", len(seen), row)
	}
}

func wordFor(n int) string {
	words := []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen"}
	if n < len(words) {
		return words[n]
	}
	return "many"
}

type fixedHealth struct{ snap *health.Snapshot }

func (f fixedHealth) Snapshot() *health.Snapshot { return f.snap }

// TestProbeOutputMatchesDocs runs `vigil probe` against the real health
// handler and checks each line docs/kubernetes.md shows for an exit code.
func TestProbeOutputMatchesDocs(t *testing.T) {
	doc := readDoc(t, "docs/kubernetes.md")
	example := func(code string) string {
		m := regexp.MustCompile("(?m)^\\| " + code + " \\| [^|]*\\| `([^`]*)` \\|$").FindStringSubmatch(doc)
		if m == nil {
			t.Fatalf("docs/kubernetes.md has no example line for exit code %s", code)
		}
		return m[1]
	}
	snap := &health.Snapshot{Started: true, Strict: true, Models: []health.ModelHealth{{
		Name: "add_sub", Version: "1", State: health.ModelStateUnavailable, MinReady: 1, Expected: true,
		Reason:    "0 of 1 instances routable, needs 1; add_sub_0 is RESTARTING: restarting: signal SIGKILL",
		Instances: []health.InstanceHealth{{Name: "add_sub_0", State: health.StateRestarting, Reason: "restarting: signal SIGKILL"}},
	}}}
	srv := httptest.NewServer(rest.NewHealthHandler(fixedHealth{snap}, rest.Config{}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	probe := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"probe"}, args...), &out, &errOut)
		return code, strings.TrimSpace(out.String())
	}
	if code, line := probe("ready", "--addr", addr); code != 1 || !strings.HasPrefix(line, strings.TrimSuffix(example("1"), "…")) {
		t.Errorf("exit %d, %q; docs show %q", code, line, example("1"))
	}
	snap.Models[0].Ready, snap.Models[0].State, snap.Models[0].Reason = true, health.ModelStateReady, ""
	snap.Models[0].Instances[0].State = health.StateReady
	if code, line := probe("ready", "--addr", addr); code != 0 || line != example("0") {
		t.Errorf("exit %d, %q; docs show %q", code, line, example("0"))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	want := strings.Replace(example("2"), "127.0.0.1:8000", closed, 1)
	if code, line := probe("ready", "--addr", closed); code != 2 || line != want {
		t.Errorf("exit %d, %q; docs show %q", code, line, want)
	}
}
