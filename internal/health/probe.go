package health

import (
	"fmt"
	"time"
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
		s.pingCheck(),
		{Name: "watchdog", OK: !s.WatchdogStalled, Reason: reasonIf(s.WatchdogStalled, "the health engine's event loop stalled")},
	}
}

// pingCheck is the server process answering: always so when the server
// itself answers; the probe responder fails it once the server has been
// silent past the watchdog's bound.
func (s *Snapshot) pingCheck() NamedCheck {
	if s.Silent == 0 {
		return NamedCheck{Name: "ping", OK: true}
	}
	return NamedCheck{Name: "ping", Reason: fmt.Sprintf("the server process has reported no health for %s", s.Silent.Round(time.Millisecond))}
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
			c.Reason = fmt.Sprintf("degraded: %d of %d instances routable", m.Routable(), len(m.Instances))
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
// request without one is served by (defaultRank's rule).
func (s *Snapshot) Model(name, version string) (*ModelHealth, bool) {
	var best *ModelHealth
	for i := range s.Models {
		m := &s.Models[i]
		if m.Name != name {
			continue
		}
		if version == "" {
			if best == nil || preferDefault(m.Version, defaultRank(m.Ready, m.Expected), best.Version, defaultRank(best.Ready, best.Expected)) {
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

// defaultRank is the one rule for which version a reference without one
// means — a versionless request, readiness question or ensemble step or
// declared dependency: the highest ready version; with none ready, the
// highest expected one (what should be serving); else the highest the
// server knows of. Higher ranks win; preferDefault breaks ties.
func defaultRank(ready, expected bool) int {
	switch {
	case ready:
		return 2
	case expected:
		return 1
	}
	return 0
}

// preferDefault reports whether version v of rank r is preferred over the
// best so far, bv of rank br.
func preferDefault(v string, r int, bv string, br int) bool {
	return r > br || r == br && versionLess(bv, v)
}

// ModelReady answers "may requests for this model (version) be sent here",
// the one question behind every model-readiness surface (REST and gRPC
// model ready, grpc.health model/<name>, vigil_model_ready): the version
// (Model's rule when version is empty) is Ready and the server is not
// draining. found is false for a model or version the server does not know.
func (s *Snapshot) ModelReady(name, version string) (ready bool, reason string, found bool) {
	m, ok := s.Model(name, version)
	if !ok {
		return false, "", false
	}
	ready, reason = s.VersionReady(m)
	return ready, reason, true
}

// VersionReady is ModelReady for a version of the snapshot.
func (s *Snapshot) VersionReady(m *ModelHealth) (bool, string) {
	switch {
	case s.Draining:
		return false, "server is shutting down"
	case m.Ready:
		return true, ""
	}
	return false, m.notReadyReason()
}

// notReadyReason says why a version is not ready. A version is ready
// exactly when its State is READY (the tracker reports a loaded version
// with too few routable instances UNAVAILABLE, saying so), so the state and
// its reason are the whole story.
func (m *ModelHealth) notReadyReason() string {
	name := "model " + m.Name
	if m.Version != "" {
		name += " version " + m.Version
	}
	if m.Reason != "" {
		return fmt.Sprintf("%s is %s: %s", name, m.State, m.Reason)
	}
	return fmt.Sprintf("%s is %s", name, m.State)
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
