package modelconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/repository"
)

// HealthFileName is the name of a model's optional health policy file.
const HealthFileName = "health.yaml"

// LoadPolicyFile reads a health policy file (the --health-config flag) and
// overlays it on base.
func LoadPolicyFile(path string, base health.Policy) (health.Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return health.Policy{}, fmt.Errorf("cannot read health policy: %w", err)
	}
	return ParsePolicy(data, path, base)
}

// ParsePolicy parses a health policy YAML document and overlays it on base:
// keys that are present replace base's values, absent keys keep them. The
// result is validated as a whole (ValidatePolicy). file is used only in
// error messages.
func ParsePolicy(data []byte, file string, base health.Policy) (health.Policy, error) {
	p := base
	p.ErrorPatterns = slices.Clone(base.ErrorPatterns)
	p.DependsOn = slices.Clone(base.DependsOn)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// An empty file (or one with only comments) overrides nothing.
		return p, validatePolicy(p, file)
	case err != nil:
		return health.Policy{}, &Error{File: file, Msg: "invalid YAML: " + trimYAMLPrefix(err), Err: err}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		e := &Error{File: file, Msg: "only one YAML document is allowed", Err: err}
		if err == nil {
			e.Line, e.Column = extra.Line, extra.Column
		}
		return health.Policy{}, e
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return p, validatePolicy(p, file)
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return p, validatePolicy(p, file)
	}
	if err := applyMapping(root, "", policyKeys, &p, file); err != nil {
		return health.Policy{}, err
	}
	return p, validatePolicy(p, file)
}

// ValidatePolicy checks a health policy, for example server defaults built
// from flags; source names where it came from in the error.
func ValidatePolicy(p health.Policy, source string) error {
	return validatePolicy(p, source)
}

// policyKey is one YAML key: set decodes its value node into the policy,
// checking what can be checked of that value alone.
type policyKey struct {
	name string
	set  func(n *yaml.Node, field, file string, p *health.Policy) error
}

// policyKeys are the keys of the health policy table (SPEC §6). The
// restart_backoff key holds the nested backoffKeys.
var policyKeys = []policyKey{
	{"period_seconds", positiveSeconds(func(p *health.Policy) *time.Duration { return &p.Period })},
	{"timeout_seconds", positiveSeconds(func(p *health.Policy) *time.Duration { return &p.Timeout })},
	{"failure_threshold", atLeast(1, func(p *health.Policy) *int { return &p.FailureThreshold })},
	{"success_threshold", atLeast(1, func(p *health.Policy) *int { return &p.SuccessThreshold })},
	{"restart_check_delay_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.RestartCheckDelay })},
	{"stop_traffic_threshold_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.StopTrafficThreshold })},
	{"restart_threshold_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.RestartThreshold })},
	{"heartbeat_timeout_seconds", positiveSeconds(func(p *health.Policy) *time.Duration { return &p.HeartbeatTimeout })},
	{"heartbeat_period_seconds", positiveSeconds(func(p *health.Policy) *time.Duration { return &p.HeartbeatPeriod })},
	{"execute_timeout_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.ExecuteTimeout })},
	{"initialize_timeout_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.InitializeTimeout })},
	{"consecutive_errors", atLeast(0, func(p *health.Policy) *int { return &p.ConsecutiveErrors })},
	{"error_patterns", setErrorPatterns},
	{"min_ready_instances", atLeast(1, func(p *health.Policy) *int { return &p.MinReadyInstances })},
	{"restart_backoff", func(n *yaml.Node, field, file string, p *health.Policy) error {
		return applyMapping(n, field+".", backoffKeys, p, file)
	}},
	{"max_restarts", atLeast(1, func(p *health.Policy) *int { return &p.MaxRestarts })},
	{"restart_window_seconds", positiveSeconds(func(p *health.Policy) *time.Duration { return &p.RestartWindow })},
	{"depends_on", setDependsOn},
}

var backoffKeys = []policyKey{
	{"initial_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.BackoffInitial })},
	{"max_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.BackoffMax })},
	{"reset_after_seconds", seconds(func(p *health.Policy) *time.Duration { return &p.BackoffReset })},
}

// applyMapping applies every key of the mapping n, rejecting unknown and
// repeated keys. prefix is the path of n ("" or "restart_backoff.").
func applyMapping(n *yaml.Node, prefix string, keys []policyKey, p *health.Policy, file string) error {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		field := "the document"
		if prefix != "" {
			field = prefix[:len(prefix)-1]
		}
		return nodeError(file, n, prefix, "%s must be a mapping of keys to values, got %s", field, describe(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], resolve(n.Content[i+1])
		if kn.Kind != yaml.ScalarNode {
			return nodeError(file, kn, "", "keys must be plain names, got %s", describe(kn))
		}
		field := prefix + kn.Value
		if line, dup := seen[kn.Value]; dup {
			return nodeError(file, kn, field, "%s: key repeated (first at line %d)", field, line)
		}
		seen[kn.Value] = kn.Line
		k := findKey(keys, kn.Value)
		if k == nil {
			names := make([]string, len(keys))
			for i, k := range keys {
				names[i] = k.name
			}
			msg := fmt.Sprintf("unknown key %q", field)
			if s := suggest(kn.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", prefix+s)
			}
			return &Error{File: file, Line: kn.Line, Column: kn.Column, Field: field, Msg: msg}
		}
		if isNull(vn) {
			return nodeError(file, kn, field, "%s: no value given", field)
		}
		if err := k.set(vn, field, file, p); err != nil {
			return err
		}
	}
	return nil
}

func findKey(keys []policyKey, name string) *policyKey {
	for i := range keys {
		if keys[i].name == name {
			return &keys[i]
		}
	}
	return nil
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func nodeError(file string, n *yaml.Node, field, format string, args ...any) *Error {
	return &Error{File: file, Line: n.Line, Column: n.Column, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// decodeScalar decodes a scalar node into v, naming field on failure.
func decodeScalar(n *yaml.Node, field, file, want string, v any) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(file, n, field, "%s: must be %s, got %s", field, want, describe(n))
	}
	if err := n.Decode(v); err != nil {
		return &Error{File: file, Line: n.Line, Column: n.Column, Field: field,
			Msg: fmt.Sprintf("%s: must be %s, got %q", field, want, n.Value), Err: err}
	}
	return nil
}

// maxSeconds is the largest number of seconds a time.Duration holds.
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

// decodeSeconds decodes a (possibly fractional) number of seconds ≥ 0.
func decodeSeconds(n *yaml.Node, field, file string) (time.Duration, error) {
	var s float64
	if err := decodeScalar(n, field, file, "a number of seconds", &s); err != nil {
		return 0, err
	}
	switch {
	case math.IsNaN(s) || math.IsInf(s, 0):
		return 0, nodeError(file, n, field, "%s: must be a finite number of seconds, got %s", field, n.Value)
	case s < 0:
		return 0, nodeError(file, n, field, "%s: must be ≥ 0, got %s", field, n.Value)
	case s > maxSeconds:
		return 0, nodeError(file, n, field, "%s: must be at most %.0f seconds, got %s", field, maxSeconds, n.Value)
	}
	return time.Duration(math.Round(s * float64(time.Second))), nil
}

func seconds(dst func(*health.Policy) *time.Duration) func(*yaml.Node, string, string, *health.Policy) error {
	return func(n *yaml.Node, field, file string, p *health.Policy) error {
		d, err := decodeSeconds(n, field, file)
		if err != nil {
			return err
		}
		*dst(p) = d
		return nil
	}
}

func positiveSeconds(dst func(*health.Policy) *time.Duration) func(*yaml.Node, string, string, *health.Policy) error {
	return func(n *yaml.Node, field, file string, p *health.Policy) error {
		d, err := decodeSeconds(n, field, file)
		if err != nil {
			return err
		}
		if d <= 0 {
			return nodeError(file, n, field, "%s: must be > 0, got %s", field, n.Value)
		}
		*dst(p) = d
		return nil
	}
}

func atLeast(lo int, dst func(*health.Policy) *int) func(*yaml.Node, string, string, *health.Policy) error {
	return func(n *yaml.Node, field, file string, p *health.Policy) error {
		// yaml.v3 would truncate 1.5 into an int: accept integers only.
		if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!int" {
			return nodeError(file, n, field, "%s: must be an integer, got %q", field, n.Value)
		}
		var v int
		if err := decodeScalar(n, field, file, "an integer", &v); err != nil {
			return err
		}
		if v < lo {
			return nodeError(file, n, field, "%s: must be ≥ %d, got %d", field, lo, v)
		}
		*dst(p) = v
		return nil
	}
}

func setErrorPatterns(n *yaml.Node, field, file string, p *health.Policy) error {
	// Any scalar is taken as written: error_patterns: [503] means "503".
	patterns, err := scalarList(n, field, file, "a list of substrings", "a string", func(v string, _ []string) string {
		if v == "" {
			return "must not be empty (it would match every error)"
		}
		return ""
	})
	if err != nil {
		return err
	}
	p.ErrorPatterns = patterns
	return nil
}

// setDependsOn reads depends_on: the models a model's readiness follows
// (the models it calls through BLS).
func setDependsOn(n *yaml.Node, field, file string, p *health.Policy) error {
	names, err := scalarList(n, field, file, "a list of model names", "a model name", func(v string, before []string) string {
		if err := repository.ValidName(v); err != nil {
			return err.Error()
		}
		if slices.Contains(before, v) {
			return fmt.Sprintf("model %q is listed twice", v)
		}
		return ""
	})
	if err != nil {
		return err
	}
	p.DependsOn = names
	return nil
}

// scalarList reads a list of scalars, each as written. list and elem say
// what the list and an element must be ("a list of model names", "a model
// name"); check refuses an element with a reason, given the elements
// before it.
func scalarList(n *yaml.Node, field, file, list, elem string, check func(v string, before []string) string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, nodeError(file, n, field, "%s: must be %s, got %s", field, list, describe(n))
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		item = resolve(item)
		f := fmt.Sprintf("%s[%d]", field, i)
		if item.Kind != yaml.ScalarNode || isNull(item) {
			return nil, nodeError(file, item, f, "%s: must be %s, got %s", f, elem, describe(item))
		}
		if reason := check(item.Value, out); reason != "" {
			return nil, nodeError(file, item, f, "%s: %s", f, reason)
		}
		out = append(out, item.Value)
	}
	return out, nil
}

// MinBackoffInitial is the floor of restart_backoff.initial_seconds.
const MinBackoffInitial = 100 * time.Millisecond

// validatePolicy checks the whole policy: the single-value rules again
// (base may come from flags) and the rules that relate two keys.
func validatePolicy(p health.Policy, file string) error {
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
	positive := []struct {
		key string
		d   time.Duration
	}{
		{"period_seconds", p.Period},
		{"timeout_seconds", p.Timeout},
		{"heartbeat_timeout_seconds", p.HeartbeatTimeout},
		{"heartbeat_period_seconds", p.HeartbeatPeriod},
		{"restart_window_seconds", p.RestartWindow},
	}
	for _, c := range positive {
		if c.d <= 0 {
			return fieldError(file, c.key, "must be > 0, got %s", secs(c.d))
		}
	}
	nonNegative := []struct {
		key string
		d   time.Duration
	}{
		{"restart_check_delay_seconds", p.RestartCheckDelay},
		{"stop_traffic_threshold_seconds", p.StopTrafficThreshold},
		{"restart_threshold_seconds", p.RestartThreshold},
		{"execute_timeout_seconds", p.ExecuteTimeout},
		{"initialize_timeout_seconds", p.InitializeTimeout},
		{"restart_backoff.initial_seconds", p.BackoffInitial},
		{"restart_backoff.max_seconds", p.BackoffMax},
		{"restart_backoff.reset_after_seconds", p.BackoffReset},
	}
	for _, c := range nonNegative {
		if c.d < 0 {
			return fieldError(file, c.key, "must be ≥ 0, got %s", secs(c.d))
		}
	}
	counts := []struct {
		key string
		v   int
		lo  int
	}{
		{"failure_threshold", p.FailureThreshold, 1},
		{"success_threshold", p.SuccessThreshold, 1},
		{"consecutive_errors", p.ConsecutiveErrors, 0},
		{"min_ready_instances", p.MinReadyInstances, 1},
		{"max_restarts", p.MaxRestarts, 1},
	}
	for _, c := range counts {
		if c.v < c.lo {
			return fieldError(file, c.key, "must be ≥ %d, got %d", c.lo, c.v)
		}
	}
	for i, pat := range p.ErrorPatterns {
		if pat == "" {
			return fieldError(file, fmt.Sprintf("error_patterns[%d]", i), "must not be empty (it would match every error)")
		}
	}
	if p.RestartThreshold < p.StopTrafficThreshold {
		return &Error{File: file, Field: "restart_threshold_seconds", Msg: fmt.Sprintf(
			"restart_threshold_seconds (%s) must be ≥ stop_traffic_threshold_seconds (%s)",
			secs(p.RestartThreshold), secs(p.StopTrafficThreshold))}
	}
	if p.BackoffInitial < MinBackoffInitial {
		return fieldError(file, "restart_backoff.initial_seconds",
			"must be ≥ %s (a lower value lets a crashing model restart many times a second and burn the CPU), got %s",
			secs(MinBackoffInitial), secs(p.BackoffInitial))
	}
	if p.BackoffMax < p.BackoffInitial {
		return &Error{File: file, Field: "restart_backoff.max_seconds", Msg: fmt.Sprintf(
			"restart_backoff.max_seconds (%s) must be ≥ restart_backoff.initial_seconds (%s)",
			secs(p.BackoffMax), secs(p.BackoffInitial))}
	}
	return nil
}

// trimYAMLPrefix drops the "yaml: " prefix of yaml.v3 errors; the file name
// takes its place.
func trimYAMLPrefix(err error) string {
	s := err.Error()
	if len(s) > 6 && s[:6] == "yaml: " {
		return s[6:]
	}
	return s
}

// ServerPolicy builds the server-wide policy from the command line:
// health.DefaultPolicy, then the --health-config file (if any), then each
// --health-default given as key=value (a top-level key; nested keys as
// restart_backoff={max_seconds: 60}).
func ServerPolicy(file string, sets []string) (health.Policy, error) {
	p := health.DefaultPolicy()
	var err error
	if file != "" {
		if p, err = LoadPolicyFile(file, p); err != nil {
			return p, err
		}
	}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return p, fmt.Errorf("--health-default %q: want key=value", kv)
		}
		if p, err = ParsePolicy([]byte(k+": "+v), "--health-default", p); err != nil {
			return p, err
		}
	}
	return p, nil
}
