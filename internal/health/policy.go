package health

import "time"

// Policy turns check results into actions for one model's instances. Its
// keys are the health.yaml keys of the configuration reference; durations are
// given in (possibly fractional) seconds there.
type Policy struct {
	// Period and Timeout pace the user hook (period_seconds, timeout_seconds).
	// The supervisor runs the hook; the engine uses them only to judge
	// silence: a hook that has reported since the process started and then
	// reports nothing for 2×Period+Timeout fails (no threshold).
	Period  time.Duration
	Timeout time.Duration
	// FailureThreshold and SuccessThreshold count consecutive results before
	// a check's effective state flips. The first result after a start applies
	// at once, as in Kubernetes. Values below 1 count as 1.
	FailureThreshold int
	SuccessThreshold int
	// RestartCheckDelay is the grace after a (re)start during which check
	// failures do not count. It starts when initialize returns and applies
	// to the heartbeat and hook checks (failures are shown raw but do not
	// move the effective state, and silence does not count); crashes, hangs
	// and error patterns count at once.
	RestartCheckDelay time.Duration
	// StopTrafficThreshold is how long an instance must fail continuously
	// before it leaves traffic; RestartThreshold, before it is restarted.
	// Both run from the moment a check's effective state first failed, and
	// continue while any check fails. 0 means at once; a RestartThreshold
	// below StopTrafficThreshold acts as StopTrafficThreshold.
	StopTrafficThreshold time.Duration
	RestartThreshold     time.Duration
	// HeartbeatPeriod and HeartbeatTimeout pace the control-channel ping
	// (run by the supervisor, which posts every result, timeouts included).
	// The engine fails a heartbeat silent for 2×HeartbeatPeriod+
	// HeartbeatTimeout once it has reported since the process started.
	HeartbeatPeriod  time.Duration
	HeartbeatTimeout time.Duration
	// InitializeTimeout limits initialize(); 0 turns it off. A stub that
	// runs past it is treated as a hang (CauseHang): the load fails, or the
	// restart is retried with backoff.
	InitializeTimeout time.Duration
	// ExecuteTimeout limits one batch's execute; 0 turns it off. The
	// scheduler enforces it and posts ExecuteResult{TimedOut: true}; the
	// engine then restarts the instance at once (subject to backoff and the
	// crash-loop breaker).
	ExecuteTimeout time.Duration
	// ConsecutiveErrors failed executes in a row fail the errors check
	// (0 = off); an error whose message contains one of ErrorPatterns
	// (case-insensitive substring) fails it at once. The next successful
	// execute passes it again. Only model failures count: the scheduler must
	// not post request validation errors.
	ConsecutiveErrors int
	ErrorPatterns     []string
	// MinReadyInstances routable instances keep the model READY. Values
	// below 1 count as 1, values above the instance count as the count.
	MinReadyInstances int
	// Restart backoff: the first restart is immediate, then BackoffInitial
	// doubling to BackoffMax; reset after BackoffReset of health. It applies
	// to every restart the engine decides (exit, failed initialize, hang,
	// restart threshold). "Health" is continuous READY; UNHEALTHY breaks it.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	BackoffReset   time.Duration
	// MaxRestarts restarts within RestartWindow mark the instance FAILED:
	// MaxRestarts restarts are allowed in any window, and the next one that
	// would be needed makes the instance FAILED instead (Actuator.Fail). 0
	// means no in-server restart at all; a negative value means unlimited.
	// A RestartWindow of 0 counts every restart since the version loaded.
	MaxRestarts   int
	RestartWindow time.Duration
	// DependsOn names models this model's readiness follows (health.yaml
	// depends_on): the models it calls through BLS. The manager turns them
	// into the version's Dependency list.
	DependsOn []string
}

// DefaultPolicy is the server-wide default before flags, --health-config and
// health.yaml apply.
func DefaultPolicy() Policy {
	return Policy{
		Period:               10 * time.Second,
		Timeout:              5 * time.Second,
		FailureThreshold:     1,
		SuccessThreshold:     1,
		RestartCheckDelay:    0,
		StopTrafficThreshold: 0,
		RestartThreshold:     30 * time.Second,
		HeartbeatPeriod:      time.Second,
		HeartbeatTimeout:     2 * time.Second,
		InitializeTimeout:    10 * time.Minute,
		ExecuteTimeout:       0,
		ConsecutiveErrors:    0,
		MinReadyInstances:    1,
		BackoffInitial:       time.Second,
		BackoffMax:           5 * time.Minute,
		BackoffReset:         10 * time.Minute,
		MaxRestarts:          5,
		RestartWindow:        10 * time.Minute,
	}
}
