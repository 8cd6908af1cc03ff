// Command bench measures vigil in one run and reports each figure next to a
// baseline measured in the same run, since absolute numbers on shared
// machines are noisy:
//
//   - the raw Go↔Python IPC round trip (an empty ping to a stub) is the
//     baseline for infer latency;
//   - GET /v2/health/live on an idle server is the baseline for the HTTP stack;
//   - a floor server (this program answering every request with an empty
//     200 from a process of its own) shows what the machine itself costs:
//     the same infer request posted to it, plus the IPC execute, is the
//     least any server could take here, and its probe latency under the
//     same load is the least any probe could see;
//   - infer latency (concurrency 1) and throughput (concurrency 8) over HTTP
//     and gRPC on the add_sub example;
//   - /v2/health/ready and grpc.health.v1 Check latency while that load runs;
//   - detection (SIGKILL → model NOT_SERVING, pushed by gRPC Watch) and
//     recovery (→ SERVING again) over repeated kills;
//   - hang detection: SIGSTOP against heartbeat_timeout_seconds, and a hung
//     execute against execute_timeout_seconds;
//   - 16 clients running sequences under sequence_batching direct and
//     oldest, next to the same requests without sequences (sequence.go);
//   - calls between models: one BLS hop (bls_add_sub → add_sub) against
//     add_sub direct and the IPC round trips, and a 3-step ensemble
//     (add_sub_chain) against the sum of its steps, in the same rounds;
//   - a 16 MiB FP32 identity round trip over HTTP binary, gRPC and system
//     shared memory, as GB/s, HTTP binary being the baseline.
//
// Run it with `make bench` (it builds vigil first).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	stubpy "github.com/vigilhq/vigil/python"
)

type options struct {
	vigil    string
	python   string
	duration time.Duration
	kills    int
	samples  int
	extra    string
	// transferOnly measures only the large-tensor transfer figures.
	transferOnly bool
	// transferCalls is how many round trips each transfer figure times.
	transferCalls int
	// sequencesOnly measures only the sequence batching figures.
	sequencesOnly bool
	// callsOnly measures only the BLS hop and ensemble figures.
	callsOnly bool

	// -peers
	peers         bool
	tritonVenv    string
	vigilBaseline string
	rounds        int
	stepDuration  time.Duration
	largeSamples  int
	flatRequests  int
	steps         *regexp.Regexp
}

func main() {
	var o options
	flag.StringVar(&o.vigil, "vigil", "bin/vigil", "vigil binary")
	flag.StringVar(&o.python, "python", "python3", "Python interpreter for the stubs")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each throughput run")
	flag.IntVar(&o.kills, "kills", 20, "SIGKILLs for the detection and recovery figures")
	flag.IntVar(&o.samples, "samples", 3000, "requests for each latency figure")
	flag.BoolVar(&o.transferOnly, "transfer-only", false, "measure only the 16 MiB transfer figures (HTTP binary, gRPC, shared memory)")
	flag.IntVar(&o.transferCalls, "transfer-calls", 20, "round trips timed for each 16 MiB transfer figure (CPU per call is counted in 10 ms ticks: more calls, finer figures)")
	flag.BoolVar(&o.callsOnly, "calls-only", false, "measure only the figures of models that call models (one BLS hop, a 3-step ensemble) and the IPC round trips beside them")
	flag.BoolVar(&o.sequencesOnly, "sequences-only", false, "measure only the sequence figures (16 interleaved sequences under direct and oldest, and the same requests without sequences)")
	flag.StringVar(&o.extra, "serve-args", "", "more `vigil serve` arguments, space-separated (e.g. \"--stub-nice 0\")")
	flag.BoolVar(&o.peers, "peers", false, "compare vigil with Triton and the floor server instead (make bench-peers)")
	flag.StringVar(&o.tritonVenv, "triton-venv", "bin/triton-venv", "with -peers: virtual environment holding nvidia-pytriton")
	flag.StringVar(&o.vigilBaseline, "vigil-baseline", "", "with -peers, -calls-only or -transfer-only: another vigil binary run in the same rounds as vigil-base, for before/after ratios; a command split at spaces, so that \"env GODEBUG=schedtrace=0 bin/vigil\" runs a binary with settings of its own")
	flag.IntVar(&o.rounds, "rounds", 3, "with -peers: interleaved rounds")
	flag.DurationVar(&o.stepDuration, "step", 3*time.Second, "with -peers: length of each load step")
	flag.IntVar(&o.largeSamples, "large-samples", 10, "with -peers: 16 MiB round trips per server, protocol and round")
	flag.IntVar(&o.flatRequests, "flat-requests", 2000, "with -peers: large requests for the memory-flatness figure (0 skips)")
	steps := flag.String("steps", "", "with -peers: run only the steps whose names match this regular expression (e.g. 'gRPC c=16|MiB')")
	probeURL := flag.String("probe-url", "", "internal: run as the external readiness prober of this URL")
	probeEvery := flag.Duration("probe-every", 5*time.Millisecond, "internal: prober period")
	floorServer := flag.Bool("floor-server", false, "internal: run as the floor HTTP server")
	flag.Parse()
	var err error
	if o.steps, err = regexp.Compile(*steps); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -steps:", err)
		os.Exit(2)
	}
	if *floorServer {
		if err := runFloorServer(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench floor server:", err)
			os.Exit(1)
		}
		return
	}
	if *probeURL != "" {
		if err := runProber(*probeURL, *probeEvery, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench prober:", err)
			os.Exit(1)
		}
		return
	}
	runner := run
	if o.peers {
		runner = runPeers
	}
	if err := runner(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, w io.Writer) error {
	python, err := stubpy.Resolve(ctx, o.python)
	if err != nil {
		return err
	}
	r := &report{w: w}
	fmt.Fprintf(w, "vigil benchmark — %s, python %s\n\n", time.Now().Format(time.RFC3339), python)

	ipc, err := measureIPC(ctx, python, o.samples)
	if err != nil {
		return fmt.Errorf("ipc: %w", err)
	}
	defer ipc.close()
	r.add("ipc ping round trip (baseline)", ipc.ping, "")
	r.add("ipc execute add_sub FP32[1,16]", ipc.exec, ratio(ipc.exec.p50, ipc.ping.p50))

	repo, err := benchRepository()
	if err != nil {
		return err
	}
	defer os.RemoveAll(repo)
	if err := addSequenceModels(repo); err != nil {
		return err
	}
	// --allow-client-shm for the shared memory transfer figure.
	srv, err := startServer(o.vigil, repo, python, append(strings.Fields(o.extra), "--allow-client-shm")...)
	if err != nil {
		return err
	}
	defer srv.stop()
	if err := srv.waitReady(60 * time.Second); err != nil {
		return err
	}
	if o.transferOnly {
		var base *vigilServer
		if o.vigilBaseline != "" {
			if base, err = startServer(o.vigilBaseline, repo, python, append(strings.Fields(o.extra), "--allow-client-shm")...); err != nil {
				return err
			}
			defer base.stop()
			if err := base.waitReady(60 * time.Second); err != nil {
				return err
			}
			fmt.Fprintf(w, "vigil-base: %s, same serve args\n\n", o.vigilBaseline)
		}
		if err := measureTransfer(ctx, srv, base, o.transferCalls, r); err != nil {
			return fmt.Errorf("transfer: %w", err)
		}
		r.print()
		return nil
	}
	if o.callsOnly {
		var base *vigilServer
		if o.vigilBaseline != "" {
			if base, err = startServer(o.vigilBaseline, repo, python, strings.Fields(o.extra)...); err != nil {
				return err
			}
			defer base.stop()
			if err := base.waitReady(60 * time.Second); err != nil {
				return err
			}
			fmt.Fprintf(w, "vigil-base: %s, same serve args\n\n", o.vigilBaseline)
		}
		if err := measureCallsAgainst(ctx, srv, base, o, r, ipc); err != nil {
			return err
		}
		r.print()
		return nil
	}
	if o.sequencesOnly {
		if err := measureSequences(ctx, srv, o, r); err != nil {
			return fmt.Errorf("sequences: %w", err)
		}
		r.print()
		return nil
	}
	if err := measureServing(ctx, srv, o, r, ipc); err != nil {
		return err
	}
	if err := measureSequences(ctx, srv, o, r); err != nil {
		return fmt.Errorf("sequences: %w", err)
	}
	if err := measureTransfer(ctx, srv, nil, o.transferCalls, r); err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	if err := measureCalls(ctx, srv, o, r, ipc); err != nil {
		return err
	}
	if err := measureStreaming(ctx, srv, o, r, python); err != nil {
		return fmt.Errorf("streaming: %w", err)
	}
	if err := measureRecovery(ctx, srv, o, r); err != nil {
		return err
	}
	r.print()
	return nil
}

// benchRepository copies the examples and the test models the health
// figures need into a temporary repository. The kill target gets a policy
// without restart backoff, so that repeated kills measure recovery itself.
func benchRepository() (string, error) {
	dir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return "", err
	}
	copies := map[string]string{
		"add_sub":       "examples/models/add_sub",
		"identity":      "examples/models/identity",
		"bls_add_sub":   "examples/models/bls_add_sub",
		"add_sub_chain": "examples/models/add_sub_chain",
		"square_int32":  "examples/models/square_int32",
		"echo":          "tests/integration/testdata/models/echo",
		"sleepy":        "tests/integration/testdata/models/sleepy",
		"victim":        "tests/integration/testdata/models/echo",
	}
	for name, src := range copies {
		if err := os.CopyFS(filepath.Join(dir, name), os.DirFS(src)); err != nil {
			return "", err
		}
	}
	cfg := filepath.Join(dir, "victim", "config.pbtxt")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), `name: "echo"`, `name: "victim"`, 1)), 0o644); err != nil {
		return "", err
	}
	policy := "max_restarts: 100000\nrestart_backoff: { initial_seconds: 0.1, max_seconds: 0.1 }\n" +
		"heartbeat_period_seconds: 0.1\nheartbeat_timeout_seconds: 0.5\nrestart_threshold_seconds: 0.5\n"
	return dir, os.WriteFile(filepath.Join(dir, "victim", "health.yaml"), []byte(policy), 0o644)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
