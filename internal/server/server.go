// Package server assembles vigil: listeners first, so liveness answers while
// models load, then the health engine, the model manager and the REST and
// gRPC front ends; and it runs the shutdown sequence of the drain contract.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	grpcapi "github.com/vigilhq/vigil/internal/api/grpc"
	"github.com/vigilhq/vigil/internal/api/rest"
	"github.com/vigilhq/vigil/internal/custommetric"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/responder"
	"github.com/vigilhq/vigil/internal/sharedmemory"
	"github.com/vigilhq/vigil/internal/status"
	"github.com/vigilhq/vigil/internal/tritonmetrics"
	"github.com/vigilhq/vigil/python"
)

// Name and Version identify the server in metadata.
const Name = "vigil"

// Config is everything `vigil serve` is told.
type Config struct {
	Version         string
	ModelRepository string
	Host            string
	HTTPPort        int
	GRPCPort        int
	// HealthPort, when not negative, serves health and metrics on a
	// listener of their own (0 picks a free port).
	HealthPort int
	// ProbePort, when not negative, serves the health routes from a child
	// process of their own (internal/responder; 0 picks a free port).
	ProbePort int
	// ProbeRTPriority runs that child under SCHED_FIFO at this priority
	// (--probe-rt-priority); 0 is the normal scheduler.
	ProbeRTPriority int
	// LogFormat is the text or json of the logs, for that child.
	LogFormat string
	Python    string
	// StubNice is added to each stub's nice value (see python.Args).
	StubNice        int
	ControlMode     model.ControlMode
	PollInterval    time.Duration
	LoadModels      []string
	StrictReadiness bool
	EscalateFailed  bool
	HideReasons     bool
	// Metrics serves Prometheus metrics on /metrics.
	Metrics bool
	// MetricsOptions are Triton's --metrics-config switches; the zero value
	// means Triton's defaults.
	MetricsOptions tritonmetrics.Options
	// MetricsPort, when not negative, also serves /metrics on a listener
	// of its own (Triton's 8002; 0 picks a free port).
	MetricsPort int
	// AllowClientShm lets clients register system shared memory regions
	// (--allow-client-shm).
	AllowClientShm  bool
	Policy          health.Policy
	MaxRequestBytes int64
	// MaxConcurrentRequestBytes bounds the HTTP body bytes held at once;
	// BodyReadTimeout bounds reading one HTTP request.
	MaxConcurrentRequestBytes int64
	BodyReadTimeout           time.Duration
	MaxQueue                  int
	MaxElements               int64
	AdminToken                string
	DrainDelay                time.Duration
	ShutdownTimeout           time.Duration
	FinalizeTimeout           time.Duration
	WatchdogInterval          time.Duration
	// LogVerbose (Triton's --log-verbose) writes the models'
	// pb_utils.Logger.log_verbose records when ≥ 1.
	LogVerbose int
	// DisableAutoComplete is Triton's --disable-auto-complete-config: no
	// auto_complete_config runs, and every model needs config.pbtxt.
	DisableAutoComplete bool
	// EnvCacheDir is where EXECUTION_ENV_PATH tarballs are unpacked
	// (--execution-env-cache); "" is a directory of the server's own,
	// removed at exit.
	EnvCacheDir string
	// MaxStreamDuration bounds one request's life on an instance
	// (--max-stream-duration).
	MaxStreamDuration time.Duration
	Logger            *slog.Logger
}

// Run serves until ctx ends, then drains and stops. It returns nil after a
// clean shutdown.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger

	// Ports open before anything loads: liveness answers from the start.
	httpLis, err := listen(cfg.Host, cfg.HTTPPort)
	if err != nil {
		return fmt.Errorf("cannot listen for HTTP: %w", err)
	}
	grpcLis, err := listen(cfg.Host, cfg.GRPCPort)
	if err != nil {
		httpLis.Close()
		return fmt.Errorf("cannot listen for gRPC: %w", err)
	}
	var healthLis net.Listener
	if cfg.HealthPort >= 0 {
		if healthLis, err = listen(cfg.Host, cfg.HealthPort); err != nil {
			httpLis.Close()
			grpcLis.Close()
			return fmt.Errorf("cannot listen for health: %w", err)
		}
	}
	var probeLis net.Listener
	if cfg.ProbePort >= 0 {
		if probeLis, err = listen(cfg.Host, cfg.ProbePort); err != nil {
			for _, l := range []net.Listener{httpLis, grpcLis, healthLis} {
				if l != nil {
					l.Close()
				}
			}
			return fmt.Errorf("cannot listen for probes: %w", err)
		}
	}
	var metricsLis net.Listener
	if cfg.MetricsPort >= 0 && cfg.Metrics {
		if metricsLis, err = listen(cfg.Host, cfg.MetricsPort); err != nil {
			for _, l := range []net.Listener{httpLis, grpcLis, healthLis, probeLis} {
				if l != nil {
					l.Close()
				}
			}
			return fmt.Errorf("cannot listen for metrics: %w", err)
		}
	}
	// Until the servers own them, the listeners are closed on any return.
	serving := false
	defer func() {
		if serving {
			return
		}
		for _, l := range []net.Listener{httpLis, grpcLis, healthLis, probeLis, metricsLis} {
			if l != nil {
				l.Close()
			}
		}
	}()

	if cfg.MetricsOptions.Quantiles == nil {
		cfg.MetricsOptions = tritonmetrics.DefaultOptions()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	engine := health.NewEngine(health.EngineConfig{
		Logger:           log.With("component", "health"),
		Registerer:       reg,
		Strict:           cfg.StrictReadiness,
		Escalate:         cfg.EscalateFailed,
		WatchdogInterval: cfg.WatchdogInterval,
	})

	stubDir, err := os.MkdirTemp("", "vigil-stub-")
	if err != nil {
		return fmt.Errorf("cannot create the stub runtime directory: %w", err)
	}
	defer os.RemoveAll(stubDir)
	pythonPath, err := python.Install(stubDir)
	if err != nil {
		return fmt.Errorf("cannot install the stub runtime: %w", err)
	}
	interp, runtimeErr := python.Resolve(ctx, cfg.Python)
	if runtimeErr == nil {
		log.Info("python interpreter", "path", interp)
	}
	// A missing numpy can be installed while the server runs: each load
	// checks again (a missing interpreter cannot: its path is fixed).
	var recheck func(context.Context) error
	var numpyErr *python.NumpyError
	if errors.As(runtimeErr, &numpyErr) {
		recheck = func(ctx context.Context) error {
			_, err := python.Resolve(ctx, interp)
			return err
		}
	}

	// Metrics the models create (pb_utils.MetricFamily) are served beside
	// the server's own; with --metrics=false models are told they are off.
	var modelMetrics *custommetric.Registry
	if cfg.Metrics {
		modelMetrics = custommetric.New()
		reg.MustRegister(modelMetrics)
	}
	if cfg.EnvCacheDir == "" {
		cfg.EnvCacheDir = filepath.Join(stubDir, "envs")
	}
	stubRuntime := instance.Runtime{Python: interp, PythonPath: pythonPath, Args: python.Args(cfg.StubNice),
		Name: python.NameArgs, Metrics: modelMetrics, LogVerbose: cfg.LogVerbose >= 1}

	mgr := model.New(model.Config{
		RepoDir:         cfg.ModelRepository,
		Mode:            cfg.ControlMode,
		StartupModels:   cfg.LoadModels,
		Defaults:        cfg.Policy,
		Runtime:         stubRuntime,
		RuntimeErr:      runtimeErr,
		RecheckRuntime:  recheck,
		Events:          engine,
		Health:          engine,
		Logger:          log,
		FinalizeTimeout: cfg.FinalizeTimeout,
		DrainTimeout:    cfg.ShutdownTimeout,
		HideReasons:     cfg.HideReasons,
		MaxQueue:        cfg.MaxQueue,
		MaxElements:     cfg.MaxElements,
		Metrics:         reg,
		AutoComplete:    !cfg.DisableAutoComplete,
		ScratchDir:      filepath.Join(stubDir, "overrides"),
		EnvCacheDir:     cfg.EnvCacheDir,
		Observer:        tritonmetrics.NewLatencies(reg, cfg.MetricsOptions).For,

		MaxStreamDuration: cfg.MaxStreamDuration,
	})
	if runtimeErr != nil {
		log.Error("no usable python interpreter: models cannot load", "err", runtimeErr, "then", mgr.RuntimeHint())
	}
	engine.SetActuator(mgr)
	reg.MustRegister(tritonmetrics.New(mgr, tritonmetrics.Config{Logger: log.With("component", "metrics"),
		NoCounterLatencies: !cfg.MetricsOptions.CounterLatencies}))
	engineCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEngine()
	engine.Start(engineCtx)
	defer engine.Close()

	shm := sharedmemory.New(sharedmemory.Config{Enabled: cfg.AllowClientShm, Logger: log.With("component", "sharedmemory")})
	// After the front ends stopped: nothing can lease a region any more.
	defer shm.Close()
	served := servedModels{Manager: mgr, shm: shm}

	var metrics http.Handler
	if cfg.Metrics {
		metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	}
	page := status.New(engine, status.Config{
		HideReasons: cfg.HideReasons,
		Traffic:     func() []status.Counters { return trafficCounters(mgr) },
		InFlight:    mgr.InFlight,
		Logger:      log.With("component", "status"),
	})
	defer page.Close()
	// Large binary HTTP bodies and gRPC inference requests are read into
	// reused memory files whose pages the stubs map (package memfile).
	bodyFiles := memfile.NewPool(0)
	defer bodyFiles.Close()
	restCfg := rest.Config{
		BodyFiles:                 bodyFiles,
		ServerName:                Name,
		ServerVersion:             cfg.Version,
		Extensions:                protocolExtensions(cfg.AllowClientShm),
		SharedMemory:              shm,
		MaxRequestBytes:           cfg.MaxRequestBytes,
		MaxConcurrentRequestBytes: cfg.MaxConcurrentRequestBytes,
		AdminToken:                cfg.AdminToken,
		HideReasons:               cfg.HideReasons,
		Metrics:                   metrics,
		Status:                    page,
		Logger:                    log.With("component", "rest"),
		InFlight:                  mgr.InFlight,
	}
	httpSrv := &http.Server{
		Handler:           rest.NewHandler(served, engine, restCfg),
		ReadHeaderTimeout: 10 * time.Second,
		// A body must arrive within this (the deadline is cleared once it
		// has: a long inference is not cut off).
		ReadTimeout: readTimeout(cfg.BodyReadTimeout),
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Status page streams end when shutdown starts instead of holding it up.
	httpSrv.RegisterOnShutdown(page.Close)
	grpcSrv := grpcapi.NewServer(served, engine, grpcapi.Config{
		ServerName:    Name,
		ServerVersion: cfg.Version,
		Extensions:    protocolExtensions(cfg.AllowClientShm),
		SharedMemory:  shm,
		BodyFiles:     bodyFiles,
		AdminToken:    cfg.AdminToken,
		HideReasons:   cfg.HideReasons,
		MaxRecvBytes:  int(cfg.MaxRequestBytes),
		Logger:        log.With("component", "grpc"),
	})
	var healthSrv *http.Server
	if healthLis != nil {
		healthSrv = &http.Server{Handler: rest.NewHealthHandler(engine, restCfg), ReadHeaderTimeout: 5 * time.Second}
	}
	var metricsSrv *http.Server
	if metricsLis != nil {
		metricsSrv = &http.Server{Handler: rest.NewMetricsHandler(metrics), ReadHeaderTimeout: 5 * time.Second}
	}

	if probeLis != nil {
		// Started before anything serves, so that a failure here leaves
		// the listeners to the deferred close above.
		probes, err := startResponder(cfg, engine, probeLis)
		if err != nil {
			return err
		}
		log.Info("listening", "protocol", "probes", "addr", probeLis.Addr().String())
		defer func() {
			probes.Close() // last with metrics: the shutdown can be watched
			probeLis.Close()
		}()
	}

	startup := mgr.PlanStartup(ctx)

	serving = true
	var wg sync.WaitGroup
	serve := func(what string, lis net.Listener, fn func() error) {
		log.Info("listening", "protocol", what, "addr", lis.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("server stopped", "protocol", what, "err", err)
			}
		}()
	}
	serve("http", httpLis, func() error { return httpSrv.Serve(httpLis) })
	serve("grpc", grpcLis, func() error { return grpcSrv.Serve(grpcLis) })
	if healthSrv != nil {
		serve("health", healthLis, func() error { return healthSrv.Serve(healthLis) })
	}
	if metricsSrv != nil {
		serve("metrics", metricsLis, func() error { return metricsSrv.Serve(metricsLis) })
	}

	loadCtx, stopLoading := context.WithCancel(ctx)
	defer stopLoading()
	wg.Add(1)
	go func() {
		defer wg.Done()
		mgr.LoadStartup(loadCtx, startup)
	}()
	if cfg.ControlMode == model.ModePoll {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mgr.Poll(loadCtx, cfg.PollInterval)
		}()
	}

	<-ctx.Done()
	shutdown(cfg, log, engine, grpcSrv, httpSrv, healthSrv, mgr, stopLoading)
	if metricsSrv != nil {
		_ = metricsSrv.Close() // last, so the shutdown can be watched
	}
	wg.Wait()
	stopEngine()
	engine.Close()
	log.Info("shutdown complete")
	return nil
}

// shutdown is the drain contract: readiness fails at once while requests
// are still served for the drain delay; then listeners close and in-flight
// requests finish within the shutdown timeout; then every stub finalizes.
func shutdown(cfg Config, log *slog.Logger, engine *health.Engine, grpcSrv *grpcapi.Server,
	httpSrv, healthSrv *http.Server, mgr *model.Manager, stopLoading context.CancelFunc) {
	log.Info("shutting down: draining", "drain_delay", cfg.DrainDelay.String())
	engine.Post(health.Event{Kind: health.Draining, At: time.Now(), Reason: "server is shutting down"})
	// Readiness, and the HTTP side's "Connection: close" on every response,
	// follow the snapshot: wait until it shows the drain.
	syncCtx, cancelSync := context.WithTimeout(context.Background(), time.Second)
	_ = engine.Sync(syncCtx)
	cancelSync()
	mgr.Drain() // sequence models take no new sequences; open ones go on
	grpcSrv.Drain()
	if cfg.DrainDelay > 0 {
		t := time.NewTimer(cfg.DrainDelay)
		<-t.C
	}
	log.Info("shutting down: closing listeners", "shutdown_timeout", cfg.ShutdownTimeout.String())
	stopLoading()

	// In-flight requests get the shutdown timeout to finish. Those still
	// running then are answered, not cut off: stopping the instances fails
	// them with 503 (HTTP) or UNAVAILABLE (gRPC), and the front ends get a
	// moment to write those answers before their connections close.
	const answerGrace = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	grpcCtx, cancelGRPC := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+cfg.FinalizeTimeout+answerGrace)
	defer cancelGRPC()
	grpcDone := make(chan struct{})
	go func() {
		defer close(grpcDone)
		grpcSrv.GracefulStop(grpcCtx)
	}()
	httpErr := httpSrv.Shutdown(ctx)
	timedOut := httpErr != nil
	if !timedOut {
		select {
		case <-grpcDone:
		case <-ctx.Done():
			timedOut = true
		}
	}
	// Instances: when everything drained, finalize() gets its limit; when
	// requests are stuck, their instances are stopped at once.
	log.Info("shutting down: stopping model instances", "requests_stuck", timedOut)
	waitForBatches := cfg.FinalizeTimeout
	if timedOut {
		waitForBatches = 0
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), waitForBatches)
	defer cancelStop()
	mgr.Close(stopCtx)
	if timedOut {
		answered, cancelAnswered := context.WithTimeout(context.Background(), answerGrace)
		if err := httpSrv.Shutdown(answered); err != nil {
			log.Warn("HTTP requests still open after the shutdown timeout: closing them", "err", err)
			_ = httpSrv.Close()
		}
		cancelAnswered()
	}
	<-grpcDone
	if healthSrv != nil {
		_ = healthSrv.Close()
	}
}

// trafficCounters are the model manager's statistics as the status page
// reads them.
func trafficCounters(mgr *model.Manager) []status.Counters {
	stats, err := mgr.Stats("", "")
	if err != nil {
		return nil
	}
	out := make([]status.Counters, 0, len(stats))
	for _, st := range stats {
		out = append(out, status.Counters{
			Model: st.Name, Version: st.Version,
			Requests: st.Success.Count, Failures: st.Fail.Count,
			Latency: st.Success.Total, Queue: st.Queue.Total, Queued: st.Queue.Count,
			Pending: st.Pending,
		})
	}
	return out
}

// readTimeout is the HTTP server's ReadTimeout: --body-read-timeout, one
// minute when unset.
func readTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Minute
	}
	return d
}

// protocolExtensions are the protocol extensions vigil implements;
// system_shared_memory only when clients may use it.
func protocolExtensions(shm bool) []string {
	ext := []string{"binary_tensor_data", "model_repository", "model_configuration", "statistics", "parameters",
		"sequence", "sequence(string_id)"}
	if shm {
		ext = append(ext, "system_shared_memory")
	}
	return ext
}

// servedModels is the model manager as the front ends see it: inference
// goes through the shared memory registry, which resolves the regions a
// request names before the manager sees it.
type servedModels struct {
	*model.Manager
	shm *sharedmemory.Registry
}

func (s servedModels) Infer(ctx context.Context, req *inference.Request) (*inference.Response, error) {
	return s.shm.Infer(ctx, req, s.Manager.Infer)
}

// InferStream is Infer for a stream (ModelStreamInfer): the shared memory
// outputs of each response are written before it is sent.
func (s servedModels) InferStream(ctx context.Context, req *inference.Request, emit func(model.Reply) error) error {
	b, err := s.shm.Bind(req)
	defer b.Release()
	if err != nil {
		return err
	}
	if b == nil {
		return s.Manager.InferStream(ctx, req, emit)
	}
	return s.Manager.InferStream(ctx, b.Request(), func(rep model.Reply) error {
		if rep.Err == nil && rep.Response != nil {
			if err := b.WriteOutputs(rep.Response); err != nil {
				rep.Response, rep.Err = nil, err
			}
		}
		return emit(rep)
	})
}

// startResponder starts the child that answers probes on lis. It fails
// ping once the server has sent no snapshot for as long as the engine's
// watchdog takes to call its own loop stalled.
func startResponder(cfg Config, engine *health.Engine, lis net.Listener) (*responder.Responder, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("probe responder: %w", err)
	}
	staleAfter := health.WatchdogMissedIntervals * cfg.WatchdogInterval
	if staleAfter <= 0 {
		staleAfter = health.WatchdogMissedIntervals * time.Second
	}
	return responder.Start(responder.Config{
		Exe: exe, Listener: lis.(*net.TCPListener), Source: engine,
		StaleAfter: staleAfter, Beat: staleAfter / 10,
		HideReasons: cfg.HideReasons, LogFormat: cfg.LogFormat,
		RTPriority: cfg.ProbeRTPriority,
		Logger:     cfg.Logger.With("component", "responder"),
	})
}

func listen(host string, port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
}
