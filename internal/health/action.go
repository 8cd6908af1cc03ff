package health

import "time"

// actionKind says what an action asks the engine's loop to do.
type actionKind int

const (
	actSetRoutable     actionKind = iota + 1 // Actuator.SetRoutable(key, routable)
	actRestart                               // Actuator.Restart(key, reason)
	actFail                                  // Actuator.Fail(key, reason)
	actTransition                            // an instance changed state: log it, count it
	actCheck                                 // a raw check result was recorded: count it
	actModelTransition                       // a model version's state or readiness changed: log it
)

// action is one output of the step functions. The step functions only
// return actions; the loop carries them out, outside any lock, so the step
// functions stay pure and tests can assert on them.
type action struct {
	kind     actionKind
	key      InstanceKey // model and version only for actModelTransition
	routable bool        // actSetRoutable; the model's readiness for actModelTransition
	reason   string
	from, to string        // actTransition, actModelTransition
	check    Check         // actCheck
	ok       bool          // actCheck
	took     time.Duration // actCheck: how long the check ran, if known
	restarts int           // actTransition: restarts so far
	pid      int           // actTransition: the instance's current process, 0 if none yet
	draining bool          // actModelTransition: the server was draining when it happened
}

func (a action) String() string {
	switch a.kind {
	case actSetRoutable:
		if a.routable {
			return "routable"
		}
		return "unroutable"
	case actRestart:
		return "restart"
	case actFail:
		return "fail"
	case actTransition:
		return a.from + "->" + a.to
	case actCheck:
		if a.ok {
			return "check " + string(a.check) + " ok"
		}
		return "check " + string(a.check) + " fail"
	case actModelTransition:
		return "model " + a.from + "->" + a.to
	}
	return "?"
}
