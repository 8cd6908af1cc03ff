package health

import "time"

// Policy turns check results into actions for one model's instances. Its
// keys are the health.yaml keys of the configuration reference; durations are
// given in (possibly fractional) seconds there.
type Policy struct {
	// Period and Timeout pace the user hook (period_seconds, timeout_seconds).
	Period  time.Duration
	Timeout time.Duration
	// FailureThreshold and SuccessThreshold count consecutive results before
	// a check's effective state flips. The first result after a start applies
	// at once, as in Kubernetes.
	FailureThreshold int
	SuccessThreshold int
	// RestartCheckDelay is the grace after a (re)start during which check
	// failures do not count.
	RestartCheckDelay time.Duration
	// StopTrafficThreshold is how long an instance must fail continuously
	// before it leaves traffic; RestartThreshold, before it is restarted.
	StopTrafficThreshold time.Duration
	RestartThreshold     time.Duration
	// HeartbeatPeriod and HeartbeatTimeout pace the control-channel ping.
	HeartbeatPeriod  time.Duration
	HeartbeatTimeout time.Duration
	// ExecuteTimeout limits one batch's execute; 0 turns it off.
	ExecuteTimeout time.Duration
	// ConsecutiveErrors failed executes in a row fail the errors check
	// (0 = off); an error whose message contains one of ErrorPatterns fails
	// it at once.
	ConsecutiveErrors int
	ErrorPatterns     []string
	// MinReadyInstances routable instances keep the model READY.
	MinReadyInstances int
	// Restart backoff: the first restart is immediate, then BackoffInitial
	// doubling to BackoffMax; reset after BackoffReset of health.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	BackoffReset   time.Duration
	// MaxRestarts restarts within RestartWindow mark the instance FAILED.
	MaxRestarts   int
	RestartWindow time.Duration
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
		HeartbeatTimeout:     5 * time.Second,
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
