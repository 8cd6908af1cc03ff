package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/procs"
	"github.com/vigilhq/vigil/internal/responder"
	"github.com/vigilhq/vigil/internal/server"
	"github.com/vigilhq/vigil/internal/tritonmetrics"
)

// defaultGCPercent is the garbage collector's GOGC for `vigil serve` when
// the environment does not set GOGC. The server's live heap is a few
// megabytes (tensors pass through it), so at Go's default of 100 the
// collector runs dozens of times a second under load, and each cycle's mark
// phase takes one of only two Ps on a small machine: probe answers queue
// behind it. 400 makes cycles four times rarer for a few more megabytes of
// heap. Deployments with large tensors can lower it with GOGC or bound the
// heap with GOMEMLIMIT (see docs/configuration.md).
const defaultGCPercent = 400

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func serveMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg          server.Config
		mode         string
		loadModels   listFlag
		healthConfig string
		healthSet    listFlag
		metricsSet   listFlag
		logFormat    string
		logLevel     string
		adaptive     bool
	)
	fs.StringVar(&cfg.ModelRepository, "model-repository", "", "model repository directory (required)")
	fs.StringVar(&cfg.Host, "host", "0.0.0.0", "address to listen on")
	fs.IntVar(&cfg.HTTPPort, "http-port", 8000, "HTTP port (0 picks a free port)")
	fs.IntVar(&cfg.GRPCPort, "grpc-port", 8001, "gRPC port (0 picks a free port)")
	fs.IntVar(&cfg.HealthPort, "health-port", -1, "also serve health and metrics on this port (-1 = off, 0 picks a free port)")
	fs.IntVar(&cfg.ProbePort, "probe-port", -1, "also serve the health routes on this port, from a child process that does nothing else, so that probes are answered at once under full load (-1 = off, 0 picks a free port)")
	fs.IntVar(&cfg.ProbeRTPriority, "probe-rt-priority", 0, "run the --probe-port process under SCHED_FIFO at this priority (1-99), so that a probe is answered the moment it arrives; needs CAP_SYS_NICE (0 = the normal scheduler)")
	fs.StringVar(&cfg.Python, "python", "python3", "Python interpreter for model stubs (resolved once to an absolute path)")
	fs.IntVar(&cfg.StubNice, "stub-nice", 5, "added to each model stub's nice value (0-19), so that under CPU contention the server's probes and request handling run before model code")
	fs.StringVar(&mode, "model-control-mode", "none", "model control mode: none, explicit or poll")
	fs.Var(&loadModels, "load-model", "model to load at start in explicit mode (repeatable)")
	fs.DurationVar(&cfg.PollInterval, "repository-poll-interval", 15*time.Second, "repository rescan period in poll mode")
	fs.BoolVar(&cfg.StrictReadiness, "strict-readiness", true, "readiness requires every model that should be loaded to be READY")
	fs.BoolVar(&cfg.EscalateFailed, "escalate-failed-models", true, "fail liveness when an instance has exhausted its restarts")
	fs.BoolVar(&cfg.Metrics, "metrics", true, "serve Prometheus metrics on /metrics")
	fs.Var(&metricsSet, "metrics-config", "one of Triton's metrics settings as key=value: counter_latencies, histogram_latencies, summary_latencies, summary_quantiles (repeatable)")
	fs.IntVar(&cfg.MetricsPort, "metrics-port", -1, "also serve /metrics on this port, as Triton does on 8002 (-1 = off, 0 picks a free port)")
	fs.BoolVar(&cfg.AllowClientShm, "allow-client-shm", false, "let clients register system shared memory regions: the server then reads inputs from and writes outputs to POSIX shared memory objects they name (see docs/configuration.md)")
	fs.BoolVar(&cfg.HideReasons, "health-hide-reasons", false, "withhold failure reasons from health endpoints")
	fs.StringVar(&healthConfig, "health-config", "", "YAML file with server-wide health policy defaults (health.yaml keys)")
	fs.Var(&healthSet, "health-default", "one health policy default as key=value, e.g. execute_timeout_seconds=30 (repeatable)")
	fs.Int64Var(&cfg.MaxRequestBytes, "max-request-bytes", 64<<20, "largest accepted request body")
	fs.Int64Var(&cfg.MaxConcurrentRequestBytes, "max-concurrent-request-bytes", 256<<20, "request body bytes all HTTP requests may hold at once; more get 503 (at least one largest body)")
	fs.DurationVar(&cfg.BodyReadTimeout, "body-read-timeout", time.Minute, "limit for reading one HTTP request, headers and body")
	fs.Int64Var(&cfg.MaxElements, "max-tensor-elements", 1<<24, "largest element count of one input tensor (0 = no limit)")
	fs.IntVar(&cfg.MaxQueue, "max-queue-size", 1024, "largest number of requests waiting per model version (0 = unbounded)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token required by the repository API (load, unload, index)")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", 5*time.Second, "how long requests keep being served after SIGTERM while readiness fails")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "limit for in-flight requests to finish after the drain delay; also how long an unload or reload waits for them")
	fs.DurationVar(&cfg.FinalizeTimeout, "finalize-timeout", 5*time.Second, "limit for each stub's finalize() on unload and shutdown")
	fs.DurationVar(&cfg.MaxStreamDuration, "max-stream-duration", time.Hour, "longest one request may stay on an instance before its final response; past it the request ends with a deadline error and the model sees it cancelled")
	fs.DurationVar(&cfg.WatchdogInterval, "watchdog-interval", time.Second, "health engine watchdog period; a stall of several periods fails liveness")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.EnvCacheDir, "execution-env-cache", "", "directory where models' EXECUTION_ENV_PATH tarballs are unpacked, one per content; kept across restarts (default: a temporary directory removed at exit)")
	fs.BoolVar(&cfg.DisableAutoComplete, "disable-auto-complete-config", false, "never run models' auto_complete_config; every model then needs a config.pbtxt")
	fs.BoolVar(&adaptive, "adaptive-procs", true, "size the Go runtime's parallelism (GOMAXPROCS) to the CPU the server keeps busy: one P while it uses less than 3/4 of a core, more as load needs them, up to the runtime's default; off when GOMAXPROCS is set")
	fs.IntVar(&cfg.LogVerbose, "log-verbose", 0, "Triton's verbose level: at 1 or more the models' pb_utils.Logger.log_verbose records are written")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	logger, err := newLogger(stderr, logFormat, logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "vigil serve:", err)
		return 2
	}
	cfg.Logger = logger
	cfg.LogFormat = logFormat
	cfg.Version = version
	if cfg.ModelRepository == "" {
		fmt.Fprintln(stderr, "vigil serve: --model-repository is required")
		return 2
	}
	if st, err := os.Stat(cfg.ModelRepository); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "vigil serve: --model-repository %s is not a directory\n", cfg.ModelRepository)
		return 2
	}
	switch model.ControlMode(mode) {
	case model.ModeNone, model.ModeExplicit, model.ModePoll:
		cfg.ControlMode = model.ControlMode(mode)
	default:
		fmt.Fprintf(stderr, "vigil serve: --model-control-mode must be none, explicit or poll, not %q\n", mode)
		return 2
	}
	if cfg.StubNice < 0 || cfg.StubNice > 19 {
		// Raising a priority needs privileges a pod seldom has; lowering
		// the stubs' is always allowed.
		fmt.Fprintf(stderr, "vigil serve: --stub-nice must be between 0 and 19, not %d\n", cfg.StubNice)
		return 2
	}
	if cfg.ProbeRTPriority != 0 {
		if cfg.ProbePort < 0 {
			fmt.Fprintln(stderr, "vigil serve: --probe-rt-priority needs --probe-port")
			return 2
		}
		if cfg.ProbeRTPriority < 1 || cfg.ProbeRTPriority > responder.MaxRTPriority {
			fmt.Fprintf(stderr, "vigil serve: --probe-rt-priority must be between 1 and %d (or 0, off), not %d\n", responder.MaxRTPriority, cfg.ProbeRTPriority)
			return 2
		}
		if err := responder.CheckRealtime(cfg.ProbeRTPriority); err != nil {
			fmt.Fprintf(stderr, "vigil serve: --probe-rt-priority %d: %v\n", cfg.ProbeRTPriority, err)
			return 2
		}
	}
	if len(loadModels) > 0 && cfg.ControlMode != model.ModeExplicit {
		fmt.Fprintln(stderr, "vigil serve: --load-model needs --model-control-mode explicit")
		return 2
	}
	cfg.LoadModels = loadModels
	if cfg.MetricsOptions, err = tritonmetrics.ParseOptions(metricsSet); err != nil {
		fmt.Fprintln(stderr, "vigil serve:", err)
		return 2
	}
	if cfg.Policy, err = modelconfig.ServerPolicy(healthConfig, healthSet); err != nil {
		fmt.Fprintln(stderr, "vigil serve:", err)
		return 2
	}

	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		logger.Info("signal received: shutting down; a second signal exits at once", "signal", sig.String())
		cancel()
		if sig, ok = <-sigs; ok {
			logger.Warn("second signal: exiting now", "signal", sig.String())
			os.Exit(1)
		}
	}()
	if stop := startGovernor(ctx, adaptive, logger); stop != nil {
		defer stop()
	}
	if err := server.Run(ctx, cfg); err != nil {
		logger.Error("vigil serve failed", "err", err)
		return 1
	}
	return 0
}

// startGovernor runs a procs.Governor until ctx ends, unless adaptive is
// off or the environment sets GOMAXPROCS, which then holds. The returned
// function stops it and waits for it; nil when none runs.
func startGovernor(ctx context.Context, adaptive bool, log *slog.Logger) func() {
	if !adaptive {
		return nil
	}
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		log.Info("GOMAXPROCS is set: the Go runtime's parallelism stays as set", "gomaxprocs", v)
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	g := procs.New(procs.GoRuntime{}, procs.ProcessCPU, time.Now, log.With("component", "procs"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}
