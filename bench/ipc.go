package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/instance"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/tensor"
	stubpy "github.com/vigilhq/vigil/python"
)

// ipcFigures are the stub's own figures, and a stub kept running so that
// later measurements can time its execute in their own rounds.
type ipcFigures struct {
	ping, exec dist
	execute    call
	pingCall   call
	close      func()
}

// measureIPC talks to one add_sub stub directly, with no server between.
func measureIPC(ctx context.Context, python string, n int) (_ ipcFigures, err error) {
	dir, err := os.MkdirTemp("", "vigil-bench-stub-")
	if err != nil {
		return ipcFigures{}, err
	}
	pp, err := stubpy.Install(dir)
	if err != nil {
		os.RemoveAll(dir)
		return ipcFigures{}, err
	}
	stub, err := instance.StartStub(instance.Runtime{Python: python, PythonPath: pp, Args: stubpy.Args(0)}, discardLogger())
	if err != nil {
		os.RemoveAll(dir)
		return ipcFigures{}, err
	}
	f := ipcFigures{close: func() {
		stub.Close()
		os.RemoveAll(dir)
	}}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	c := stub.Client()
	modelDir, _ := filepath.Abs("examples/models/add_sub")
	cfg := `{"name":"add_sub","output":[{"name":"OUTPUT0","data_type":"TYPE_FP32"},{"name":"OUTPUT1","data_type":"TYPE_FP32"}]}`
	if _, err := c.Init(ctx, ipc.InitArgs{ModelFile: filepath.Join(modelDir, "1", "model.py"), ModelName: "add_sub",
		ModelVersion: "1", ModelRepository: modelDir, InstanceName: "bench", InstanceKind: "CPU", ModelConfigJSON: cfg}); err != nil {
		return f, fmt.Errorf("initialize add_sub: %w", err)
	}
	req := &inference.Request{Model: "add_sub", Version: "1", Inputs: []tensor.Tensor{
		fp32("INPUT0", 1), fp32("INPUT1", 2)}}
	f.execute = func(ctx context.Context) error {
		_, err := c.Execute(ctx, []*inference.Request{req})
		return err
	}
	f.pingCall = c.Ping
	ds, err := interleaved(ctx, n, c.Ping, f.execute)
	if err != nil {
		return f, err
	}
	f.ping, f.exec = ds[0], ds[1]
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
