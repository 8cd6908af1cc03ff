package model

import (
	"context"
	"fmt"
)

// runtimeError is why no model can load now, or nil. A start without a
// usable runtime (numpy missing) is not final: each load checks again
// through Config.RecheckRuntime, so that installing numpy and loading the
// model again works without a restart where the control mode allows loads.
func (m *Manager) runtimeError(ctx context.Context) error {
	m.runtimeMu.Lock()
	defer m.runtimeMu.Unlock()
	if m.runtimeErr == nil {
		return nil
	}
	if m.cfg.RecheckRuntime != nil {
		err := m.cfg.RecheckRuntime(ctx)
		if err == nil {
			m.log.Info("the python runtime is usable now: models can load")
			m.runtimeErr = nil
			return nil
		}
		m.runtimeErr = err
	}
	return fmt.Errorf("%w; %s", m.runtimeErr, m.afterRuntimeFix())
}

// afterRuntimeFix says what to do once the runtime is fixed, which depends
// on whether the control mode allows loads.
func (m *Manager) afterRuntimeFix() string {
	if m.cfg.RecheckRuntime == nil {
		return "then restart vigil"
	}
	if m.cfg.Mode == ModeNone {
		return "then restart vigil: in model control mode none models load only at start"
	}
	return "then load the model again (POST /v2/repository/models/<name>/load): no restart needed"
}

// RuntimeHint is afterRuntimeFix for the server's start-up log.
func (m *Manager) RuntimeHint() string { return m.afterRuntimeFix() }
