package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// addSubJSON is one add_sub request in JSON.
var addSubJSON = func() []byte {
	vals := strings.TrimSuffix(strings.Repeat("1.5,", 16), ",")
	return []byte(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[` + vals +
		`]},{"name":"INPUT1","datatype":"FP32","shape":[1,16],"data":[` + vals + `]}]}`)
}()

func addSubGRPC() *inferencepb.ModelInferRequest {
	raw := fp32("x", 1.5).Data
	in := func(name string) *inferencepb.ModelInferRequest_InferInputTensor {
		return &inferencepb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "FP32", Shape: []int64{1, 16}}
	}
	return &inferencepb.ModelInferRequest{ModelName: "add_sub",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{in("INPUT0"), in("INPUT1")},
		RawInputContents: [][]byte{raw, raw}}
}

// call is one timed request.
type call func(ctx context.Context) error

func httpCall(c *http.Client, method, url string, body []byte) call {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s %s: %s", method, url, resp.Status)
		}
		return nil
	}
}

// interleaved times n rounds of calls, each round making every call once
// in turn, and returns one distribution per call. Interleaving makes the
// figures that are compared with each other share the machine's
// conditions, which drift on shared hosts.
func interleaved(ctx context.Context, n int, calls ...call) ([]dist, error) {
	const warmup = 100
	ds := make([][]time.Duration, len(calls))
	for i := range ds {
		ds[i] = make([]time.Duration, 0, n)
	}
	for round := 0; round < n+warmup; round++ {
		for i, f := range calls {
			t0 := time.Now()
			if err := f(ctx); err != nil {
				return nil, err
			}
			if round >= warmup {
				ds[i] = append(ds[i], time.Since(t0))
			}
		}
	}
	out := make([]dist, len(calls))
	for i := range ds {
		out[i] = summarize(ds[i])
	}
	return out, nil
}

// concurrent runs f from workers goroutines for d and returns the latency
// distribution and the throughput.
func concurrent(ctx context.Context, workers int, d time.Duration, f call) (dist, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				err := f(context.Background())
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return summarize(all), float64(len(all)) / elapsed.Seconds(), firstErr
}

// probeDuring times one probe call every interval while load runs.
func probeDuring(ctx context.Context, interval time.Duration, f call) func() (dist, error) {
	ctx, cancel := context.WithCancel(ctx)
	var ds []time.Duration
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			t0 := time.Now()
			if e := f(context.Background()); e != nil && err == nil {
				err = e
			}
			ds = append(ds, time.Since(t0))
		}
	}()
	return func() (dist, error) {
		cancel()
		<-done
		return summarize(ds), err
	}
}

func measureServing(ctx context.Context, s *vigilServer, o options, r *report, ipc ipcFigures) error {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	inf := inferencepb.NewGRPCInferenceServiceClient(conn)
	hp := healthpb.NewHealthClient(conn)

	fl, err := startFloorServer(ctx)
	if err != nil {
		return err
	}
	defer fl.stop()
	floorURL := fl.http

	live, err := interleaved(ctx, o.samples, httpCall(hc, "GET", s.http+"/v2/health/live", nil),
		httpCall(hc, "GET", floorURL+"/v2/health/live", nil))
	if err != nil {
		return err
	}
	r.add("HTTP GET /v2/health/live, idle (baseline)", live[0], "")
	r.add("HTTP GET, floor server, idle", live[1], fmt.Sprintf("vigil's live is %.2f× this", float64(live[0].p50)/float64(live[1].p50)))

	httpInfer := httpCall(hc, "POST", s.http+"/v2/models/add_sub/infer", addSubJSON)
	grpcReq := addSubGRPC()
	grpcInfer := func(ctx context.Context) error {
		_, err := inf.ModelInfer(ctx, grpcReq)
		return err
	}
	check := func(ctx context.Context) error {
		resp, err := hp.Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("readiness %s", resp.GetStatus())
		}
		return err
	}

	for _, proto := range []struct {
		name  string
		infer call
	}{{"HTTP", httpInfer}, {"gRPC", grpcInfer}} {
		// The IPC execute and the floor server's round trip are timed in
		// the same rounds: their sum is the least an infer can take here.
		c1s, err := interleaved(ctx, o.samples, proto.infer, httpCall(hc, "POST", floorURL+"/v2/models/add_sub/infer", addSubJSON), ipc.execute)
		if err != nil {
			return fmt.Errorf("%s infer: %w", proto.name, err)
		}
		c1, floorPost, exec := c1s[0], c1s[1], c1s[2]
		floor := floorPost.p50 + exec.p50
		over := c1.p50 - ipc.ping.p50
		r.add(proto.name+" infer add_sub, concurrency 1", c1, fmt.Sprintf("+%s over ipc ping: %s; %.2f× floor (+%s)",
			us(over), target(over <= 100*time.Microsecond, "≤ +100µs"), float64(c1.p50)/float64(floor), us(c1.p50-floor)))
		r.add("  floor: POST of the body to the floor server", floorPost, "")
		r.add("  floor: ipc execute add_sub, same rounds", exec, fmt.Sprintf("floor = %s + %s = %s, +%s over ipc ping",
			us(floorPost.p50), us(exec.p50), us(floor), us(floor-ipc.ping.p50)))

		ready, err := externalProbe(ctx, s.http+"/v2/health/ready", 5*time.Millisecond)
		if err != nil {
			return err
		}
		floorProbe, err := externalProbe(ctx, floorURL+"/v2/health/ready", 5*time.Millisecond)
		if err != nil {
			return err
		}
		hcheck := probeDuring(ctx, 5*time.Millisecond, check)
		c8, rps, err := concurrent(ctx, 8, o.duration, proto.infer)
		readyD, rerr := ready()
		floorD, ferr := floorProbe()
		checkD, cerr := hcheck()
		if err != nil {
			return fmt.Errorf("%s infer under load: %w", proto.name, err)
		}
		if err := errors.Join(rerr, ferr, cerr); err != nil {
			return fmt.Errorf("probe under load failed: %w", err)
		}
		r.add(proto.name+" infer add_sub, concurrency 8", c8, fmt.Sprintf("%.0f infer/s", rps))
		r.add("  GET /v2/health/ready during "+proto.name+" load (own process)", readyD,
			fmt.Sprintf("%.2f× floor p99; %s", float64(readyD.p99)/float64(floorD.p99), target(readyD.p99 <= 2*time.Millisecond, "p99 ≤ 2ms")))
		r.add("  GET on the floor server during "+proto.name+" load", floorD, "")
		r.add("  gRPC Health/Check readiness during "+proto.name+" load", checkD, "")
	}
	return nil
}
