package rest

import (
	"time"

	"github.com/vigilhq/vigil/internal/health"
)

// The JSON form of /livez, /readyz and /startupz: the probe's verdict, its
// checks, and the full per-model and per-instance detail of the snapshot it
// was computed from. With HideReasons every free-text reason and check
// message is withheld; states, counts and times stay.

type probeJSONBody struct {
	Probe    string            `json:"probe"`
	OK       bool              `json:"ok"`
	Checks   []probeCheckJSON  `json:"checks"`
	Warnings []string          `json:"warnings,omitempty"`
	Server   serverHealthJSON  `json:"server"`
	Models   []modelHealthJSON `json:"models"`
}

type probeCheckJSON struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Excluded bool   `json:"excluded,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

type serverHealthJSON struct {
	At              *time.Time `json:"at,omitempty"`
	Started         bool       `json:"started"`
	Draining        bool       `json:"draining"`
	Loading         string     `json:"loading,omitempty"`
	StrictReadiness bool       `json:"strict_readiness"`
	WatchdogStalled bool       `json:"watchdog_stalled"`
	EscalateFailed  bool       `json:"escalate_failed"`
}

type modelHealthJSON struct {
	Name      string               `json:"name"`
	Version   string               `json:"version"`
	State     string               `json:"state"`
	Reason    string               `json:"reason,omitempty"`
	Ready     bool                 `json:"ready"`
	Degraded  bool                 `json:"degraded"`
	Routable  int                  `json:"routable_instances"`
	MinReady  int                  `json:"min_ready_instances"`
	Expected  bool                 `json:"expected"`
	Instances []instanceHealthJSON `json:"instances"`
	// DependsOn lists the models readiness follows (ensemble steps,
	// health.yaml depends_on); empty for a model with none.
	DependsOn []dependencyJSON `json:"depends_on,omitempty"`
}

type dependencyJSON struct {
	Model   string `json:"model"`
	Version string `json:"version,omitempty"`
	Kind    string `json:"kind"` // "step" or "dependency"
}

type instanceHealthJSON struct {
	Name     string     `json:"name"`
	State    string     `json:"state"`
	Reason   string     `json:"reason,omitempty"`
	Since    *time.Time `json:"since,omitempty"`
	Routable bool       `json:"routable"`
	PID      int        `json:"pid,omitempty"`
	Restarts int        `json:"restarts"`
	LastExit string     `json:"last_exit,omitempty"`
	// InFlight counts the requests the instance holds (executing, or
	// streaming responses) and OpenStreams those of them that are streams;
	// both are read live, beside the snapshot.
	InFlight    *int              `json:"requests_in_flight,omitempty"`
	OpenStreams *int              `json:"open_streams,omitempty"`
	Checks      []checkHealthJSON `json:"checks"`
	Transitions []transitionJSON  `json:"transitions"`
	// Sequences is present for instances of sequence batching models.
	Sequences *sequencesJSON `json:"sequences,omitempty"`
}

type sequencesJSON struct {
	Open  int `json:"open"`
	Slots int `json:"slots"`
}

type checkHealthJSON struct {
	Name string `json:"name"`
	// State is the effective state after thresholds; LastResult is the raw
	// last result beside it.
	State       string     `json:"state"`
	LastResult  string     `json:"last_result"`
	LastMessage string     `json:"last_message,omitempty"`
	LastAt      *time.Time `json:"last_at,omitempty"`
	Consecutive int        `json:"consecutive"`
	Since       *time.Time `json:"since,omitempty"`
}

type transitionJSON struct {
	At     *time.Time `json:"at,omitempty"`
	From   string     `json:"from"`
	To     string     `json:"to"`
	Reason string     `json:"reason,omitempty"`
}

func (s *server) probeJSON(res probeResult) probeJSONBody {
	snap := res.snapshot
	out := probeJSONBody{
		Probe:  string(res.probe),
		OK:     res.ok,
		Checks: make([]probeCheckJSON, 0, len(res.checks)),
		Server: serverHealthJSON{
			At:              timePtr(snap.At),
			Started:         snap.Started,
			Draining:        snap.Draining,
			Loading:         snap.Loading,
			StrictReadiness: snap.Strict,
			WatchdogStalled: snap.WatchdogStalled,
			EscalateFailed:  snap.Escalate,
		},
		Models: make([]modelHealthJSON, 0, len(snap.Models)),
	}
	for _, c := range res.checks {
		out.Checks = append(out.Checks, probeCheckJSON{Name: c.Name, OK: c.OK, Excluded: c.Excluded, Reason: s.reason(c.Reason)})
	}
	for _, name := range res.unknown {
		out.Warnings = append(out.Warnings, "some health checks cannot be excluded: no matches for "+quoteAll([]string{name}))
	}
	for _, m := range snap.Models {
		mj := modelHealthJSON{
			Name: m.Name, Version: m.Version, State: string(m.State), Reason: s.reason(m.Reason),
			Ready: m.Ready, Degraded: m.Degraded, Routable: m.Routable(), MinReady: m.MinReady,
			Expected: m.Expected, Instances: make([]instanceHealthJSON, 0, len(m.Instances)),
		}
		for _, d := range m.DependsOn {
			mj.DependsOn = append(mj.DependsOn, dependencyJSON{Model: d.Model, Version: d.Version, Kind: d.Label})
		}
		for _, in := range m.Instances {
			ij := s.instanceJSON(in)
			if s.cfg.InFlight != nil {
				req, streams := s.cfg.InFlight(health.InstanceKey{Model: m.Name, Version: m.Version, Instance: in.Name})
				ij.InFlight, ij.OpenStreams = &req, &streams
			}
			mj.Instances = append(mj.Instances, ij)
		}
		out.Models = append(out.Models, mj)
	}
	return out
}

func (s *server) instanceJSON(in health.InstanceHealth) instanceHealthJSON {
	ij := instanceHealthJSON{
		Name: in.Name, State: string(in.State), Reason: s.reason(in.Reason), Since: timePtr(in.Since),
		Routable: in.Routable(), PID: in.PID, Restarts: in.Restarts, LastExit: in.LastExit,
		Checks:      make([]checkHealthJSON, 0, len(in.Checks)),
		Transitions: make([]transitionJSON, 0, len(in.Transitions)),
	}
	if sq := in.Sequences; sq != nil {
		ij.Sequences = &sequencesJSON{Open: sq.Open, Slots: sq.Slots}
	}
	for _, c := range in.Checks {
		ij.Checks = append(ij.Checks, checkHealthJSON{
			Name: string(c.Name), State: c.State(), LastResult: c.LastResult(),
			LastMessage: s.reason(c.LastMessage), LastAt: timePtr(c.LastAt),
			Consecutive: c.Consecutive, Since: timePtr(c.Since),
		})
	}
	for _, t := range in.Transitions {
		ij.Transitions = append(ij.Transitions, transitionJSON{
			At: timePtr(t.At), From: string(t.From), To: string(t.To), Reason: s.reason(t.Reason),
		})
	}
	return ij
}

// timePtr omits zero times from JSON instead of printing year 1.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
