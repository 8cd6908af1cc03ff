package model

import (
	"path/filepath"

	"github.com/vigilhq/vigil/internal/repository"
)

// warnAboutRepository logs, once at start-up, what in the repository will
// not load and why: a repository that is a model's folder, one without any
// model, and every directory skipped with its reason. Hidden directories
// (.git, a ConfigMap's ..data) are skipped by design and logged at debug
// level only.
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
		m.log.Warn("skipping a directory of the model repository: it is not a model", "repository", dir, "dir", s.Name, "reason", s.Reason)
	}
	if len(sv.Models) == 0 {
		m.log.Warn("the model repository holds no model (a model is a folder with a config.pbtxt): no model will be ready",
			"repository", dir)
	}
}
