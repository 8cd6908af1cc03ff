package model

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
)

// pb_utils.load_model's config= and files= take the repository API's path:
// a config replaces config.pbtxt for that load, files (with a config) form
// the model directory, and what the repository API refuses is refused here
// with the same error.
func TestControlLoadTakesTheRepositoryOverrides(t *testing.T) {
	repo := fakeRepo(t, 1, "")
	m, eng, f := fakeManager(t, repo)
	m.cfg.ScratchDir = t.TempDir()
	ctx := context.Background()
	if err := m.Load(ctx, "m", nil); err != nil {
		t.Fatal(err)
	}

	// config=: two instances instead of the file's one.
	twoInstances := `{"name":"m","backend":"python","max_batch_size":0,` +
		`"input":[{"name":"INPUT0","data_type":"TYPE_FP32","dims":[-1]}],` +
		`"output":[{"name":"OUTPUT0","data_type":"TYPE_FP32","dims":[-1]}],` +
		`"instance_group":[{"count":2,"kind":"KIND_CPU"}]}`
	if _, err := m.Control(ctx, instance.ControlRequest{Op: "load", Name: "m", Config: twoInstances, Caller: "caller"}); err != nil {
		t.Fatal(err)
	}
	waitModel(t, eng, "ready with the override's two instances", func(mh *health.ModelHealth) bool {
		return mh.Ready && mh.Routable() == 2
	})
	cfg, err := m.Config("m", "")
	if err != nil || cfg.GetInstanceGroup()[0].GetCount() != 2 {
		t.Fatalf("config after the override = %v, %v; want count 2", cfg, err)
	}

	// files= with config=: a model the repository does not hold.
	newModel := strings.Replace(twoInstances, `"name":"m"`, `"name":"fresh"`, 1)
	files := map[string][]byte{"file:1/model.py": []byte("class TritonPythonModel:\n    pass\n")}
	if _, err := m.Control(ctx, instance.ControlRequest{Op: "load", Name: "fresh", Config: newModel, Files: files, Caller: "caller"}); err != nil {
		t.Fatal(err)
	}
	in := f.get("fresh_0")
	if in == nil {
		t.Fatal("no instance of the model loaded from files")
	}
	got, err := os.ReadFile(in.cfg.Init.ModelFile)
	if err != nil || string(got) != string(files["file:1/model.py"]) {
		t.Fatalf("model file %s = %q, %v; want the file: override's content", in.cfg.Init.ModelFile, got, err)
	}
	if !strings.HasPrefix(in.cfg.Init.ModelFile, m.cfg.ScratchDir) {
		t.Errorf("model file %s is not under the scratch directory %s", in.cfg.Init.ModelFile, m.cfg.ScratchDir)
	}
	if _, err := os.Stat(filepath.Join(repo, "fresh")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the repository gained a folder for the override: %v", err)
	}
	// Unloading removes the override's files.
	if _, err := m.Control(ctx, instance.ControlRequest{Op: "unload", Name: "fresh", Caller: "caller"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(in.cfg.Init.ModelFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("override files left after unload: %v", err)
	}

	for _, tc := range []struct {
		name string
		req  instance.ControlRequest
		code apierr.Code
		want string
	}{
		{"files without config", instance.ControlRequest{Op: "load", Name: "m", Files: files},
			apierr.InvalidArgument, `need the "config" parameter too`},
		{"a file outside the model", instance.ControlRequest{Op: "load", Name: "m", Config: twoInstances,
			Files: map[string][]byte{"file:../escape.py": []byte("x")}},
			apierr.InvalidArgument, `load parameter "file:../escape.py": the file path leaves the model directory`},
		{"a key that is no file", instance.ControlRequest{Op: "load", Name: "m", Config: twoInstances,
			Files: map[string][]byte{"1/model.py": []byte("x")}},
			apierr.InvalidArgument, `load_model files key "1/model.py" must be "file:" followed by a path`},
		{"a files key named config", instance.ControlRequest{Op: "load", Name: "m", Config: twoInstances,
			Files: map[string][]byte{"config": []byte("{}")}},
			apierr.InvalidArgument, `load_model files key "config"`},
		{"a config that is not JSON", instance.ControlRequest{Op: "load", Name: "m", Config: "{not json"},
			apierr.InvalidArgument, `load request parameter "config"`},
		{"a config with a refused field", instance.ControlRequest{Op: "load", Name: "m",
			Config: `{"name":"m","backend":"python","response_cache":{"enable":true}}`},
			apierr.InvalidArgument, `unsupported field "response_cache"`},
		{"itself", instance.ControlRequest{Op: "load", Name: "m", Config: twoInstances, Caller: "m"},
			apierr.InvalidArgument, "cannot load itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Control(ctx, tc.req)
			if err == nil || apierr.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v (code %v), want %v containing %q", err, apierr.CodeOf(err), tc.code, tc.want)
			}
		})
	}
	// The refusals changed nothing: m serves with the override's config.
	if cfg, _ := m.Config("m", ""); cfg.GetInstanceGroup()[0].GetCount() != 2 {
		t.Errorf("a refused load changed the configuration: %v", cfg)
	}
}

// Outside explicit mode load_model is refused, overrides or not, as in
// Triton.
func TestControlLoadOutsideExplicitModeIsRefused(t *testing.T) {
	m, _, _ := fakeManager(t, fakeRepo(t, 1, ""))
	m.cfg.Mode = ModePoll
	_, err := m.Control(context.Background(), instance.ControlRequest{Op: "load", Name: "m", Config: `{"name":"m"}`})
	if err == nil || apierr.CodeOf(err) != apierr.Unsupported || !strings.Contains(err.Error(), "--model-control-mode explicit") {
		t.Fatalf("error = %v, want Unsupported naming --model-control-mode explicit", err)
	}
	if m.lookup("m") != nil {
		t.Error("a refused load created the model")
	}
}

// A file the server cannot write is the server's failure, in Triton's
// words and code; a model the repository does not hold is named in
// Triton's words too.
func TestLoadErrorsInTritonsWords(t *testing.T) {
	m, _, _ := fakeManager(t, fakeRepo(t, 1, ""))
	m.cfg.ScratchDir = t.TempDir()
	ctx := context.Background()
	long := "file:" + strings.Repeat("A", 256)
	err := m.Load(ctx, "m", map[string]any{"config": "{}", long: []byte("a")})
	if apierr.CodeOf(err) != apierr.Internal || !strings.Contains(err.Error(), "failed to load 'm', failed to poll from model repository") {
		t.Errorf("an unwritable file: %v (code %v), want Internal with Triton's words", err, apierr.CodeOf(err))
	}
	err = m.Load(ctx, "wrong_model_name", nil)
	if apierr.CodeOf(err) != apierr.NotFound || !strings.HasPrefix(err.Error(), "failed to load 'wrong_model_name', failed to poll from model repository: no model directory") {
		t.Errorf("an unknown model: %v (code %v), want NotFound with Triton's words first", err, apierr.CodeOf(err))
	}
	err = m.Load(ctx, "m", map[string]any{"warmup": true})
	if apierr.CodeOf(err) != apierr.InvalidArgument || !strings.HasPrefix(err.Error(), `failed to load 'm': unknown load parameter "warmup"`) {
		t.Errorf("an unknown parameter: %v (code %v), want InvalidArgument in Triton's form", err, apierr.CodeOf(err))
	}
	entries, _ := os.ReadDir(m.cfg.ScratchDir)
	if len(entries) != 0 {
		t.Errorf("a failed write left %d entries in the scratch directory", len(entries))
	}
}

// A version's load duration runs from the start of its load until its
// instances have initialized (nv_model_load_duration_secs).
func TestLoadDurationCoversInitialize(t *testing.T) {
	m, _, f := fakeManager(t, fakeRepo(t, 1, ""))
	release := f.hold("m_0")
	var released time.Time
	timer := time.AfterFunc(50*time.Millisecond, func() {
		released = time.Now()
		release()
	})
	defer timer.Stop()
	if err := m.Load(context.Background(), "m", nil); err != nil {
		t.Fatal(err)
	}
	st, err := m.Stats("m", "1")
	if err != nil || len(st) != 1 {
		t.Fatalf("stats = %v, %v", st, err)
	}
	// The fake's initialize ran from its Start until the release (the load
	// may begin after the timer was set, on a loaded machine).
	in := f.get("m_0")
	in.mu.Lock()
	initialize := released.Sub(in.started)
	in.mu.Unlock()
	if st[0].LoadDuration < initialize || st[0].LoadDuration > fakeWait {
		t.Errorf("load duration %v, want at least the %v initialize took", st[0].LoadDuration, initialize)
	}
}
