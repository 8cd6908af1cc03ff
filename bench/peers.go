package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/vigilhq/vigil/internal/inferencepb"
	stubpy "github.com/vigilhq/vigil/python"
)

// The peers comparison (-peers, make bench-peers) runs Triton, vigil and the
// floor server side by side on one repository and one closed-loop load
// generator, in interleaved rounds, so that every vigil/Triton ratio comes
// from figures that shared the machine's conditions.

// peerModels is the repository both servers load. simple is Triton's
// add/sub example (INT32 [16], two instances); simple_dyn is the same with
// dynamic batching and a BATCH output saying how many requests its execute
// got; identity_fp32 returns its input, for the large-tensor figure.
var peerModels = map[string]string{
	"simple/config.pbtxt": `name: "simple"
backend: "python"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
instance_group [ { count: 2 kind: KIND_CPU } ]
`,
	"simple/1/model.py": `import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return responses
`,
	"simple_dyn/config.pbtxt": `name: "simple_dyn"
backend: "python"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "BATCH" data_type: TYPE_INT32 dims: [ 1 ] }
]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
`,
	"simple_dyn/1/model.py": `import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        n = np.array([[len(requests)]], dtype=np.int32)
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b),
                pb_utils.Tensor("BATCH", n)]))
        return responses
`,
	"identity_fp32/config.pbtxt": `name: "identity_fp32"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
`,
	"identity_fp32/1/model.py": `import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests]
`,
}

func writePeerRepository(dir string) error {
	for name, body := range peerModels {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// peer is one server under comparison.
type peer struct {
	name       string
	http, grpc string
	ready      string // the readiness URL the prober polls
	pid        int    // root of the process tree whose CPU time is counted
	models     bool   // serves the models (the floor server only answers)
	hc         *http.Client
	inf        inferencepb.GRPCInferenceServiceClient
	conn       *grpc.ClientConn
}

func newPeer(name, httpURL, grpcAddr string, pid int, models bool) (*peer, error) {
	conn, err := dialInference(grpcAddr)
	if err != nil {
		return nil, err
	}
	return &peer{name: name, http: httpURL, grpc: grpcAddr, ready: httpURL + "/v2/health/ready", pid: pid, models: models,
		// No Accept-Encoding: Triton gzips its responses when asked (Go's
		// default transport asks), which is CPU neither Triton's clients
		// nor vigil spend.
		hc:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}, Timeout: 60 * time.Second},
		inf: inferencepb.NewGRPCInferenceServiceClient(conn), conn: conn}, nil
}

// simpleJSON is one simple request in JSON (INPUT0 = 0..15, INPUT1 = 1s).
func simpleJSON(model string) []byte {
	var a, b []string
	for i := 0; i < 16; i++ {
		a = append(a, strconv.Itoa(i))
		b = append(b, "1")
	}
	return []byte(`{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,16],"data":[` + strings.Join(a, ",") +
		`]},{"name":"INPUT1","datatype":"INT32","shape":[1,16],"data":[` + strings.Join(b, ",") + `]}]}`)
}

func simpleGRPC(model string) *inferencepb.ModelInferRequest {
	a, b := make([]byte, 64), make([]byte, 64)
	for i := 0; i < 16; i++ {
		binary.LittleEndian.PutUint32(a[4*i:], uint32(i))
		binary.LittleEndian.PutUint32(b[4*i:], 1)
	}
	in := func(name string) *inferencepb.ModelInferRequest_InferInputTensor {
		return &inferencepb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "INT32", Shape: []int64{1, 16}}
	}
	return &inferencepb.ModelInferRequest{ModelName: model,
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{in("INPUT0"), in("INPUT1")},
		RawInputContents: [][]byte{a, b}}
}

func (p *peer) httpInfer(model string) call {
	return httpCall(p.hc, "POST", p.http+"/v2/models/"+model+"/infer", simpleJSON(model))
}

func (p *peer) grpcInfer(model string, batches *histogram) call {
	req := simpleGRPC(model)
	return func(ctx context.Context) error {
		resp, err := p.inf.ModelInfer(ctx, req)
		if err != nil || batches == nil {
			return err
		}
		for i, o := range resp.GetOutputs() {
			if o.GetName() == "BATCH" && i < len(resp.GetRawOutputContents()) && len(resp.GetRawOutputContents()[i]) == 4 {
				batches.add(int(binary.LittleEndian.Uint32(resp.GetRawOutputContents()[i])))
			}
		}
		return nil
	}
}

// checkSimple verifies once that the server computes simple right.
func (p *peer) checkSimple(ctx context.Context) error {
	resp, err := p.hc.Post(p.http+"/v2/models/simple/infer", "application/json", bytes.NewReader(simpleJSON("simple")))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Outputs []struct {
			Name string
			Data []int
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: simple: %w", p.name, err)
	}
	for _, o := range r.Outputs {
		if o.Name == "OUTPUT0" && len(o.Data) == 16 && o.Data[15] == 16 {
			return nil
		}
	}
	return fmt.Errorf("%s: simple answered %+v", p.name, r)
}

// histogram counts batch sizes seen by requests.
type histogram struct {
	mu sync.Mutex
	n  map[int]int
}

func (h *histogram) add(v int) {
	h.mu.Lock()
	if h.n == nil {
		h.n = map[int]int{}
	}
	h.n[v]++
	h.mu.Unlock()
}

func (h *histogram) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var keys []int
	total, sum := 0, 0
	for k, v := range h.n {
		keys = append(keys, k)
		total += v
		sum += k * v
	}
	if total == 0 {
		return "no batch sizes seen"
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d:%.0f%%", k, 100*float64(h.n[k])/float64(total)))
	}
	return fmt.Sprintf("mean batch seen by a request %.2f (%s)", float64(sum)/float64(total), strings.Join(parts, " "))
}

// sample is one load step's figures for one server.
type sample struct {
	rps       float64
	lat       dist
	cpuPerInf time.Duration // server + stubs CPU time / requests served
	serverCPU time.Duration // of which the server process's own
	probe     dist          // readiness probe latency during the step (c=16 only)
	idleProbe dist          // an idle process's, probed beside the same load
	bytesPerS float64       // for the large-tensor steps
	hasProbe  bool
	served    int
}

// loadStep runs f from c workers for d and measures the server's CPU time
// over it. When idleReady is set, it also probes readiness from another
// process, both the server's and, at the same time, that of a process that
// serves nothing (idleReady): the least any probe could see beside this
// load, since the prober and the server wait for the same two cores.
func loadStep(ctx context.Context, p *peer, c int, d time.Duration, f call, idleReady string) (sample, error) {
	var stopProbe, stopIdle func() (dist, error)
	if idleReady != "" {
		var err error
		if stopProbe, err = externalProbe(ctx, p.ready, 5*time.Millisecond); err != nil {
			return sample{}, err
		}
		if stopIdle, err = externalProbe(ctx, idleReady, 5*time.Millisecond); err != nil {
			_, _ = stopProbe()
			return sample{}, err
		}
	}
	cpu0, err := treeCPU(p.pid)
	if err != nil {
		return sample{}, err
	}
	own0, err := processCPU(p.pid)
	if err != nil {
		return sample{}, err
	}
	lat, rps, lerr := concurrent(ctx, c, d, f)
	cpu1, err := treeCPU(p.pid)
	if err != nil {
		return sample{}, err
	}
	own1, err := processCPU(p.pid)
	if err != nil {
		return sample{}, err
	}
	s := sample{rps: rps, lat: lat, served: lat.n}
	if lat.n > 0 {
		s.cpuPerInf = (cpu1 - cpu0) / time.Duration(lat.n)
		s.serverCPU = (own1 - own0) / time.Duration(lat.n)
	}
	if stopProbe != nil {
		pd, perr := stopProbe()
		id, ierr := stopIdle()
		if err := errors.Join(perr, ierr); err != nil {
			return s, fmt.Errorf("%s: probe: %w", p.name, err)
		}
		s.probe, s.idleProbe, s.hasProbe = pd, id, true
	}
	if lerr != nil {
		return s, fmt.Errorf("%s: %w", p.name, lerr)
	}
	return s, nil
}

// largeCalls returns the HTTP binary and gRPC 16 MiB identity round trips.
func (p *peer) largeCalls(n int) (httpBin, grpcRaw call) {
	data := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(data[4*i:], uint32(i))
	}
	hdr := fmt.Sprintf(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[%d],"parameters":{"binary_data_size":%d}}],`+
		`"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}`, n, len(data))
	body := append([]byte(hdr), data...)
	url := p.http + "/v2/models/identity_fp32/infer"
	httpBin = func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(len(hdr)))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := p.hc.Do(req)
		if err != nil {
			return err
		}
		got, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || got < int64(len(data)) {
			return fmt.Errorf("identity_fp32 over HTTP: %s, %d bytes", resp.Status, got)
		}
		return nil
	}
	greq := &inferencepb.ModelInferRequest{ModelName: "identity_fp32",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "INPUT0", Datatype: "FP32", Shape: []int64{int64(n)}}},
		RawInputContents: [][]byte{data}}
	grpcRaw = func(ctx context.Context) error {
		resp, err := p.inf.ModelInfer(ctx, greq)
		if err != nil {
			return err
		}
		if rc := resp.GetRawOutputContents(); len(rc) != 1 || len(rc[0]) != len(data) {
			return fmt.Errorf("identity_fp32 over gRPC: %d outputs", len(rc))
		}
		return nil
	}
	return httpBin, grpcRaw
}

// peerResults holds every step's samples: results[step][server] has one
// sample per round.
type peerResults struct {
	steps   []string
	samples map[string]map[string][]sample
}

func (r *peerResults) add(step, server string, s sample) {
	if r.samples == nil {
		r.samples = map[string]map[string][]sample{}
	}
	if r.samples[step] == nil {
		r.steps = append(r.steps, step)
		r.samples[step] = map[string][]sample{}
	}
	r.samples[step][server] = append(r.samples[step][server], s)
}

// runPeers is -peers: Triton, vigil and the floor server in interleaved
// rounds.
func runPeers(ctx context.Context, o options, w io.Writer) error {
	python, err := stubpy.Resolve(ctx, o.python)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "vigil-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	repo := filepath.Join(work, "models")
	if err := writePeerRepository(repo); err != nil {
		return err
	}
	fmt.Fprintf(w, "vigil vs Triton — %s, python %s, triton venv %s\nvigil serve args: %q; %d rounds of %s per step\n\n",
		time.Now().Format(time.RFC3339), python, o.tritonVenv, o.extra, o.rounds, o.stepDuration)

	tr, err := startTriton(ctx, o.tritonVenv, repo, work)
	if err != nil {
		return err
	}
	defer tr.stop()
	// vigil is probed where a deployment would point its kubelet: the
	// probe port (--probe-port), whose answers come from a process that
	// does nothing else. The baseline, which may predate the flag, is
	// probed on its serving port.
	vs, err := startServer(o.vigil, repo, python, append(strings.Fields(o.extra), "--probe-port", "0")...)
	if err != nil {
		return err
	}
	defer vs.stop()
	if err := vs.waitReady(120 * time.Second); err != nil {
		return err
	}
	if vs.probes == "" {
		return fmt.Errorf("vigil logged no probes listener")
	}
	var base *vigilServer
	if o.vigilBaseline != "" {
		// A second vigil, from another binary, on the same repository: the
		// before of a before/after, measured in the same rounds.
		if base, err = startServer(o.vigilBaseline, repo, python, strings.Fields(o.extra)...); err != nil {
			return err
		}
		defer base.stop()
		if err := base.waitReady(120 * time.Second); err != nil {
			return err
		}
	}
	fl, err := startFloorServer(ctx)
	if err != nil {
		return err
	}
	defer fl.stop()
	// A second floor server takes no load: only the probes beside each
	// server's c=16 steps.
	idle, err := startFloorServer(ctx)
	if err != nil {
		return err
	}
	defer idle.stop()
	idleReady := idle.http + "/v2/health/ready"

	triton, err := newPeer("triton", tr.http, tr.grpc, tr.pid(), true)
	if err != nil {
		return err
	}
	vigil, err := newPeer("vigil", vs.http, vs.grpc, vs.cmd.Process.Pid, true)
	if err != nil {
		return err
	}
	vigil.ready = vs.probes + "/v2/health/ready"
	fmt.Fprintf(w, "vigil's readiness is probed on its --probe-port: %s\n", vigil.ready)
	fpeer, err := newPeer("floor", fl.http, fl.grpc, fl.pid, false)
	if err != nil {
		return err
	}
	peers := []*peer{triton, vigil, fpeer}
	servers := []*peer{triton, vigil}
	if base != nil {
		bpeer, err := newPeer("vigil-base", base.http, base.grpc, base.cmd.Process.Pid, true)
		if err != nil {
			return err
		}
		peers = append(peers, bpeer)
		servers = append(servers, bpeer)
		fmt.Fprintf(w, "vigil-base: %s, same serve args\n\n", o.vigilBaseline)
	}
	for _, p := range peers {
		defer p.conn.Close()
	}
	for _, p := range servers {
		if err := p.checkSimple(ctx); err != nil {
			return err
		}
	}

	res := &peerResults{}
	batches := map[string]*histogram{"triton": {}, "vigil": {}, "vigil-base": {}}
	const largeElems = 4 << 20 // 16 MiB of FP32
	type largePair struct{ http, grpc call }
	large := map[string]largePair{}
	for _, p := range servers {
		h, g := p.largeCalls(largeElems)
		large[p.name] = largePair{h, g}
	}
	for round := 0; round < o.rounds; round++ {
		// Rotate who goes first, so that no server always follows the same
		// one.
		order := slices.Clone(peers)
		for i := 0; i < round%len(order); i++ {
			order = append(order[1:], order[0])
		}
		for _, proto := range []string{"HTTP", "gRPC"} {
			for _, c := range []int{1, 8, 16} {
				step := fmt.Sprintf("%s c=%d", proto, c)
				if !o.steps.MatchString(step) {
					continue
				}
				for _, p := range order {
					f := p.httpInfer("simple")
					if proto == "gRPC" {
						f = p.grpcInfer("simple", nil)
					}
					probe := ""
					if c == 16 {
						probe = idleReady
					}
					s, err := loadStep(ctx, p, c, o.stepDuration, f, probe)
					if err != nil {
						return fmt.Errorf("round %d %s: %w", round+1, step, err)
					}
					res.add(step, p.name, s)
					fmt.Fprintf(w, "round %d %-12s %-6s %7.0f infer/s  p50 %7s  p99 %7s  cpu/infer %6s%s\n", round+1, step, p.name,
						s.rps, us(s.lat.p50), us(s.lat.p99), us(s.cpuPerInf), probeNote(s))
				}
			}
			step := proto + " c=16 dynamic batching"
			for _, p := range order {
				if !p.models || !o.steps.MatchString(step) {
					continue
				}
				f := p.httpInfer("simple_dyn")
				if proto == "gRPC" {
					f = p.grpcInfer("simple_dyn", batches[p.name])
				}
				s, err := loadStep(ctx, p, 16, o.stepDuration, f, "")
				if err != nil {
					return fmt.Errorf("round %d %s: %w", round+1, step, err)
				}
				res.add(step, p.name, s)
				fmt.Fprintf(w, "round %d %-12s %-6s %7.0f infer/s  p50 %7s  p99 %7s  cpu/infer %6s\n", round+1, step, p.name,
					s.rps, us(s.lat.p50), us(s.lat.p99), us(s.cpuPerInf))
			}
		}
		for _, proto := range []string{"HTTP binary", "gRPC"} {
			step := "16 MiB FP32 identity, " + proto
			for _, p := range order {
				if !p.models || !o.steps.MatchString(step) {
					continue
				}
				f := large[p.name].http
				if proto == "gRPC" {
					f = large[p.name].grpc
				}
				lat, err := sequential(ctx, 2, o.largeSamples, f)
				if err != nil {
					return fmt.Errorf("round %d %s: %w", round+1, step, err)
				}
				s := sample{lat: lat, served: lat.n, bytesPerS: float64(4*largeElems) / lat.p50.Seconds()}
				res.add(step, p.name, s)
				fmt.Fprintf(w, "round %d %-30s %-6s p50 %7s  %.2f GB/s\n", round+1, step, p.name, us(s.lat.p50), s.bytesPerS/1e9)
			}
		}
	}
	fmt.Fprintln(w)
	printPeerSummary(w, res, "triton", "Triton", true)
	if base != nil {
		printPeerSummary(w, res, "vigil-base", "vigil-base", false)
		base.stop()
	}
	for _, name := range []string{"triton", "vigil"} {
		fmt.Fprintf(w, "dynamic batching, gRPC c=16, %s: %s\n", name, batches[name])
	}
	fmt.Fprintln(w)
	tr.stop()
	fl.stop()
	idle.stop()

	if o.flatRequests > 0 {
		if err := measureFlat(ctx, vigil, vs.cmd.Process.Pid, o.flatRequests, w); err != nil {
			return err
		}
	}
	vs.stop()

	// The health bounds of docs/health.md, measured on the bench's own
	// repository with the same serve arguments.
	if o.kills > 0 {
		return runHealthBounds(ctx, o, python, w)
	}
	return nil
}

// sequential times n calls of f, one at a time, after warm untimed ones.
func sequential(ctx context.Context, warm, n int, f call) (dist, error) {
	var ds []time.Duration
	for i := 0; i < warm+n; i++ {
		t0 := time.Now()
		if err := f(ctx); err != nil {
			return dist{}, err
		}
		if i >= warm {
			ds = append(ds, time.Since(t0))
		}
	}
	return summarize(ds), nil
}

func probeNote(s sample) string {
	if !s.hasProbe {
		return ""
	}
	return fmt.Sprintf("  ready p99 %s (idle process %s)", us(s.probe.p99), us(s.idleProbe.p99))
}

// measureFlat sends n large identity requests and reports the server's and
// stubs' resident memory and open file descriptors before and after.
func measureFlat(ctx context.Context, p *peer, pid, n int, w io.Writer) error {
	const elems = 1 << 18 // 1 MiB of FP32, above the shared memory threshold
	h, g := p.largeCalls(elems)
	warm := func() error {
		for i := 0; i < 20; i++ {
			if err := h(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	if err := warm(); err != nil {
		return err
	}
	rss0, _ := treeRSS(pid)
	fds0 := countFDs(pid)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		f := h
		if i%2 == 1 {
			f = g
		}
		if err := f(ctx); err != nil {
			return fmt.Errorf("large request %d: %w", i, err)
		}
	}
	el := time.Since(t0)
	rss1, _ := treeRSS(pid)
	fds1 := countFDs(pid)
	fmt.Fprintf(w, "memory over %d 1 MiB identity requests (HTTP binary and gRPC alternating, %s): vigil+stubs RSS %.0f → %.0f MiB, server fds %d → %d\n\n",
		n, el.Round(time.Millisecond), float64(rss0)/(1<<20), float64(rss1)/(1<<20), fds0, fds1)
	return nil
}

func countFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// runHealthBounds measures detection and recovery against the bounds of
// docs/health.md on a vigil serving the bench repository.
func runHealthBounds(ctx context.Context, o options, python string, w io.Writer) error {
	repo, err := benchRepository()
	if err != nil {
		return err
	}
	defer os.RemoveAll(repo)
	srv, err := startServer(o.vigil, repo, python, strings.Fields(o.extra)...)
	if err != nil {
		return err
	}
	defer srv.stop()
	if err := srv.waitReady(60 * time.Second); err != nil {
		return err
	}
	r := &report{w: w}
	if err := measureRecovery(ctx, srv, o, r); err != nil {
		return err
	}
	fmt.Fprintln(w, "health bounds (docs/health.md), same serve arguments:")
	r.print()
	return nil
}

// printPeerSummary prints every figure as vigil/other (Triton, or the
// baseline vigil), median and range over the rounds, with its target when
// targets says so.
func printPeerSummary(w io.Writer, res *peerResults, other, title string, targets bool) {
	fmt.Fprintf(w, "%-38s %-28s %-22s %-22s %-22s %s\n", "figure", "vigil / "+title+": median (range)", "vigil median", title+" median", "floor median", "target")
	type fig struct {
		name   string
		step   string
		get    func(sample) float64
		show   func(float64) string
		target string
		ok     func(float64) bool
		note   func(v, t []sample) string // more words after the verdict, with targets
	}
	rate := func(s sample) float64 { return s.rps }
	showRate := func(v float64) string { return fmt.Sprintf("%.0f/s", v) }
	showDur := func(v float64) string { return us(time.Duration(v)) }
	var figs []fig
	for _, proto := range []string{"HTTP", "gRPC"} {
		for _, c := range []int{1, 8, 16} {
			step := fmt.Sprintf("%s c=%d", proto, c)
			figs = append(figs, fig{step + " throughput", step, rate, showRate, "≥ 1.3×", func(r float64) bool { return r >= 1.3 }, nil})
		}
		step := proto + " c=1"
		figs = append(figs, fig{step + " p50 latency", step, func(s sample) float64 { return float64(s.lat.p50) }, showDur,
			"≤ 0.8×", func(r float64) bool { return r <= 0.8 }, nil})
		for _, c := range []int{1, 8, 16} {
			step := fmt.Sprintf("%s c=%d", proto, c)
			figs = append(figs, fig{step + " CPU per inference", step, func(s sample) float64 { return float64(s.cpuPerInf) }, showDur,
				"≤ 0.7×", func(r float64) bool { return r <= 0.7 }, nil})
		}
		// Where each one's CPU goes: the server process, and its stubs.
		for _, c := range []int{1, 8, 16} {
			step := fmt.Sprintf("%s c=%d", proto, c)
			figs = append(figs,
				fig{step + "   of it server", step, func(s sample) float64 { return float64(s.serverCPU) }, showDur, "", nil, nil},
				fig{step + "   of it stubs", step, func(s sample) float64 { return float64(s.cpuPerInf - s.serverCPU) }, showDur, "", nil, nil})
		}
		step = proto + " c=16"
		figs = append(figs, fig{"ready p99 while " + step, step, func(s sample) float64 { return float64(s.probe.p99) }, showDur,
			"≤ 0.5×", func(r float64) bool { return r <= 0.5 }, idleNote})
		figs = append(figs, fig{"  ÷ idle process's p99 beside it", step, func(s sample) float64 {
			if s.idleProbe.p99 <= 0 {
				return 0
			}
			return float64(s.probe.p99) / float64(s.idleProbe.p99)
		}, func(v float64) string { return fmt.Sprintf("%.2f×", v) }, "", nil, nil})
		step = proto + " c=16 dynamic batching"
		figs = append(figs, fig{step + " throughput", step, rate, showRate, "", nil, nil})
		figs = append(figs, fig{step + " CPU/inf", step, func(s sample) float64 { return float64(s.cpuPerInf) }, showDur, "", nil, nil})
	}
	for _, proto := range []string{"HTTP binary", "gRPC"} {
		step := "16 MiB FP32 identity, " + proto
		figs = append(figs, fig{"16 MiB identity " + proto + " GB/s", step, func(s sample) float64 { return s.bytesPerS },
			func(v float64) string { return fmt.Sprintf("%.2f GB/s", v/1e9) }, "≥ 1.5× and ≥ 1 GB/s", func(r float64) bool { return r >= 1.5 }, nil})
	}
	for _, f := range figs {
		per := res.samples[f.step]
		v, t := per["vigil"], per[other]
		if len(v) == 0 || len(t) == 0 {
			continue
		}
		var ratios, vs, ts, fs []float64
		for i := range min(len(v), len(t)) {
			if tv := f.get(t[i]); tv > 0 {
				ratios = append(ratios, f.get(v[i])/tv)
			}
			vs, ts = append(vs, f.get(v[i])), append(ts, f.get(t[i]))
		}
		for _, s := range per["floor"] {
			if fv := f.get(s); fv > 0 { // the floor server has no stubs
				fs = append(fs, fv)
			}
		}
		if len(ratios) == 0 {
			continue
		}
		med := median(ratios)
		verdict := ""
		if f.ok != nil && targets {
			ok := f.ok(med)
			if strings.HasSuffix(f.name, "GB/s") {
				ok = ok && median(vs) >= 1e9
			}
			verdict = target(ok, "%s", f.target)
		}
		if f.note != nil && targets {
			verdict += f.note(v, t)
		}
		floorCol := "-"
		if len(fs) > 0 {
			floorCol = f.show(median(fs))
		}
		fmt.Fprintf(w, "%-38s %-28s %-22s %-22s %-22s %s\n", f.name,
			fmt.Sprintf("%.2f× (%.2f–%.2f)", med, slices.Min(ratios), slices.Max(ratios)),
			f.show(median(vs)), f.show(median(ts)), floorCol, verdict)
	}
	fmt.Fprintln(w)
}

// idleNote says what the readiness target asks for next to what an idle
// process answered beside the other server's load: a probe of a server
// that did nothing but answer it would score about that ratio.
func idleNote(_, t []sample) string {
	var ratios []float64
	for _, s := range t {
		if s.probe.p99 > 0 && s.idleProbe.p99 > 0 {
			ratios = append(ratios, float64(s.idleProbe.p99)/float64(s.probe.p99))
		}
	}
	if len(ratios) == 0 {
		return ""
	}
	return fmt.Sprintf(" (an idle process beside the same load: %.2f×)", median(ratios))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
