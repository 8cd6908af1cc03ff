package modelconfig

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	base := health.DefaultPolicy()
	base.ErrorPatterns = []string{"from base"}
	with := func(f func(p *health.Policy)) health.Policy {
		p := base
		p.ErrorPatterns = []string{"from base"}
		f(&p)
		return p
	}
	tests := []struct {
		name string
		yaml string
		want health.Policy
	}{
		{name: "empty", yaml: "", want: base},
		{name: "comments only", yaml: "# nothing here\n", want: base},
		{name: "null document", yaml: "~\n", want: base},
		{
			name: "every key",
			yaml: `period_seconds: 2.5
timeout_seconds: 0.25
failure_threshold: 3
success_threshold: 2
restart_check_delay_seconds: 15
stop_traffic_threshold_seconds: 4
restart_threshold_seconds: 12
heartbeat_timeout_seconds: 3
heartbeat_period_seconds: 0.5
execute_timeout_seconds: 60
initialize_timeout_seconds: 1200
consecutive_errors: 5
error_patterns: ["CUDA error", out of memory, 503]
min_ready_instances: 2
restart_backoff:
  initial_seconds: 0.5
  max_seconds: 120
  reset_after_seconds: 300
max_restarts: 10
restart_window_seconds: 900
`,
			want: health.Policy{
				Period: 2500 * time.Millisecond, Timeout: 250 * time.Millisecond,
				FailureThreshold: 3, SuccessThreshold: 2,
				RestartCheckDelay: 15 * time.Second, StopTrafficThreshold: 4 * time.Second,
				RestartThreshold: 12 * time.Second, HeartbeatTimeout: 3 * time.Second,
				HeartbeatPeriod: 500 * time.Millisecond, ExecuteTimeout: time.Minute,
				InitializeTimeout: 20 * time.Minute,
				ConsecutiveErrors: 5, ErrorPatterns: []string{"CUDA error", "out of memory", "503"},
				MinReadyInstances: 2, BackoffInitial: 500 * time.Millisecond,
				BackoffMax: 2 * time.Minute, BackoffReset: 5 * time.Minute,
				MaxRestarts: 10, RestartWindow: 15 * time.Minute,
			},
		},
		{
			name: "partial backoff keeps the rest",
			yaml: "restart_backoff: {max_seconds: 60}\n",
			want: with(func(p *health.Policy) { p.BackoffMax = time.Minute }),
		},
		{
			name: "empty pattern list replaces base",
			yaml: "error_patterns: []\n",
			want: with(func(p *health.Policy) { p.ErrorPatterns = []string{} }),
		},
		{
			name: "zero is allowed where it means off",
			yaml: "execute_timeout_seconds: 0\nconsecutive_errors: 0\nstop_traffic_threshold_seconds: 0\nrestart_check_delay_seconds: 0\n",
			want: base,
		},
		{
			name: "timeout above period is allowed",
			yaml: "period_seconds: 1\ntimeout_seconds: 5\n",
			want: with(func(p *health.Policy) { p.Period = time.Second; p.Timeout = 5 * time.Second }),
		},
		{
			name: "anchors and aliases",
			yaml: "period_seconds: &p 3\nrestart_window_seconds: *p\n",
			want: with(func(p *health.Policy) { p.Period = 3 * time.Second; p.RestartWindow = 3 * time.Second }),
		},
		{
			name: "integer seconds in other notations",
			yaml: "period_seconds: 1e1\ntimeout_seconds: 0x2\n",
			want: with(func(p *health.Policy) { p.Period = 10 * time.Second; p.Timeout = 2 * time.Second }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePolicy([]byte(tt.yaml), "health.yaml", base)
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !policyEqual(got, tt.want) {
				t.Errorf("ParsePolicy =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParsePolicyDoesNotAliasBase(t *testing.T) {
	t.Parallel()
	base := health.DefaultPolicy()
	base.ErrorPatterns = []string{"a", "b"}
	p, err := ParsePolicy(nil, "health.yaml", base)
	if err != nil {
		t.Fatal(err)
	}
	p.ErrorPatterns[0] = "changed"
	if base.ErrorPatterns[0] != "a" {
		t.Errorf("changing the result changed base.ErrorPatterns to %v", base.ErrorPatterns)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	t.Parallel()
	const file = "models/x/health.yaml"
	tests := []struct {
		name  string
		yaml  string
		want  string // exact error message
		field string
	}{
		{"unknown key", "period_seconds: 1\nperod_seconds: 5\n",
			file + `:2:1: unknown key "perod_seconds" (did you mean "period_seconds"?)`, "perod_seconds"},
		{"unknown key far from any", "colour: blue\n",
			file + `:1:1: unknown key "colour"`, "colour"},
		{"unknown nested key", "restart_backoff:\n  max_second: 3\n",
			file + `:2:3: unknown key "restart_backoff.max_second" (did you mean "restart_backoff.max_seconds"?)`, "restart_backoff.max_second"},
		{"Kubernetes spelling", "periodSeconds: 10\n",
			file + `:1:1: unknown key "periodSeconds" (did you mean "period_seconds"?)`, "periodSeconds"},
		{"repeated key", "period_seconds: 1\nperiod_seconds: 2\n",
			file + `:2:1: period_seconds: key repeated (first at line 1)`, "period_seconds"},
		{"string seconds", "period_seconds: ten\n",
			file + `:1:17: period_seconds: must be a number of seconds, got "ten"`, "period_seconds"},
		{"quoted number", "period_seconds: \"10\"\n",
			file + `:1:17: period_seconds: must be a number of seconds, got "10"`, "period_seconds"},
		{"list for seconds", "timeout_seconds: [1]\n",
			file + `:1:18: timeout_seconds: must be a number of seconds, got a list`, "timeout_seconds"},
		{"negative seconds", "restart_check_delay_seconds: -1\n",
			file + `:1:30: restart_check_delay_seconds: must be ≥ 0, got -1`, "restart_check_delay_seconds"},
		{"zero period", "period_seconds: 0\n",
			file + `:1:17: period_seconds: must be > 0, got 0`, "period_seconds"},
		{"sub-nanosecond period", "period_seconds: 1e-12\n",
			file + `:1:17: period_seconds: must be > 0, got 1e-12`, "period_seconds"},
		{"NaN", "timeout_seconds: .nan\n",
			file + `:1:18: timeout_seconds: must be a finite number of seconds, got .nan`, "timeout_seconds"},
		{"infinity", "execute_timeout_seconds: .inf\n",
			file + `:1:26: execute_timeout_seconds: must be a finite number of seconds, got .inf`, "execute_timeout_seconds"},
		{"too long", "restart_window_seconds: 1e12\n",
			file + `:1:25: restart_window_seconds: must be at most 9223372036 seconds, got 1e12`, "restart_window_seconds"},
		{"zero heartbeat timeout", "heartbeat_timeout_seconds: 0\n",
			file + `:1:28: heartbeat_timeout_seconds: must be > 0, got 0`, "heartbeat_timeout_seconds"},
		{"zero failure threshold", "failure_threshold: 0\n",
			file + `:1:20: failure_threshold: must be ≥ 1, got 0`, "failure_threshold"},
		{"fractional threshold", "success_threshold: 1.5\n",
			file + `:1:20: success_threshold: must be an integer, got "1.5"`, "success_threshold"},
		{"negative consecutive errors", "consecutive_errors: -1\n",
			file + `:1:21: consecutive_errors: must be ≥ 0, got -1`, "consecutive_errors"},
		{"zero min ready", "min_ready_instances: 0\n",
			file + `:1:22: min_ready_instances: must be ≥ 1, got 0`, "min_ready_instances"},
		{"zero max restarts", "max_restarts: 0\n",
			file + `:1:15: max_restarts: must be ≥ 1, got 0`, "max_restarts"},
		{"no value", "period_seconds:\n",
			file + `:1:1: period_seconds: no value given`, "period_seconds"},
		{"patterns not a list", "error_patterns: CUDA error\n",
			file + `:1:17: error_patterns: must be a list of substrings, got "CUDA error"`, "error_patterns"},
		{"empty pattern", "error_patterns: [\"x\", \"\"]\n",
			file + `:1:23: error_patterns[1]: must not be empty (it would match every error)`, "error_patterns[1]"},
		{"null pattern", "error_patterns: [\"x\", ~]\n",
			file + `:1:23: error_patterns[1]: must be a string, got "~"`, "error_patterns[1]"},
		{"mapping pattern", "error_patterns: [{a: b}]\n",
			file + `:1:18: error_patterns[0]: must be a string, got a mapping`, "error_patterns[0]"},
		{"backoff not a mapping", "restart_backoff: 5\n",
			file + `:1:18: restart_backoff must be a mapping of keys to values, got "5"`, "restart_backoff."},
		{"document not a mapping", "- period_seconds: 1\n",
			file + `:1:1: the document must be a mapping of keys to values, got a list`, ""},
		{"two documents", "period_seconds: 1\n---\nperiod_seconds: 2\n",
			file + `:2:1: only one YAML document is allowed`, ""},
		{"restart before stop traffic", "stop_traffic_threshold_seconds: 20\nrestart_threshold_seconds: 10\n",
			file + `: restart_threshold_seconds (10) must be ≥ stop_traffic_threshold_seconds (20)`, "restart_threshold_seconds"},
		{"stop traffic after base restart", "stop_traffic_threshold_seconds: 45.5\n",
			file + `: restart_threshold_seconds (30) must be ≥ stop_traffic_threshold_seconds (45.5)`, "restart_threshold_seconds"},
		{"backoff max below initial", "restart_backoff: {initial_seconds: 10, max_seconds: 5}\n",
			file + `: restart_backoff.max_seconds (5) must be ≥ restart_backoff.initial_seconds (10)`, "restart_backoff.max_seconds"},
		{"invalid YAML", "period_seconds: [1\n",
			file + `: invalid YAML: line 1: did not find expected ',' or ']'`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParsePolicy([]byte(tt.yaml), file, health.DefaultPolicy())
			if err == nil {
				t.Fatalf("ParsePolicy succeeded, want error %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("ParsePolicy error\n got: %s\nwant: %s", err, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %#v is not an *Error", err)
			}
			if ce.File != file || ce.Field != tt.field {
				t.Errorf("*Error File, Field = %q, %q, want %q, %q", ce.File, ce.Field, file, tt.field)
			}
		})
	}
}

func TestValidatePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(p *health.Policy)
		want   string // "" for valid
	}{
		{"defaults", func(*health.Policy) {}, ""},
		{"zero period", func(p *health.Policy) { p.Period = 0 }, "flags: period_seconds: must be > 0, got 0"},
		{"negative stop traffic", func(p *health.Policy) { p.StopTrafficThreshold = -time.Second }, "flags: stop_traffic_threshold_seconds: must be ≥ 0, got -1"},
		{"zero restart window", func(p *health.Policy) { p.RestartWindow = 0 }, "flags: restart_window_seconds: must be > 0, got 0"},
		{"zero success threshold", func(p *health.Policy) { p.SuccessThreshold = 0 }, "flags: success_threshold: must be ≥ 1, got 0"},
		{"empty pattern", func(p *health.Policy) { p.ErrorPatterns = []string{""} }, "flags: error_patterns[0]: must not be empty (it would match every error)"},
		{"restart before stop", func(p *health.Policy) { p.StopTrafficThreshold = time.Minute }, "flags: restart_threshold_seconds (30) must be ≥ stop_traffic_threshold_seconds (60)"},
		{"negative backoff", func(p *health.Policy) { p.BackoffInitial = -1 }, "flags: restart_backoff.initial_seconds: must be ≥ 0, got -0.000000001"},
		{"backoff below the floor", func(p *health.Policy) { p.BackoffInitial = 0 },
			"flags: restart_backoff.initial_seconds: must be ≥ 0.1 (a lower value lets a crashing model restart many times a second and burn the CPU), got 0"},
		{"negative initialize timeout", func(p *health.Policy) { p.InitializeTimeout = -time.Second }, "flags: initialize_timeout_seconds: must be ≥ 0, got -1"},
	}
	for _, tt := range tests {
		p := health.DefaultPolicy()
		tt.change(&p)
		err := ValidatePolicy(p, "flags")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: ValidatePolicy: %v", tt.name, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("%s: ValidatePolicy error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestLoadPolicyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "health.yaml")
	if err := os.WriteFile(good, []byte("heartbeat_timeout_seconds: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPolicyFile(good, health.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if p.HeartbeatTimeout != 2*time.Second || p.Period != health.DefaultPolicy().Period {
		t.Errorf("LoadPolicyFile = %+v, want heartbeat timeout 2s over the defaults", p)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("heartbeat_timeout_seconds: -2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicyFile(bad, health.DefaultPolicy()); err == nil || !strings.Contains(err.Error(), bad+":1:28: heartbeat_timeout_seconds: must be ≥ 0, got -2") {
		t.Errorf("LoadPolicyFile(bad) error = %v, want one naming the file and key", err)
	}

	if _, err := LoadPolicyFile(filepath.Join(dir, "absent.yaml"), health.DefaultPolicy()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadPolicyFile(absent) error = %v, want fs.ErrNotExist", err)
	}
}
