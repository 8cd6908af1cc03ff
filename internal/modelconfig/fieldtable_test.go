package modelconfig

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// fieldTable reads the config.pbtxt field table of docs/configuration.md:
// each field named in a row's first column (qualified as "input.format"
// for nested ones) and that row's status.
func fieldTable(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := regexp.MustCompile("`([a-z_.]+)`")
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| field | status |") {
			in = true
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cols := strings.Split(line, "|")
		if len(cols) < 4 || strings.HasPrefix(strings.TrimSpace(cols[1]), "---") {
			continue
		}
		status := strings.TrimSpace(cols[2])
		for _, m := range names.FindAllStringSubmatch(cols[1], -1) {
			out[m[1]] = status
		}
	}
	if len(out) == 0 {
		t.Fatal("no config.pbtxt field table (| field | status | notes |) in docs/configuration.md")
	}
	return out
}

// TestFieldTableMatchesCode holds docs/configuration.md's field table to
// the code: every field vigil parses is listed as supported, every Triton
// field it refuses is listed as refused, and each refused top-level field
// really fails a load with "unsupported field".
func TestFieldTableMatchesCode(t *testing.T) {
	table := fieldTable(t)
	cfg := (&inferencepb.ModelConfig{}).ProtoReflect().Descriptor()
	for i := 0; i < cfg.Fields().Len(); i++ {
		f := cfg.Fields().Get(i)
		name := string(f.Name())
		if table[name] != "supported" {
			t.Errorf("docs/configuration.md: field %q is parsed but its row says %q, want supported", name, table[name])
		}
		if f.Kind() != protoreflect.MessageKind || f.IsMap() || name == "version_policy" {
			continue
		}
		sub := f.Message()
		for j := 0; j < sub.Fields().Len(); j++ {
			q := name + "." + string(sub.Fields().Get(j).Name())
			if table[q] != "supported" {
				t.Errorf("docs/configuration.md: field %q is parsed but its row says %q, want supported", q, table[q])
			}
		}
	}
	refused := 0
	for name, status := range table {
		base := name[strings.LastIndex(name, ".")+1:]
		if status == "refused" {
			refused++
			if !isTritonOnlyField(base) {
				t.Errorf("docs/configuration.md lists %q as refused, but the parser does not refuse it as a Triton field", name)
			}
			if !strings.Contains(name, ".") {
				_, err := ParseConfig([]byte(validConfig+name+" { }\n"), "config.pbtxt")
				if err == nil || !strings.Contains(err.Error(), `unsupported field "`+name+`"`) {
					t.Errorf("a config with %s loads (err %v), but the table says refused", name, err)
				}
			}
		}
	}
	for _, name := range []string{"runtime", "batch_input", "batch_output", "optimization", "sequence_batching",
		"ensemble_scheduling", "cc_model_filenames", "metric_tags", "model_warmup", "model_operations",
		"model_repository_agents", "response_cache", "model_metrics", "format", "is_shape_tensor",
		"allow_ragged_batch", "is_non_linear_format_io", "rate_limiter", "secondary_devices", "profile",
		"passive", "host_policy", "priority_levels", "default_priority_level", "default_queue_policy",
		"priority_queue_policy"} {
		if !isTritonOnlyField(name) {
			continue // now supported: its row must say so (checked above through the descriptor)
		}
		found := false
		for row, status := range table {
			if (row == name || strings.HasSuffix(row, "."+name)) && status == "refused" {
				found = true
			}
		}
		if !found {
			t.Errorf("the parser refuses %q but docs/configuration.md has no refused row for it", name)
		}
	}
	if refused == 0 {
		t.Error("no refused rows read")
	}
}
