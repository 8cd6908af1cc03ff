package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
	stubpy "github.com/vigilhq/vigil/python"
)

// streamResponses is how many responses each streamed request asks for.
const streamResponses = 100

// streamTiming is one streamed request: when it was sent, and when each
// response arrived.
type streamTiming struct {
	sent     time.Time
	arrivals []time.Time
}

// add folds one request's timings into the time to its first response
// and its mean time between responses ((last − first) / (n − 1)): the
// client reads responses in bursts, so single gaps say more about the
// reader than about the stream.
func (st streamTiming) add(first, gaps *[]time.Duration) {
	if len(st.arrivals) == 0 {
		return
	}
	*first = append(*first, st.arrivals[0].Sub(st.sent))
	if n := len(st.arrivals); n > 1 {
		*gaps = append(*gaps, st.arrivals[n-1].Sub(st.arrivals[0])/time.Duration(n-1))
	}
}

func squareRequest(id string, n int32) *inferencepb.ModelInferRequest {
	return &inferencepb.ModelInferRequest{ModelName: "square_int32", Id: id,
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "IN", Datatype: "INT32", Shape: []int64{1},
			Contents: &inferencepb.InferTensorContents{IntContents: []int32{n}}}},
		Parameters: map[string]*inferencepb.InferParameter{"triton_enable_empty_final_response": {
			ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}}}}
}

// grpcStreamOnce sends one square_int32 request for n responses on an open
// stream and times its responses until the empty final one.
func grpcStreamOnce(st inferencepb.GRPCInferenceService_ModelStreamInferClient, id string, n int32) (streamTiming, error) {
	t := streamTiming{sent: time.Now(), arrivals: make([]time.Time, 0, n)}
	if err := st.Send(squareRequest(id, n)); err != nil {
		return t, err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return t, err
		}
		now := time.Now()
		if m.GetErrorMessage() != "" {
			return t, fmt.Errorf("stream error: %s", m.GetErrorMessage())
		}
		r := m.GetInferResponse()
		if len(r.GetOutputs()) > 0 {
			t.arrivals = append(t.arrivals, now)
		}
		if r.GetParameters()["triton_final_response"].GetBoolParam() {
			if len(t.arrivals) != int(n) {
				return t, fmt.Errorf("got %d responses, want %d", len(t.arrivals), n)
			}
			return t, nil
		}
	}
}

// sseOnce posts one generate_stream request for n responses and times each
// event.
func sseOnce(ctx context.Context, c *http.Client, url string, n int32) (streamTiming, error) {
	body := []byte(fmt.Sprintf(`{"IN":%d}`, n))
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return streamTiming{}, err
	}
	t := streamTiming{sent: time.Now(), arrivals: make([]time.Time, 0, n)}
	resp, err := c.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return t, fmt.Errorf("generate_stream: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			if strings.Contains(sc.Text(), `"error"`) {
				return t, fmt.Errorf("generate_stream error event: %s", sc.Text())
			}
			t.arrivals = append(t.arrivals, time.Now())
		}
	}
	if err := sc.Err(); err != nil {
		return t, err
	}
	if len(t.arrivals) != int(n) {
		return t, fmt.Errorf("got %d events, want %d", len(t.arrivals), n)
	}
	return t, nil
}

// measureStreaming times a decoupled model (square_int32) sending 100
// small responses per request: the time to the first response and between
// responses over gRPC ModelStreamInfer and over SSE (generate_stream), with
// the IPC ping timed in the same rounds as the baseline; then the
// responses per second of 8 concurrent gRPC streams.
func measureStreaming(ctx context.Context, s *vigilServer, o options, r *report, python string) error {
	direct, err := startDirectStream(ctx, python)
	if err != nil {
		return fmt.Errorf("square_int32 stub: %w", err)
	}
	defer direct.close()
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	inf := inferencepb.NewGRPCInferenceServiceClient(conn)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := inf.ModelStreamInfer(sctx)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	sseURL := s.http + "/v2/models/square_int32/generate_stream"

	rounds := max(o.samples/100, 10)
	const warmup = 3
	var gFirst, gGaps, hFirst, hGaps, iFirst, iGaps, ping []time.Duration
	for round := 0; round < rounds+warmup; round++ {
		d, err := direct.once(ctx, streamResponses)
		if err != nil {
			return fmt.Errorf("ipc stream: %w", err)
		}
		g, err := grpcStreamOnce(st, fmt.Sprint(round), streamResponses)
		if err != nil {
			return fmt.Errorf("grpc stream: %w", err)
		}
		h, err := sseOnce(ctx, hc, sseURL, streamResponses)
		if err != nil {
			return fmt.Errorf("sse: %w", err)
		}
		t0 := time.Now()
		if err := direct.client.Ping(ctx); err != nil {
			return err
		}
		if round < warmup {
			continue
		}
		ping = append(ping, time.Since(t0))
		d.add(&iFirst, &iGaps)
		g.add(&gFirst, &gGaps)
		h.add(&hFirst, &hGaps)
	}
	base := summarize(ping)
	i1, g1, h1 := summarize(iFirst), summarize(gFirst), summarize(hFirst)
	ig, gg, hg := summarize(iGaps), summarize(gGaps), summarize(hGaps)
	over := func(d, floor dist) string {
		return fmt.Sprintf("%s; +%s over the ipc stream", ratio(d.p50, base.p50), us(d.p50-floor.p50))
	}
	r.add("ipc ping, in the streaming rounds (baseline)", base, "")
	r.add("ipc stream, no server: first of 100 responses", i1, ratio(i1.p50, base.p50))
	r.add("gRPC ModelStreamInfer: first of 100 responses", g1, over(g1, i1))
	r.add("SSE generate_stream: first of 100 responses", h1, over(h1, i1))
	r.add("ipc stream, no server: mean time between responses", ig, "")
	r.add("gRPC ModelStreamInfer: mean time between responses", gg, fmt.Sprintf("%.2f× the ipc stream", float64(gg.p50)/float64(max(ig.p50, 1))))
	r.add("SSE generate_stream: mean time between responses", hg, fmt.Sprintf("%.2f× the ipc stream", float64(hg.p50)/float64(max(ig.p50, 1))))
	_ = st.CloseSend()

	// Throughput: 8 streams, each sending 100-response requests one after
	// another for o.duration.
	const streams = 8
	tctx, stop := context.WithTimeout(ctx, o.duration)
	defer stop()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	start := time.Now()
	for w := 0; w < streams; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := inf.ModelStreamInfer(sctx)
			if err != nil {
				errs <- err
				return
			}
			defer func() { _ = st.CloseSend() }()
			for i := 0; tctx.Err() == nil; i++ {
				t, err := grpcStreamOnce(st, fmt.Sprintf("%d-%d", w, i), streamResponses)
				if err != nil {
					errs <- err
					return
				}
				total.Add(int64(len(t.arrivals)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("stream throughput: %w", err)
	}
	rate := float64(total.Load()) / elapsed.Seconds()
	r.add(fmt.Sprintf("gRPC stream throughput, %d streams", streams), dist{n: int(total.Load())},
		fmt.Sprintf("%.0f responses/s (%.1f µs per response)", rate, 1e6/rate))
	return nil
}

// directStream is a square_int32 stub driven over the IPC with no server
// between: the least a streamed response can cost on this machine.
type directStream struct {
	client *ipc.Client
	close  func()
}

func startDirectStream(ctx context.Context, python string) (_ *directStream, err error) {
	dir, err := os.MkdirTemp("", "vigil-bench-stream-")
	if err != nil {
		return nil, err
	}
	pp, err := stubpy.Install(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stub, err := instance.StartStub(instance.Runtime{Python: python, PythonPath: pp, Args: stubpy.Args(0)}, discardLogger())
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d := &directStream{client: stub.Client(), close: func() {
		stub.Close()
		os.RemoveAll(dir)
	}}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	modelDir, _ := filepath.Abs("examples/models/square_int32")
	cfg := `{"name":"square_int32","model_transaction_policy":{"decoupled":true},` +
		`"input":[{"name":"IN","data_type":"TYPE_INT32","dims":[1]}],"output":[{"name":"OUT","data_type":"TYPE_INT32","dims":[1]}]}`
	if _, err := d.client.Init(ctx, ipc.InitArgs{ModelFile: filepath.Join(modelDir, "1", "model.py"), ModelName: "square_int32",
		ModelVersion: "1", ModelRepository: modelDir, InstanceName: "bench", InstanceKind: "CPU", ModelConfigJSON: cfg}); err != nil {
		return d, fmt.Errorf("initialize square_int32: %w", err)
	}
	return d, nil
}

// arrivals is a Sink that records when each response arrives.
type arrivals struct {
	times []time.Time
	done  chan error
}

func (a *arrivals) Response(_ int, r ipc.Result, final bool) {
	if r.Response != nil {
		a.times = append(a.times, time.Now())
	}
	if final {
		a.done <- r.Err
	}
}

// once runs one request for n responses and times them.
func (d *directStream) once(ctx context.Context, n int32) (streamTiming, error) {
	data := binary.LittleEndian.AppendUint32(nil, uint32(n))
	req := &inference.Request{Model: "square_int32", Inputs: []tensor.Tensor{{Name: "IN", Datatype: tensor.Int32, Shape: []int64{1}, Data: data}}}
	a := &arrivals{times: make([]time.Time, 0, n), done: make(chan error, 1)}
	b, err := d.client.NewBatch([]*inference.Request{req}, a)
	if err != nil {
		return streamTiming{}, err
	}
	t := streamTiming{sent: time.Now()}
	if _, err := b.Execute(ctx); err != nil {
		return t, err
	}
	select {
	case err := <-a.done:
		if err != nil {
			return t, err
		}
	case <-ctx.Done():
		return t, ctx.Err()
	}
	t.arrivals = a.times
	if len(t.arrivals) != int(n) {
		return t, fmt.Errorf("got %d responses, want %d", len(t.arrivals), n)
	}
	return t, nil
}
