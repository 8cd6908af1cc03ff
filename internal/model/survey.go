package model

import (
	"path/filepath"

	"github.com/vigilhq/vigil/internal/repository"
)

// warnAboutRepository logs, once at start-up, what in the repository will
// not load and why: a repository that is a model's folder, one without any
// model, and every directory skipped with its reason. Hidden directories
// (.git, a ConfigMap's ..data) are skipped by design and logged at debug
// level only. Poll rescans report changes after that (logSkipped).
func (m *Manager) warnAboutRepository() {
	dir := m.cfg.RepoDir
	sv, err := repository.Survey(dir)
	if err != nil {
		return // PlanStartup logs the scan error
	}
	if sv.IsModel {
		m.log.Warn("the model repository is itself a model's folder (it holds config.pbtxt): "+
			"point --model-repository at the directory that contains model folders",
			"repository", dir, "did_you_mean", filepath.Dir(filepath.Clean(dir)))
	}
	for _, s := range sv.Skipped {
		if s.Hidden {
			m.log.Debug("skipping a hidden directory of the model repository", "repository", dir, "dir", s.Name, "reason", s.Reason)
			continue
		}
		m.warnSkipped(s)
	}
	m.newSkips(sv.Skipped)
	if len(sv.Models) == 0 {
		m.log.Warn("the model repository holds no model (a model is a folder with a config.pbtxt): no model will be ready",
			"repository", dir)
	}
}

// warnSkipped logs a directory of the repository that is not a model.
func (m *Manager) warnSkipped(s repository.Skipped) {
	m.log.Warn("skipping a directory of the model repository: it is not a model", "repository", m.cfg.RepoDir, "dir", s.Name, "reason", s.Reason)
}

// logSkipped logs, on a poll rescan, each directory of the repository that
// is not a model and was not reported with that reason before: one that
// stopped being a model, or whose problem changed, is reported again.
func (m *Manager) logSkipped() {
	sv, err := repository.Survey(m.cfg.RepoDir)
	if err != nil {
		return // the scan's own error is logged by its caller
	}
	for _, s := range m.newSkips(sv.Skipped) {
		m.warnSkipped(s)
	}
}

// newSkips records the directories skipped now (hidden ones left out) and
// returns those whose reason differs from the last record.
func (m *Manager) newSkips(skips []repository.Skipped) []repository.Skipped {
	m.skippedMu.Lock()
	defer m.skippedMu.Unlock()
	now := make(map[string]string, len(skips))
	var changed []repository.Skipped
	for _, s := range skips {
		if s.Hidden {
			continue
		}
		now[s.Name] = s.Reason
		if m.skipped[s.Name] != s.Reason {
			changed = append(changed, s)
		}
	}
	m.skipped = now
	return changed
}
