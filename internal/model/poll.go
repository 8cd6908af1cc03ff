package model

import (
	"context"
	"time"

	"github.com/vigilhq/vigil/internal/repository"
)

// Poll rescans the repository every interval until ctx ends (poll mode):
// new models load, changed models reload, removed models unload.
func (m *Manager) Poll(ctx context.Context, interval time.Duration) {
	seen := m.fingerprints()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seen = m.pollOnce(ctx, seen)
	}
}

// fingerprints reads the current fingerprint of every model.
func (m *Manager) fingerprints() map[string]string {
	out := map[string]string{}
	names, err := repository.Scan(m.cfg.RepoDir)
	if err != nil {
		return out
	}
	for _, n := range names {
		if fp, err := repository.Fingerprint(m.cfg.RepoDir, n); err == nil {
			out[n] = fp
		}
	}
	return out
}

// pollOnce is one rescan; it returns the fingerprints it acted on.
func (m *Manager) pollOnce(ctx context.Context, before map[string]string) map[string]string {
	now := m.fingerprints()
	m.logSkipped()
	for name, fp := range now {
		if old, ok := before[name]; ok && old == fp {
			continue
		}
		m.log.Info("model changed on disk: loading", "model", name)
		if err := m.load(ctx, name); err != nil {
			m.log.Error("model failed to load", "model", name, "err", err)
		}
	}
	for name := range before {
		if _, ok := now[name]; ok {
			continue
		}
		m.log.Info("model removed from the repository: unloading", "model", name)
		if err := m.Unload(ctx, name, nil); err != nil {
			m.log.Error("model failed to unload", "model", name, "err", err)
		}
	}
	return now
}
