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
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	grpcapi "github.com/vigilhq/vigil/internal/api/grpc"
	"github.com/vigilhq/vigil/internal/api/rest"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/model"
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
	Python     string
	// StubNice is added to each stub's nice value (see python.Args).
	StubNice        int
	ControlMode     model.ControlMode
	PollInterval    time.Duration
	LoadModels      []string
	StrictReadiness bool
	EscalateFailed  bool
	HideReasons     bool
	// Metrics serves Prometheus metrics on /metrics.
	Metrics         bool
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
	// Until the servers own them, the listeners are closed on any return.
	serving := false
	defer func() {
		if serving {
			return
		}
		for _, l := range []net.Listener{httpLis, grpcLis, healthLis} {
			if l != nil {
				l.Close()
			}
		}
	}()

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
	if runtimeErr != nil {
		log.Error("no usable python interpreter: models cannot load", "err", runtimeErr)
	} else {
		log.Info("python interpreter", "path", interp)
	}

	mgr := model.New(model.Config{
		RepoDir:         cfg.ModelRepository,
		Mode:            cfg.ControlMode,
		StartupModels:   cfg.LoadModels,
		Defaults:        cfg.Policy,
		Runtime:         instance.Runtime{Python: interp, PythonPath: pythonPath, Args: python.Args(cfg.StubNice)},
		RuntimeErr:      runtimeErr,
		Events:          engine,
		Health:          engine,
		Logger:          log,
		FinalizeTimeout: cfg.FinalizeTimeout,
		DrainTimeout:    cfg.ShutdownTimeout,
		HideReasons:     cfg.HideReasons,
		MaxQueue:        cfg.MaxQueue,
		MaxElements:     cfg.MaxElements,
		Metrics:         reg,

		MaxStreamDuration: cfg.MaxStreamDuration,
	})
	engine.SetActuator(mgr)
	engineCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEngine()
	engine.Start(engineCtx)
	defer engine.Close()

	var metrics http.Handler
	if cfg.Metrics {
		metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	}
	restCfg := rest.Config{
		ServerName:                Name,
		ServerVersion:             cfg.Version,
		Extensions:                protocolExtensions(),
		MaxRequestBytes:           cfg.MaxRequestBytes,
		MaxConcurrentRequestBytes: cfg.MaxConcurrentRequestBytes,
		AdminToken:                cfg.AdminToken,
		HideReasons:               cfg.HideReasons,
		Metrics:                   metrics,
		Logger:                    log.With("component", "rest"),
		InFlight:                  mgr.InFlight,
	}
	httpSrv := &http.Server{
		Handler:           rest.NewHandler(mgr, engine, restCfg),
		ReadHeaderTimeout: 10 * time.Second,
		// A body must arrive within this (the deadline is cleared once it
		// has: a long inference is not cut off).
		ReadTimeout: readTimeout(cfg.BodyReadTimeout),
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	grpcSrv := grpcapi.NewServer(mgr, engine, grpcapi.Config{
		ServerName:    Name,
		ServerVersion: cfg.Version,
		Extensions:    protocolExtensions(),
		AdminToken:    cfg.AdminToken,
		HideReasons:   cfg.HideReasons,
		MaxRecvBytes:  int(cfg.MaxRequestBytes),
		Logger:        log.With("component", "grpc"),
	})
	var healthSrv *http.Server
	if healthLis != nil {
		healthSrv = &http.Server{Handler: rest.NewHealthHandler(engine, restCfg), ReadHeaderTimeout: 5 * time.Second}
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

// readTimeout is the HTTP server's ReadTimeout: --body-read-timeout, one
// minute when unset.
func readTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Minute
	}
	return d
}

// protocolExtensions are the protocol extensions vigil implements.
func protocolExtensions() []string {
	return []string{"binary_tensor_data", "model_repository", "model_configuration", "statistics", "parameters",
		"sequence", "sequence(string_id)"}
}

func listen(host string, port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
}
