package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// transferBytes is the tensor of the large-tensor figures: 16 MiB of FP32
// through the identity example, in and back out.
const (
	transferBytes  = 16 << 20
	transferFloats = transferBytes / 4
)

// measureTransfer times the 16 MiB FP32 identity round trip three ways in
// one interleaved run — HTTP with the binary tensor extension, gRPC with
// raw contents, and system shared memory (the input read from a region and
// the output written to one, registered over HTTP) — and reports each as
// GB/s of tensor data moved (input plus output bytes per round trip), with
// the CPU time the server and its stubs spent per round trip (/proc). With
// a baseline server (base non-nil) both servers take every call in the
// same rounds, in alternating order, and the baseline's rows say how the
// server compares. Each figure times rounds round trips (after two untimed
// ones). Each call checks the bytes it got back.
func measureTransfer(ctx context.Context, srv, base *vigilServer, rounds int, r *report) error {
	if rounds < 1 {
		return fmt.Errorf("-transfer-calls %d: at least 1", rounds)
	}
	input := make([]byte, transferBytes)
	for i := range transferFloats {
		binary.LittleEndian.PutUint32(input[4*i:], math.Float32bits(float32(i%1000)*0.5))
	}
	type target struct {
		name  string
		srv   *vigilServer
		calls []call
		ds    [][]time.Duration
		cpu   []time.Duration
	}
	targets := []*target{{name: "vigil", srv: srv}}
	if base != nil {
		targets = append(targets, &target{name: "vigil-base", srv: base})
	}
	for i, t := range targets {
		calls, closeCalls, err := transferCalls(t.srv, input, strconv.Itoa(i))
		if err != nil {
			return err
		}
		defer closeCalls()
		t.calls, t.ds, t.cpu = calls, make([][]time.Duration, len(calls)), make([]time.Duration, len(calls))
	}

	const warmup = 2
	for round := range rounds + warmup {
		for k := range targets {
			// Alternate which server goes first (the second reads faster).
			t := targets[(k+round)%len(targets)]
			for i, f := range t.calls {
				c0, _ := treeCPU(t.srv.cmd.Process.Pid)
				t0 := time.Now()
				if err := f(ctx); err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				d := time.Since(t0)
				c1, _ := treeCPU(t.srv.cmd.Process.Pid)
				if round >= warmup {
					t.ds[i] = append(t.ds[i], d)
					t.cpu[i] += c1 - c0
				}
			}
		}
	}
	names := []string{"16 MiB FP32 identity, HTTP binary", "16 MiB FP32 identity, gRPC raw", "16 MiB FP32 identity, system shared memory"}
	for _, t := range targets {
		base := summarize(t.ds[0]).p50
		for i, name := range names {
			d := summarize(t.ds[i])
			extra := fmt.Sprintf("%.2f GB/s (in+out at p50), CPU %s per call", gbps(d.p50), us(t.cpu[i]/time.Duration(rounds)))
			if i > 0 {
				extra += fmt.Sprintf(", %.2f× HTTP binary's", gbps(d.p50)/gbps(base))
			}
			if t != targets[0] {
				v := summarize(targets[0].ds[i]).p50
				extra += fmt.Sprintf("; vigil %.2f× this, CPU %.2f×", gbps(v)/gbps(d.p50),
					float64(targets[0].cpu[i])/float64(max(t.cpu[i], 1)))
				name = t.name + ": " + name
			}
			r.add(name, d, extra)
		}
	}
	return nil
}

// transferCalls returns the HTTP binary, gRPC and shared memory calls of
// the transfer figures against srv, and what closes their connection and
// regions; tag keeps two servers' regions apart.
func transferCalls(srv *vigilServer, input []byte, tag string) ([]call, func(), error) {
	client := &http.Client{Timeout: time.Minute}

	httpBody, headerLen := transferHTTPBody(input)
	httpCall := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.http+"/v2/models/identity/infer", bytes.NewReader(httpBody))
		if err != nil {
			return err
		}
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(headerLen))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("HTTP binary infer: %s: %s", resp.Status, truncateBody(body))
		}
		n, err := strconv.Atoi(resp.Header.Get("Inference-Header-Content-Length"))
		if err != nil || n > len(body) {
			return fmt.Errorf("HTTP binary infer: bad Inference-Header-Content-Length %q", resp.Header.Get("Inference-Header-Content-Length"))
		}
		return sameTensor("HTTP binary", body[n:], input)
	}

	conn, err := dialInference(srv.grpc)
	if err != nil {
		return nil, nil, err
	}
	gc := inferencepb.NewGRPCInferenceServiceClient(conn)
	grpcReq := &inferencepb.ModelInferRequest{ModelName: "identity",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "INPUT_FP32", Datatype: "FP32", Shape: []int64{transferFloats}}},
		Outputs:          []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "OUTPUT_FP32"}},
		RawInputContents: [][]byte{input}}
	grpcCall := func(ctx context.Context) error {
		resp, err := gc.ModelInfer(ctx, grpcReq)
		if err != nil {
			return fmt.Errorf("gRPC infer: %w", err)
		}
		if len(resp.GetRawOutputContents()) != 1 {
			return fmt.Errorf("gRPC infer: %d raw outputs", len(resp.GetRawOutputContents()))
		}
		return sameTensor("gRPC", resp.GetRawOutputContents()[0], input)
	}

	shm, err := newTransferRegions(client, srv.http, tag)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	shmBody := []byte(`{"inputs":[{"name":"INPUT_FP32","datatype":"FP32","shape":[` + strconv.Itoa(transferFloats) +
		`],"parameters":{"shared_memory_region":"bench_in","shared_memory_byte_size":` + strconv.Itoa(transferBytes) +
		`}}],"outputs":[{"name":"OUTPUT_FP32","parameters":{"shared_memory_region":"bench_out","shared_memory_byte_size":` +
		strconv.Itoa(transferBytes) + `}}]}`)
	shmCall := func(ctx context.Context) error {
		copy(shm.in, input) // the client puts its tensor in the region
		clear(shm.out[:64])
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.http+"/v2/models/identity/infer", bytes.NewReader(shmBody))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("shared memory infer: %s: %s", resp.Status, truncateBody(body))
		}
		return sameTensor("shared memory", shm.out, input)
	}
	return []call{httpCall, grpcCall, shmCall}, func() { shm.close(); conn.Close() }, nil
}

// gbps is the tensor bytes of one round trip (in and out) per second, in
// 10^9 bytes.
func gbps(d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return 2 * transferBytes / d.Seconds() / 1e9
}

func transferHTTPBody(input []byte) ([]byte, int) {
	header, _ := json.Marshal(map[string]any{
		"inputs": []map[string]any{{"name": "INPUT_FP32", "datatype": "FP32", "shape": []int{transferFloats},
			"parameters": map[string]any{"binary_data_size": len(input)}}},
		"outputs": []map[string]any{{"name": "OUTPUT_FP32", "parameters": map[string]any{"binary_data": true}}},
	})
	return append(header, input...), len(header)
}

func sameTensor(what string, got, want []byte) error {
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: the %d bytes that came back differ from the %d sent", what, len(got), len(want))
	}
	return nil
}

func truncateBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// transferRegions are the benchmark's two POSIX shared memory objects,
// mapped here and registered with the server.
type transferRegions struct {
	in, out   []byte
	paths     []string
	client    *http.Client
	serverURL string
}

func newTransferRegions(client *http.Client, serverURL, tag string) (*transferRegions, error) {
	t := &transferRegions{client: client, serverURL: serverURL}
	tag = strconv.Itoa(os.Getpid()) + "_" + tag
	for _, name := range []string{"in", "out"} {
		key := "bench_" + name + "_" + tag
		path := filepath.Join("/dev/shm", key)
		m, err := createMapped(path, transferBytes)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("shared memory %s: %w", path, err)
		}
		t.paths = append(t.paths, path)
		if name == "in" {
			t.in = m
		} else {
			t.out = m
		}
		body := fmt.Sprintf(`{"key":"/%s","offset":0,"byte_size":%d}`, key, transferBytes)
		resp, err := client.Post(serverURL+"/v2/systemsharedmemory/region/bench_"+name+"/register", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.close()
			return nil, err
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.close()
			return nil, fmt.Errorf("register region %s: %s: %s", name, resp.Status, msg)
		}
	}
	return t, nil
}

func createMapped(path string, size int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		os.Remove(path)
		return nil, err
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return m, nil
}

func (t *transferRegions) close() {
	if resp, err := t.client.Post(t.serverURL+"/v2/systemsharedmemory/unregister", "application/json", nil); err == nil {
		resp.Body.Close()
	}
	for _, m := range [][]byte{t.in, t.out} {
		if m != nil {
			_ = syscall.Munmap(m)
		}
	}
	for _, p := range t.paths {
		os.Remove(p)
	}
}
