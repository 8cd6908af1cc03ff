package modelconfig

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/health"
)

// fakeCompleter adds one FP32 input and output and records what it saw.
type fakeCompleter struct {
	calls  int
	file   string
	config map[string]any
	called bool // what it reports
}

func (f *fakeCompleter) AutoComplete(_ context.Context, modelFile, _ string, config []byte) ([]byte, bool, error) {
	f.calls++
	f.file = modelFile
	if err := json.Unmarshal(config, &f.config); err != nil {
		return nil, false, err
	}
	if !f.called {
		return config, false, nil
	}
	out := f.config
	out["input"] = []any{map[string]any{"name": "X", "data_type": "TYPE_FP32", "dims": []any{4}}}
	out["output"] = []any{map[string]any{"name": "Y", "data_type": "TYPE_FP32", "dims": []any{4}}}
	out["max_batch_size"] = 2
	b, err := json.Marshal(out)
	return b, true, err
}

func writeModel(t *testing.T, files map[string]string) string {
	t.Helper()
	repo := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(repo, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

func TestLoadWithoutConfigAutoCompletes(t *testing.T) {
	repo := writeModel(t, map[string]string{"m/1/model.py": "class TritonPythonModel: pass", "m/2/model.py": ""})
	ac := &fakeCompleter{called: true}
	m, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{AutoComplete: ac})
	if err != nil {
		t.Fatal(err)
	}
	if ac.calls != 1 || !strings.HasSuffix(ac.file, filepath.Join("m", "2", "model.py")) {
		t.Errorf("auto-complete ran %d times on %s, want once on the newest version", ac.calls, ac.file)
	}
	// Triton's core fills name and backend before the backend completes.
	if ac.config["name"] != "m" || ac.config["backend"] != "python" {
		t.Errorf("auto-complete saw %v, want name and backend filled", ac.config)
	}
	if _, ok := ac.config["input"]; !ok {
		t.Error("auto-complete's config lacks the input key (every field must be present)")
	}
	if m.Config.GetMaxBatchSize() != 2 || m.Config.GetInput()[0].GetName() != "X" || m.Config.GetName() != "m" {
		t.Errorf("config = %v", m.Config)
	}
}

func TestLoadRunsAutoCompleteOnlyWhenModelMentionsIt(t *testing.T) {
	cfg := "backend: \"python\"\ninput [{name: \"A\", data_type: TYPE_FP32, dims: [1]}]\noutput [{name: \"B\", data_type: TYPE_FP32, dims: [1]}]\n"
	repo := writeModel(t, map[string]string{"m/config.pbtxt": cfg, "m/1/model.py": "class TritonPythonModel: pass"})
	ac := &fakeCompleter{called: true}
	if _, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{AutoComplete: ac}); err != nil {
		t.Fatal(err)
	}
	if ac.calls != 0 {
		t.Errorf("auto-complete ran for a model.py that has no auto_complete_config")
	}
	repo = writeModel(t, map[string]string{"m/config.pbtxt": cfg,
		"m/1/model.py": "class TritonPythonModel:\n  @staticmethod\n  def auto_complete_config(c): return c\n"})
	ac = &fakeCompleter{called: false}
	m, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{AutoComplete: ac})
	if err != nil || ac.calls != 1 || m.Config.GetInput()[0].GetName() != "A" {
		t.Fatalf("calls %d, err %v: want one call and the file's config kept", ac.calls, err)
	}
}

func TestLoadWithoutConfigNeedsIO(t *testing.T) {
	repo := writeModel(t, map[string]string{"m/1/model.py": "class TritonPythonModel: pass"})
	_, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{AutoComplete: &fakeCompleter{}})
	if err == nil || !strings.Contains(err.Error(), "input: the model needs at least one input") {
		t.Fatalf("err = %v, want the missing input named", err)
	}
	// Partial (manifests) accepts it without Python.
	m, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{Partial: true})
	if err != nil || len(m.InstanceNames()) != 1 {
		t.Fatalf("partial load: %v", err)
	}
}

func TestOverrideConfig(t *testing.T) {
	repo := writeModel(t, map[string]string{"m/config.pbtxt": "backend: \"nope\"", "m/1/model.py": ""})
	good := `{"backend":"python","max_batch_size":0,"input":[{"name":"A","data_type":"TYPE_FP32","dims":[1]}],` +
		`"output":[{"name":"B","data_type":"TYPE_FP32","dims":["1"]}],"instance_group":[{"count":2,"kind":"KIND_CPU"}]}`
	m, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{Override: &Override{Config: []byte(good)}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.InstanceNames()); n != 2 {
		t.Errorf("instances = %d, want the override's 2", n)
	}
	for _, tc := range []struct{ config, want string }{
		{`{"backend":"python","model_warmups":[]}`, `unknown field "model_warmups"`},
		{`{"backend":"python","response_cache":{}}`, `unsupported field "response_cache"`},
		{`{"name":"other","backend":"python"}`, `load request parameter "config": name: "other" does not match`},
		{`[`, `load request parameter "config"`},
	} {
		_, err := LoadWith(context.Background(), repo, "m", health.DefaultPolicy(), Options{Override: &Override{Config: []byte(tc.config)}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("override %s: err = %v, want %q", tc.config, err, tc.want)
		}
	}
}

func TestLoadParams(t *testing.T) {
	cfg, files, err := LoadParams("m", map[string]any{"config": "{}", "file:1/model.py": "aGk=", "file:1/x.bin": []byte{1}})
	if err != nil || string(cfg) != "{}" || string(files["1/model.py"]) != "hi" || files["1/x.bin"][0] != 1 {
		t.Fatalf("LoadParams = %q, %v, %v", cfg, files, err)
	}
	for _, tc := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"file:1/model.py": "aGk="}, `need the "config" parameter too`},
		{map[string]any{"config": "{}", "file:/etc/passwd": "aGk="}, "must be relative"},
		{map[string]any{"config": "{}", "file:1/../../x": "aGk="}, "leaves the model directory"},
		{map[string]any{"config": "{}", "file:1/model.py": "***"}, "must be base64"},
		{map[string]any{"config": 3}, `"config" must be a string`},
		{map[string]any{"poll": true}, `unknown load parameter "poll"`},
	} {
		if _, _, err := LoadParams("m", tc.params); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadParams(%v) = %v, want %q", tc.params, err, tc.want)
		}
	}
	dir, err := WriteFiles(t.TempDir(), "m", files)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "1", "model.py")); err != nil || string(b) != "hi" || filepath.Base(dir) != "m" {
		t.Fatalf("WriteFiles: %s %q %v", dir, b, err)
	}
}
