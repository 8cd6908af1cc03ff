package main

import (
	"bytes"
	"context"
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

// sequential times n calls one after another.
func sequential(ctx context.Context, n int, f call) (dist, error) {
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n+100; i++ {
		t0 := time.Now()
		if err := f(ctx); err != nil {
			return dist{}, err
		}
		if i >= 100 {
			ds = append(ds, time.Since(t0))
		}
	}
	return summarize(ds), nil
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

func measureServing(ctx context.Context, s *vigilServer, o options, r *report, ipcPing dist) error {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	inf := inferencepb.NewGRPCInferenceServiceClient(conn)
	hp := healthpb.NewHealthClient(conn)

	live, err := sequential(ctx, o.samples, httpCall(hc, "GET", s.http+"/v2/health/live", nil))
	if err != nil {
		return err
	}
	r.add("HTTP GET /v2/health/live, idle (baseline)", live, "")

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
		c1, err := sequential(ctx, o.samples, proto.infer)
		if err != nil {
			return fmt.Errorf("%s infer: %w", proto.name, err)
		}
		over := c1.p50 - ipcPing.p50
		r.add(proto.name+" infer add_sub, concurrency 1", c1,
			fmt.Sprintf("%.2f× ipc ping; +%s over it: %s", float64(c1.p50)/float64(ipcPing.p50), us(over),
				target(over <= 100*time.Microsecond, "≤ +100µs")))

		ready, err := externalProbe(ctx, s.http+"/v2/health/ready", 5*time.Millisecond)
		if err != nil {
			return err
		}
		hcheck := probeDuring(ctx, 5*time.Millisecond, check)
		c8, rps, err := concurrent(ctx, 8, o.duration, proto.infer)
		readyD, rerr := ready()
		checkD, cerr := hcheck()
		if err != nil {
			return fmt.Errorf("%s infer under load: %w", proto.name, err)
		}
		if rerr != nil || cerr != nil {
			return fmt.Errorf("probe under load failed: %v %v", rerr, cerr)
		}
		r.add(proto.name+" infer add_sub, concurrency 8", c8, fmt.Sprintf("%.0f infer/s", rps))
		r.add("  GET /v2/health/ready during "+proto.name+" load (own process)", readyD,
			fmt.Sprintf("%.2f× idle live; %s", float64(readyD.p99)/float64(live.p99), target(readyD.p99 <= 2*time.Millisecond, "p99 ≤ 2ms")))
		r.add("  gRPC Health/Check readiness during "+proto.name+" load", checkD, "")
	}
	return nil
}
