package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// The sequence figures: 16 clients, each running sequences of 8 requests
// back to back (START, 6 more, END), against the same Python model served
// three ways: sequence_batching direct, sequence_batching oldest, and
// without sequences (dynamic batching, the same requests without their
// sequence parameters). Two instances each, max_batch_size 8, no queue
// delay: the only difference is the scheduler.
const (
	benchSequences    = 16
	benchSequenceLen  = 8
	benchSequenceRuns = 3 // rounds, interleaving the three configurations
)

const benchSequenceModel = `import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            s = pb_utils.get_input_tensor_by_name(r, "START")
            if s is not None:
                x = x + s.as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x.astype(np.int32))]))
        return out
`

const benchSequenceIO = `backend: "python"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
`

const benchStartControl = `control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ]`

var benchSequenceConfigs = map[string]string{
	"seq_direct": benchSequenceIO + "sequence_batching { direct { } " + benchStartControl + " }\n",
	"seq_oldest": benchSequenceIO + "sequence_batching { oldest { max_candidate_sequences: 8 } " + benchStartControl + " }\n",
	"seq_plain":  benchSequenceIO + "dynamic_batching { }\n",
}

// addSequenceModels writes the three sequence benchmark models into repo.
func addSequenceModels(repo string) error {
	for name, cfg := range benchSequenceConfigs {
		dir := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "config.pbtxt"), []byte(cfg), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "1", "model.py"), []byte(benchSequenceModel), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// measureSequences reports the three configurations' latency and
// throughput, each sequence configuration as a ratio to the one without
// sequences, measured in interleaved rounds of the same run.
func measureSequences(ctx context.Context, s *vigilServer, o options, r *report) error {
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	inf := inferencepb.NewGRPCInferenceServiceClient(conn)
	runs := []struct {
		label, model string
		sequences    bool
	}{
		{"no sequences (dynamic batching, baseline)", "seq_plain", false},
		{"sequence_batching direct", "seq_direct", true},
		{"sequence_batching oldest", "seq_oldest", true},
	}
	lat := make([][]time.Duration, len(runs))
	counts := make([]int, len(runs))
	elapsed := make([]time.Duration, len(runs))
	var ids atomic.Int64
	per := max(o.duration/benchSequenceRuns, time.Second)
	for range benchSequenceRuns {
		for k, run := range runs {
			t0 := time.Now()
			ds, err := sequenceLoad(ctx, inf, run.model, run.sequences, per, &ids)
			if err != nil {
				return fmt.Errorf("%s: %w", run.label, err)
			}
			elapsed[k] += time.Since(t0)
			lat[k] = append(lat[k], ds...)
			counts[k] += len(ds)
		}
	}
	base := float64(counts[0]) / elapsed[0].Seconds()
	for k, run := range runs {
		rps := float64(counts[k]) / elapsed[k].Seconds()
		extra := fmt.Sprintf("%.0f infer/s", rps)
		if k > 0 {
			extra += fmt.Sprintf(", %.2f× the throughput without sequences", rps/base)
		}
		r.add(fmt.Sprintf("gRPC %d×%d-request sequences, %s", benchSequences, benchSequenceLen, run.label), summarize(lat[k]), extra)
	}
	return nil
}

// sequenceLoad runs benchSequences clients for about d. Each client sends
// whole sequences, one request at a time, and stops only between
// sequences, so that no sequence is left open for the next run. Without
// sequences the same requests go without their sequence parameters.
func sequenceLoad(ctx context.Context, inf inferencepb.GRPCInferenceServiceClient, model string, sequences bool, d time.Duration, ids *atomic.Int64) ([]time.Duration, error) {
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for range benchSequences {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
			for time.Now().Before(deadline) {
				id := ids.Add(1)
				for step := range benchSequenceLen {
					req := sequenceRequest(model, int32(step))
					if sequences {
						req.Parameters = map[string]*inferencepb.InferParameter{
							"sequence_id":    {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: id}},
							"sequence_start": {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: step == 0}},
							"sequence_end":   {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: step == benchSequenceLen-1}},
						}
					}
					t0 := time.Now()
					resp, err := inf.ModelInfer(ctx, req)
					if err == nil {
						err = checkSequenceOutput(resp, int32(step), sequences && step == 0)
					}
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
			}
		}()
	}
	wg.Wait()
	return all, firstErr
}

func sequenceRequest(model string, v int32) *inferencepb.ModelInferRequest {
	return &inferencepb.ModelInferRequest{ModelName: model,
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "INPUT", Datatype: "INT32", Shape: []int64{1, 1},
			Contents: &inferencepb.InferTensorContents{IntContents: []int32{v}}}}}
}

// checkSequenceOutput holds the answer to the model's arithmetic: INPUT,
// plus 1 on a START.
func checkSequenceOutput(resp *inferencepb.ModelInferResponse, v int32, start bool) error {
	want := v
	if start {
		want++
	}
	raw := resp.GetRawOutputContents()
	if len(raw) != 1 || len(raw[0]) != 4 {
		return fmt.Errorf("unexpected output %v", raw)
	}
	got := int32(uint32(raw[0][0]) | uint32(raw[0][1])<<8 | uint32(raw[0][2])<<16 | uint32(raw[0][3])<<24)
	if got != want {
		return fmt.Errorf("OUTPUT = %d, want %d", got, want)
	}
	return nil
}
