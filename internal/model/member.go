package model

import (
	"context"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
)

// Instance is what the manager needs of one model instance. The real one is
// *instance.Instance; the manager's tests use a fake that posts the same
// events, so that load, reload, unload and restart races are tested here
// without processes.
type Instance interface {
	Key() health.InstanceKey
	// Start spawns the first process and returns once initialize has.
	Start(ctx context.Context) error
	SetRoutable(routable bool)
	// Restart must never drop a call: one asked for during a restart is
	// carried out after it.
	Restart(reason string)
	// Fail stops the current process: restarts are exhausted. A later
	// Restart (the engine's retry at the maximum backoff) starts it again.
	Fail(reason string)
	// Stop stops the instance for good and waits for it.
	Stop(ctx context.Context)
	// Held is the number of requests the instance holds (executing or
	// streaming) and how many of them are streams.
	Held() (requests, streams int)
}

var _ Instance = (*instance.Instance)(nil)

// newInstance builds an instance with the configured constructor.
func (m *Manager) newInstance(cfg instance.Config) Instance {
	if m.cfg.NewInstance != nil {
		return m.cfg.NewInstance(cfg)
	}
	return instance.New(cfg)
}
