package ipc_test

import (
	"context"
	"testing"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
)

// BenchmarkPing is the empty round trip: the floor every other call pays.
func BenchmarkPing(b *testing.B) {
	s, _ := startModel(b, "addsub")
	ctx := context.Background()
	for b.Loop() {
		if err := s.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecuteAddSub is Triton's add_sub example: two FP32[16] inputs,
// two FP32[16] outputs, one request per batch.
func BenchmarkExecuteAddSub(b *testing.B) {
	s, _ := startModel(b, "addsub")
	ctx := context.Background()
	reqs := []*inference.Request{addSubRequest("bench")}
	executeLoop(b, ctx, s, reqs)
}

// BenchmarkExecuteAddSub1MiB is add_sub on FP32[262144] inputs (1 MiB
// each), to show that tensor bytes travel without per-element work.
func BenchmarkExecuteAddSub1MiB(b *testing.B) {
	s, _ := startModel(b, "addsub")
	ctx := context.Background()
	vals := make([]float32, 1<<18)
	for i := range vals {
		vals[i] = float32(i)
	}
	reqs := []*inference.Request{{Inputs: []tensor.Tensor{fp32("INPUT0", vals...), fp32("INPUT1", vals...)}}}
	b.SetBytes(4 << 20) // 2 MiB in, 2 MiB out
	executeLoop(b, ctx, s, reqs)
}

// BenchmarkExecuteWithLogAndMetric is one execute that writes a
// pb_utils.Logger record and does Metric.increment and Metric.value (two
// METRIC round trips on the control socket) around a one-element request:
// compare it with BenchmarkPing and BenchmarkExecuteAddSub to see what the
// model's calls to the server cost.
func BenchmarkExecuteWithLogAndMetric(b *testing.B) {
	s := startStub(b, "server_calls", stubOptions{calls: &fakeLogMetric{values: map[uint64]float64{}}})
	ctx := context.Background()
	if _, err := s.Init(ctx, s.initArgs("server_calls")); err != nil {
		b.Fatal(err)
	}
	reqs := []*inference.Request{{Inputs: []tensor.Tensor{fp32("INPUT0", 1)}}}
	executeLoop(b, ctx, s, reqs)
}

// echoCalls answers every BLS call at once with its first input as OUT, on
// a goroutine of its own as the server's handler does.
type echoCalls struct{}

func (echoCalls) Infer(c *ipc.Call) {
	go func() {
		out := c.Request.Inputs[0]
		out.Name = "OUT"
		c.Respond(&inference.Response{Outputs: []tensor.Tensor{out}}, nil, true)
	}()
}
func (echoCalls) Control(c *ipc.ControlCall) { c.Respond(false, nil) }

// BenchmarkExecuteBLSCall is one execute that makes one BLS call, answered
// at once by the handler: against BenchmarkExecuteAddSub it is what the
// stub and the connection add to a call between models.
func BenchmarkExecuteBLSCall(b *testing.B) {
	s := startStub(b, "caller", stubOptions{})
	s.SetHandler(echoCalls{})
	if _, err := s.Init(context.Background(), s.initArgs("caller")); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	reqs := []*inference.Request{{Model: "caller", Version: "1", ID: "bench", Inputs: []tensor.Tensor{fp32("INPUT0", make([]float32, 16)...)}}}
	executeLoop(b, ctx, s, reqs)
}

// BenchmarkIdentity16MiB sends a 16 MiB FP32 tensor to a model that returns
// it as it is, through the socket and out of band (memory files).
func BenchmarkIdentity16MiB(b *testing.B) {
	vals := make([]float32, 4<<20)
	for i := range vals {
		vals[i] = float32(i)
	}
	for _, mode := range []struct {
		name      string
		threshold int
	}{{"socket", 0}, {"shm", ipc.DefaultShmThreshold}} {
		b.Run(mode.name, func(b *testing.B) {
			s := startStub(b, "large", stubOptions{})
			s.SetShmThreshold(mode.threshold)
			if _, err := s.Init(context.Background(), s.initArgs("large")); err != nil {
				b.Fatal(err)
			}
			reqs := []*inference.Request{{Parameters: map[string]any{"view": true}, Inputs: []tensor.Tensor{fp32("X", vals...)}}}
			b.SetBytes(16 << 20)
			for b.Loop() {
				results, err := s.Execute(context.Background(), reqs)
				if err != nil {
					b.Fatal(err)
				}
				if results[0].Err != nil {
					b.Fatal(results[0].Err)
				}
			}
		})
	}
}

// executeLoop runs reqs on s for every iteration of b, failing on any error.
func executeLoop(b *testing.B, ctx context.Context, s *stub, reqs []*inference.Request) {
	b.Helper()
	for b.Loop() {
		results, err := s.Execute(ctx, reqs)
		if err != nil {
			b.Fatal(err)
		}
		if results[0].Err != nil {
			b.Fatal(results[0].Err)
		}
	}
}
