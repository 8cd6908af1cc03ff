package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
	stubpy "github.com/vigilhq/vigil/python"
)

type ipcFigures struct{ ping, exec dist }

// measureIPC talks to one add_sub stub directly, with no server between.
func measureIPC(ctx context.Context, python string, n int) (ipcFigures, error) {
	dir, err := os.MkdirTemp("", "vigil-bench-stub-")
	if err != nil {
		return ipcFigures{}, err
	}
	defer os.RemoveAll(dir)
	pp, err := stubpy.Install(dir)
	if err != nil {
		return ipcFigures{}, err
	}
	stub, err := instance.StartStub(instance.Runtime{Python: python, PythonPath: pp, Args: stubpy.Args()}, discardLogger())
	if err != nil {
		return ipcFigures{}, err
	}
	defer stub.Close()
	c := stub.Client()
	modelDir, _ := filepath.Abs("examples/models/add_sub")
	cfg := `{"name":"add_sub","output":[{"name":"OUTPUT0","data_type":"TYPE_FP32"},{"name":"OUTPUT1","data_type":"TYPE_FP32"}]}`
	if _, err := c.Init(ctx, ipc.InitArgs{ModelFile: filepath.Join(modelDir, "1", "model.py"), ModelName: "add_sub",
		ModelVersion: "1", ModelRepository: modelDir, InstanceName: "bench", InstanceKind: "CPU", ModelConfigJSON: cfg}); err != nil {
		return ipcFigures{}, fmt.Errorf("initialize add_sub: %w", err)
	}
	var f ipcFigures
	pings := make([]time.Duration, 0, n)
	for i := 0; i < n+200; i++ {
		t0 := time.Now()
		if err := c.Ping(ctx); err != nil {
			return f, err
		}
		if i >= 200 { // warm-up
			pings = append(pings, time.Since(t0))
		}
	}
	f.ping = summarize(pings)
	req := &inference.Request{Model: "add_sub", Version: "1", Inputs: []tensor.Tensor{
		fp32("INPUT0", 1), fp32("INPUT1", 2)}}
	execs := make([]time.Duration, 0, n)
	for i := 0; i < n+200; i++ {
		t0 := time.Now()
		if _, err := c.Execute(ctx, []*inference.Request{req}); err != nil {
			return f, err
		}
		if i >= 200 {
			execs = append(execs, time.Since(t0))
		}
	}
	f.exec = summarize(execs)
	return f, nil
}

// fp32 is an FP32 [1,16] tensor filled with v.
func fp32(name string, v float32) tensor.Tensor {
	b := make([]byte, 64)
	for i := 0; i < 16; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return tensor.Tensor{Name: name, Datatype: tensor.FP32, Shape: []int64{1, 16}, Data: b}
}
