package health

import (
	"fmt"
)

// Probe names one of the server's three probes.
type Probe string

// The probes.
const (
	ProbeLive    Probe = "livez"
	ProbeReady   Probe = "readyz"
	ProbeStartup Probe = "startupz"
)

// NamedCheck is one line of a probe's verbose output.
type NamedCheck struct {
	Name   string // e.g. "ping", "started", "model/add_sub", "instance/add_sub/1/add_sub_0"
	OK     bool
	Reason string // why it fails; empty when OK (may carry a warning such as "degraded")
}

// Checks lists the named checks behind a probe, in a stable order. The probe
// passes when every check that is not excluded passes.
func (s *Snapshot) Checks(p Probe) []NamedCheck {
	switch p {
	case ProbeLive:
		return s.liveChecks()
	case ProbeReady:
		return s.readyChecks()
	case ProbeStartup:
		return []NamedCheck{{Name: "startup", OK: s.Started, Reason: reasonIf(!s.Started, s.Loading)}}
	}
	return nil
}

// serverChecks are the checks of the server process itself, shared by
// liveness and readiness.
func (s *Snapshot) serverChecks() []NamedCheck {
	return []NamedCheck{
		{Name: "ping", OK: true},
		{Name: "watchdog", OK: !s.WatchdogStalled, Reason: reasonIf(s.WatchdogStalled, "the health engine's event loop stalled")},
	}
}

// liveChecks: the server's own checks and, with --escalate-failed-models,
// one failing check per FAILED instance.
func (s *Snapshot) liveChecks() []NamedCheck {
	out := s.serverChecks()
	if s.Escalate {
		for _, m := range s.Models {
			for _, in := range m.Instances {
				if in.State == StateFailed {
					// A FAILED instance's reason says that its restarts
					// are exhausted (the breaker words it).
					out = append(out, NamedCheck{
						Name:   fmt.Sprintf("instance/%s/%s/%s", m.Name, m.Version, in.Name),
						Reason: in.Reason,
					})
				}
			}
		}
	}
	return out
}

// readyChecks: whether the server should get traffic. A FAILED instance
// fails liveness (escalation), not readiness: its model still serves on
// its other instances (degraded), or is not ready, which the model's own
// check says.
func (s *Snapshot) readyChecks() []NamedCheck {
	out := s.serverChecks()
	out = append(out,
		NamedCheck{Name: "started", OK: s.Started, Reason: reasonIf(!s.Started, s.Loading)},
		NamedCheck{Name: "draining", OK: !s.Draining, Reason: reasonIf(s.Draining, "server is shutting down")},
	)
	if !s.Strict {
		return out
	}
	anyReady := false
	for _, m := range s.Models {
		if m.Ready {
			anyReady = true
		}
		if !m.Expected {
			continue
		}
		name := "model/" + m.Name
		if m.Version != "" {
			name += "/" + m.Version
		}
		c := NamedCheck{Name: name, OK: m.Ready}
		switch {
		case !m.Ready:
			c.Reason = m.notReadyReason()
		case m.Degraded:
			c.Reason = fmt.Sprintf("degraded: %d of %d instances routable", m.Routable, len(m.Instances))
		}
		out = append(out, c)
	}
	out = append(out, NamedCheck{Name: "models", OK: anyReady, Reason: reasonIf(!anyReady, "no model is ready")})
	return out
}

// Live reports whether the liveness probe passes and, if not, why.
func (s *Snapshot) Live() (bool, string) { return firstFailure(s.Checks(ProbeLive)) }

// Ready reports whether the readiness probe passes and, if not, why.
func (s *Snapshot) Ready() (bool, string) { return firstFailure(s.Checks(ProbeReady)) }

// Model finds a model version. An empty version means the version a
// request without one is served by: the highest ready version; with none
// ready, the highest expected one (what should be serving); else the
// highest the server knows of.
func (s *Snapshot) Model(name, version string) (*ModelHealth, bool) {
	var best *ModelHealth
	rank := func(m *ModelHealth) int {
		switch {
		case m.Ready:
			return 2
		case m.Expected:
			return 1
		}
		return 0
	}
	for i := range s.Models {
		m := &s.Models[i]
		if m.Name != name {
			continue
		}
		if version == "" {
			if best == nil || rank(m) > rank(best) || rank(m) == rank(best) && versionLess(best.Version, m.Version) {
				best = m
			}
			continue
		}
		if m.Version == version {
			return m, true
		}
	}
	return best, best != nil
}

// ModelReady reports a model version's readiness and why it is not ready;
// found is false for a model or version the server does not know.
func (s *Snapshot) ModelReady(name, version string) (ready bool, reason string, found bool) {
	m, ok := s.Model(name, version)
	if !ok {
		return false, "", false
	}
	if m.Ready {
		return true, "", true
	}
	return false, m.notReadyReason(), true
}

func (m *ModelHealth) notReadyReason() string {
	if m.State != ModelStateReady {
		name := "model " + m.Name
		if m.Version != "" {
			name += " version " + m.Version
		}
		if m.Reason != "" {
			return fmt.Sprintf("%s is %s: %s", name, m.State, m.Reason)
		}
		return fmt.Sprintf("%s is %s", name, m.State)
	}
	msg := fmt.Sprintf("model %s version %s has %d routable instances, needs %d", m.Name, m.Version, m.Routable, m.MinReady)
	for _, in := range m.Instances {
		if !in.Routable {
			msg += fmt.Sprintf("; instance %s is %s", in.Name, in.State)
			if in.Reason != "" {
				msg += ": " + in.Reason
			}
			break
		}
	}
	return msg
}

func firstFailure(cs []NamedCheck) (bool, string) {
	for _, c := range cs {
		if !c.OK {
			return false, c.Reason
		}
	}
	return true, ""
}

func reasonIf(cond bool, reason string) string {
	if cond {
		return reason
	}
	return ""
}

// versionLess orders numeric version strings numerically.
func versionLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}
