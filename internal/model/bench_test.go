package model

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"testing"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/tensor"
	stubpy "github.com/vigilhq/vigil/python"
	"github.com/vigilhq/vigil/python/pythontest"
)

// BenchmarkManagerInfer is the request path without a front end: request
// validation, the queue, the instance worker and the stub. Compared with
// internal/ipc's BenchmarkExecuteAddSub (the stub alone) it prices the
// scheduler and the instance; the bench command prices HTTP and gRPC.
func BenchmarkManagerInfer(b *testing.B) {
	exe, pp := pythontest.Runtime(b)
	eng := health.NewEngine(health.EngineConfig{Strict: true, WatchdogInterval: -1})
	ctx := context.Background()
	m := New(Config{RepoDir: "../../examples/models", Mode: ModeExplicit, Defaults: health.DefaultPolicy(),
		Runtime: instance.Runtime{Python: exe, PythonPath: pp, Args: stubpy.Args(0)},
		Events:  eng, Health: eng, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	eng.SetActuator(m)
	eng.Start(ctx)
	defer eng.Close()
	if err := m.Load(ctx, "add_sub", nil); err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)
	mk := func() *inference.Request {
		d := make([]byte, 64)
		for i := 0; i < 16; i++ {
			binary.LittleEndian.PutUint32(d[4*i:], math.Float32bits(1.5))
		}
		return &inference.Request{Model: "add_sub", Inputs: []tensor.Tensor{
			{Name: "INPUT0", Datatype: tensor.FP32, Shape: []int64{1, 16}, Data: d},
			{Name: "INPUT1", Datatype: tensor.FP32, Shape: []int64{1, 16}, Data: d}}}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Infer(ctx, mk()); err != nil {
			b.Fatal(err)
		}
	}
}
