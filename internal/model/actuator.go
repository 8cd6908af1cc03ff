package model

import "github.com/vigilhq/vigil/internal/health"

var _ health.Actuator = (*Manager)(nil)

// instanceFor finds a serving instance and its version.
func (m *Manager) instanceFor(k health.InstanceKey) (*version, int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v := m.live[k]
	if v == nil {
		return nil, -1
	}
	for i, in := range v.instances {
		if in.Key() == k {
			return v, i
		}
	}
	return nil, -1
}

// SetRoutable puts an instance in or out of traffic and tells its queue how
// many instances can serve: serving, the count in the snapshot that made
// the change (health.ModelHealth.Routable, from the one rule
// InstanceState.Routable). The manager keeps no copy of its own.
func (m *Manager) SetRoutable(k health.InstanceKey, routable bool, serving int) {
	v, i := m.instanceFor(k)
	if v == nil {
		return
	}
	v.instances[i].SetRoutable(routable)
	v.queue.SetRoutable(serving)
}

// Restart restarts an instance. The health engine owns the decision, so it
// is never dropped: an instance of a version that is still loading (one
// instance initialized and died while another still initializes) is
// restarted once the load succeeds; if the load fails, the version is
// retired and nothing is restarted. A version that stopped serving (closed
// by an unload or a reload) is being stopped: its restarts are moot.
func (m *Manager) Restart(k health.InstanceKey, reason string) {
	v, i := m.instanceFor(k)
	if v == nil {
		return
	}
	v.mu.Lock()
	if !v.serving {
		if !v.closed {
			if v.restarts == nil {
				v.restarts = map[string]string{}
			}
			v.restarts[k.Instance] = reason
		}
		v.mu.Unlock()
		return
	}
	v.mu.Unlock()
	v.instances[i].Restart(reason)
}

// Fail stops an instance whose restarts are exhausted; the engine retries
// it later at the maximum backoff (Restart).
func (m *Manager) Fail(k health.InstanceKey, reason string) {
	if v, i := m.instanceFor(k); v != nil {
		v.instances[i].Fail(reason)
	}
}

// InFlight is the number of requests an instance holds (executing or
// streaming) and how many of them are streams; zero for an instance the
// manager does not serve.
func (m *Manager) InFlight(k health.InstanceKey) (requests, streams int) {
	v, i := m.instanceFor(k)
	if v == nil {
		return 0, 0
	}
	return v.instances[i].Held()
}
