package modelconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/repository"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/<case>/want.json files")

// golden is what a successful Load of a fixture must produce; it is kept in
// testdata/<case>/want.json.
type golden struct {
	Config    json.RawMessage `json:"config"`
	Versions  []int64         `json:"versions"`
	Instances []string        `json:"instances"`
	Files     []string        `json:"model_files"`
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dir, model string
		// wantErr are substrings of the error; none means success, checked
		// against testdata/<dir>/want.json.
		wantErr []string
		// wantTyped is set when the error must be a *Error for file.
		wantFile string
		wantIs   error
	}{
		{dir: "minimal", model: "m"},
		{dir: "full", model: "add_sub"},
		{dir: "all_versions", model: "m"},
		{dir: "specific_versions", model: "m"},
		{dir: "custom_filename", model: "m"},
		{
			dir: "specific_missing", model: "m",
			wantErr:  []string{"config.pbtxt", "version_policy.specific.versions", "version 2 is not present", filepath.Join("m", "2", "model.py")},
			wantFile: filepath.Join("testdata", "specific_missing", "m", "config.pbtxt"),
		},
		{
			dir: "no_versions", model: "m",
			wantErr: []string{`model "m"`, "no version to serve", filepath.Join("no_versions", "m")},
		},
		{
			dir: "name_mismatch", model: "m",
			wantErr:  []string{"config.pbtxt", `name: "other" does not match the model directory "m"`},
			wantFile: filepath.Join("testdata", "name_mismatch", "m", "config.pbtxt"),
		},
		{
			dir: "bad_health", model: "m",
			wantErr:  []string{filepath.Join("m", "health.yaml") + ":2:1", `unknown key "perod_seconds"`, `did you mean "period_seconds"`},
			wantFile: filepath.Join("testdata", "bad_health", "m", "health.yaml"),
		},
		{
			dir: "too_few_instances", model: "m",
			wantErr:  []string{"health.yaml", "min_ready_instances: 3 is more than the 2 instance(s)"},
			wantFile: filepath.Join("testdata", "too_few_instances", "m", "health.yaml"),
		},
		{
			dir: "unknown_field", model: "m",
			wantErr:  []string{filepath.Join("m", "config.pbtxt") + ":3:1", `unknown field "dynamic_batchin"`},
			wantFile: filepath.Join("testdata", "unknown_field", "m", "config.pbtxt"),
		},
		{dir: "no_config", model: "m", wantErr: []string{"missing, and auto-complete is off"}, wantIs: fs.ErrNotExist},
		{dir: "minimal", model: "absent", wantIs: fs.ErrNotExist},
		{dir: "minimal", model: "../minimal/m", wantErr: []string{"invalid model name"}, wantIs: repository.ErrInvalidName},
		{dir: "minimal", model: "..", wantIs: repository.ErrInvalidName},
		{dir: "minimal", model: "", wantIs: repository.ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.dir+"/"+tt.model, func(t *testing.T) {
			t.Parallel()
			repo := filepath.Join("testdata", tt.dir)
			m, err := Load(repo, tt.model, health.DefaultPolicy())
			if len(tt.wantErr) > 0 || tt.wantIs != nil {
				if err == nil {
					t.Fatalf("Load(%q, %q) succeeded, want an error", repo, tt.model)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("Load error %q does not contain %q", err, s)
					}
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("Load error %q is not %v", err, tt.wantIs)
				}
				if tt.wantFile != "" {
					var ce *Error
					if !errors.As(err, &ce) || ce.File != tt.wantFile {
						t.Errorf("Load error %#v, want an *Error for file %q", err, tt.wantFile)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(%q, %q): %v", repo, tt.model, err)
			}
			if want, _ := filepath.Abs(filepath.Join(repo, tt.model)); m.Dir != want {
				t.Errorf("Dir = %q, want %q", m.Dir, want)
			}
			if m.Name != tt.model || m.Config.GetName() != tt.model {
				t.Errorf("Name = %q, Config.Name = %q, want %q", m.Name, m.Config.GetName(), tt.model)
			}
			cfgJSON, err := ToJSON(m.Config)
			if err != nil {
				t.Fatalf("ToJSON: %v", err)
			}
			got := golden{Config: cfgJSON, Versions: m.Versions, Instances: m.InstanceNames()}
			for _, v := range m.Versions {
				rel, err := filepath.Rel(m.Dir, m.ModelFile(v))
				if err != nil {
					t.Fatal(err)
				}
				got.Files = append(got.Files, filepath.ToSlash(rel))
			}
			checkGolden(t, filepath.Join(repo, "want.json"), got)
		})
	}
}

func checkGolden(t *testing.T, path string, got golden) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatal(err)
	}
	// Re-indent the embedded config so the golden file is readable.
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, buf.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("Load result differs from %s (run go test -update after checking):\ngot:\n%s\nwant:\n%s", path, pretty.Bytes(), want)
	}
}

func TestLoadPolicyOverlay(t *testing.T) {
	t.Parallel()
	base := health.DefaultPolicy()
	base.HeartbeatTimeout = 7 * time.Second // a server default from a flag
	m, err := Load(filepath.Join("testdata", "full"), "add_sub", base)
	if err != nil {
		t.Fatal(err)
	}
	want := base
	want.Period = 2500 * time.Millisecond
	want.Timeout = time.Second
	want.StopTrafficThreshold = 4 * time.Second
	want.RestartThreshold = 10 * time.Second
	want.ErrorPatterns = []string{"CUDA error", "out of memory"}
	want.MinReadyInstances = 2
	want.BackoffMax = time.Minute
	if !policyEqual(m.Policy, want) {
		t.Errorf("Policy = %+v, want %+v", m.Policy, want)
	}
}

func TestLoadInvalidServerDefaults(t *testing.T) {
	t.Parallel()
	base := health.DefaultPolicy()
	base.Period = 0
	_, err := Load(filepath.Join("testdata", "minimal"), "m", base)
	if err == nil || !strings.Contains(err.Error(), "server health policy: period_seconds: must be > 0") {
		t.Errorf("Load with invalid defaults: error %v, want one naming period_seconds", err)
	}
}

// TestLoadExamples loads the runnable example repository, which must stay
// valid.
func TestLoadExamples(t *testing.T) {
	t.Parallel()
	repo := filepath.Join("..", "..", "examples", "models")
	names, err := repository.Scan(repo)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("no example repository")
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := Load(repo, name, health.DefaultPolicy()); err != nil {
			t.Errorf("example %s: %v", name, err)
		}
	}
}

func TestInstanceNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		config string
		want   []string
	}{
		{"", []string{"m_0"}},
		{"instance_group [ { count: 3 } ]", []string{"m_0", "m_1", "m_2"}},
		{"instance_group [ { count: 2 }, { name: \"g\" kind: KIND_MODEL }, { count: 2 kind: KIND_CPU } ]", []string{"m_0", "m_1", "m_2", "m_3", "m_4"}},
	}
	for _, tt := range tests {
		cfg, err := ParseConfig([]byte(validConfig+tt.config), "config.pbtxt")
		if err != nil {
			t.Fatalf("%s: %v", tt.config, err)
		}
		m := &Model{Name: "m", Config: cfg}
		if got := m.InstanceNames(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: InstanceNames() = %v, want %v", tt.config, got, tt.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1", 1, true},
		{"42", 42, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"0", 0, false},
		{"-1", 0, false},
		{"01", 0, false},
		{"+1", 0, false},
		{"1.0", 0, false},
		{"1a", 0, false},
		{"", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseVersion(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseVersion(%q) = %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func policyEqual(a, b health.Policy) bool {
	if len(a.ErrorPatterns) == 0 && len(b.ErrorPatterns) == 0 {
		a.ErrorPatterns, b.ErrorPatterns = nil, nil
	}
	return reflect.DeepEqual(a, b)
}
