package instance

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/custommetric"
	"github.com/vigilhq/vigil/internal/ipc"
)

// logMetricCalls serves one stub process's LOG and METRIC frames: log records
// go to the instance's logger, metrics to the process's share of the
// custom metric registry.
type logMetricCalls struct {
	log     *slog.Logger
	verbose bool
	metrics *custommetric.Owner // nil: custom metrics are off

	mu     sync.Mutex
	budget lineBudget
}

func newLogMetricCalls(rt Runtime, log *slog.Logger) *logMetricCalls {
	c := &logMetricCalls{log: log, verbose: rt.LogVerbose}
	if rt.Metrics != nil {
		c.metrics = rt.Metrics.NewOwner()
	}
	return c
}

// close releases the process's metrics.
func (c *logMetricCalls) close() {
	if c.metrics != nil {
		c.metrics.Close()
	}
}

// modelLevels maps pb_utils.Logger levels to the server log's. VERBOSE
// records are written only with --log-verbose, at info level, as Triton
// writes them only with --log-verbose ≥ 1.
var modelLevels = map[string]slog.Level{
	"INFO":    slog.LevelInfo,
	"WARNING": slog.LevelWarn,
	"ERROR":   slog.LevelError,
	"VERBOSE": slog.LevelInfo,
}

// Log keys of model log records.
const (
	LogKeyModelLevel = "model_level"
	LogKeyFile       = "file"
	LogKeyLine       = "line"
)

func (c *logMetricCalls) Log(rec ipc.LogRecord) {
	level, ok := modelLevels[rec.Level]
	if !ok {
		level, rec.Level = slog.LevelInfo, "INFO"
	}
	if rec.Level == "VERBOSE" && !c.verbose {
		return
	}
	c.mu.Lock()
	ok, suppressed := c.budget.take(time.Now())
	c.mu.Unlock()
	if suppressed > 0 {
		c.log.Warn("model log records suppressed", "records", suppressed)
	}
	if !ok {
		return
	}
	msg := rec.Message
	if len(msg) > maxLogLine {
		msg = fmt.Sprintf("%s… (cut at %d bytes)", msg[:maxLogLine], maxLogLine)
	}
	c.log.Log(context.Background(), level, msg,
		LogKeyModelLevel, rec.Level, LogKeyFile, rec.File, LogKeyLine, rec.Line)
}

func (c *logMetricCalls) Metric(call ipc.MetricCall) (ipc.MetricReply, error) {
	o := c.metrics
	if o == nil {
		return ipc.MetricReply{}, fmt.Errorf("custom metrics are off in this server (--metrics=false)")
	}
	switch call.Op {
	case "family_new":
		kind, err := custommetric.ParseKind(call.Kind)
		if err != nil {
			return ipc.MetricReply{}, err
		}
		id, err := o.NewFamily(call.Name, call.Description, kind)
		return ipc.MetricReply{ID: id}, err
	case "family_delete":
		return ipc.MetricReply{}, o.DeleteFamily(call.ID)
	case "metric_new":
		id, err := o.NewMetric(call.Family, call.Labels, call.Buckets)
		return ipc.MetricReply{ID: id}, err
	case "metric_delete":
		return ipc.MetricReply{}, o.DeleteMetric(call.ID)
	case "increment", "set", "observe", "value":
		v, err := o.Apply(call.ID, custommetric.Op(call.Op), call.Value)
		return ipc.MetricReply{Value: v}, err
	}
	return ipc.MetricReply{}, fmt.Errorf("unknown metric operation %q", call.Op)
}

// lineBudget is a token bucket over log lines: logBurst at once, logRate a
// second after that.
type lineBudget struct {
	tokens     float64
	refilled   time.Time
	suppressed int
}

// take spends a token if there is one. suppressed is how many lines were
// refused since the last line that went through, reported once a line goes
// through again.
func (b *lineBudget) take(now time.Time) (ok bool, suppressed int) {
	if b.refilled.IsZero() {
		b.tokens, b.refilled = logBurst, now
	}
	b.tokens = min(logBurst, b.tokens+now.Sub(b.refilled).Seconds()*logRate)
	b.refilled = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}
