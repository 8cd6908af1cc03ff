package model

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/repository"
)

// stubAutoCompleter runs auto_complete_config in a short-lived stub
// process with the server's runtime.
type stubAutoCompleter struct {
	rt  instance.Runtime
	log *slog.Logger
}

func (a stubAutoCompleter) AutoComplete(ctx context.Context, modelFile, modelDir string, config []byte) ([]byte, bool, error) {
	return instance.AutoComplete(ctx, a.rt, a.log, modelFile, modelDir, config)
}

// loadOverride turns a load request's parameters into an Override: the
// config, and the files written to a fresh directory under the scratch
// directory. Nil when the request has neither.
func (m *Manager) loadOverride(name string, params map[string]any) (*modelconfig.Override, error) {
	config, files, err := modelconfig.LoadParams(name, params)
	if err != nil || config == nil {
		return nil, err
	}
	ov := &modelconfig.Override{Config: config}
	if len(files) > 0 {
		parent := m.cfg.ScratchDir
		if parent == "" {
			parent = filepath.Join(os.TempDir(), "vigil-overrides")
		}
		if ov.Dir, err = modelconfig.WriteFiles(parent, name, files); err != nil {
			return nil, err
		}
	}
	return ov, nil
}

// swapOverride records the override a successful load serves with (nil:
// the model's own files) and removes the files of the one before. The
// caller holds e.op.
func (m *Manager) swapOverride(e *entry, ov *modelconfig.Override) {
	dir := ""
	if ov != nil {
		dir = ov.Dir
	}
	if e.overrideDir != "" && e.overrideDir != dir {
		removeOverride(e.overrideDir)
	}
	e.overrideDir = dir
}

// removeOverride removes a directory WriteFiles made (its parent, which
// holds only it).
func removeOverride(dir string) {
	_ = os.RemoveAll(filepath.Dir(dir))
}

// logSkipped logs each directory of the repository that is not a model,
// with the reason, once per distinct reason: at start-up and on every poll
// rescan, so a folder that stops being a model (or whose problem changes)
// is reported again.
func (m *Manager) logSkipped() {
	skips, err := repository.Skipped(m.cfg.RepoDir)
	if err != nil {
		return // the scan's own error is logged by its caller
	}
	m.skippedMu.Lock()
	defer m.skippedMu.Unlock()
	now := make(map[string]string, len(skips))
	for _, s := range skips {
		now[s.Name] = s.Reason
		if m.skipped[s.Name] != s.Reason {
			m.log.Warn("skipping folder", "repository", m.cfg.RepoDir, "folder", s.Name, "reason", s.Reason)
		}
	}
	m.skipped = now
}
