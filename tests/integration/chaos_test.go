package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// The chaos test runs the real server under closed-loop HTTP and gRPC
// clients that check every answer, while it SIGKILLs, SIGSTOPs and
// SIGCONTs stubs at random and samples the health surfaces every 10 ms
// against the ground truth from /proc. It fails on a wrong answer, a
// request without a response within its deadline, a failure that is not
// 503/504 with a reason, a false-ready window longer than the documented
// bound, or a zombie, fd or goroutine left behind. VIGIL_CHAOS_DURATION
// sets how long faults are injected (20 s in the suite; `make chaos` runs
// minutes); the figures are logged (go test -v shows them).
func TestChaos(t *testing.T) {
	dur := 20 * time.Second
	if v := os.Getenv("VIGIL_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("VIGIL_CHAOS_DURATION: %v", err)
		}
		dur = d
	}
	s := start(t, copyModels(t, "add_sub", "echo", "tally"),
		"--health-default", "max_restarts=100000",
		"--health-default", "restart_threshold_seconds=4",
		"--health-default", "restart_backoff={initial_seconds: 0.1, max_seconds: 0.5}")
	s.waitReady(60 * time.Second)
	c := newChaos(t, s)
	baseFDs, baseGoroutines := c.fds(), c.goroutines()

	ctx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); c.httpClient(ctx, i) }()
	}
	wg.Add(2)
	go func() { defer wg.Done(); c.grpcClient(ctx) }()
	go func() { defer wg.Done(); c.echoClient(ctx) }()
	seqs := &sequenceTally{}
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); c.sequenceClient(ctx, i, seqs) }()
	}
	sampled := make(chan struct{})
	go func() { defer close(sampled); c.sample(ctx) }()
	c.inject(ctx)
	wg.Wait()
	<-sampled

	// Let everything recover, then look for leftovers.
	for _, pid := range c.children() {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	recovered := eventually(t, 60*time.Second, "every instance routable again", func() bool { return c.allRoutable() })
	c.hc.CloseIdleConnections()
	var zombies []int
	eventually(t, 10*time.Second, "no zombie stub", func() bool {
		zombies = c.zombies()
		return len(zombies) == 0
	})
	var fds, goroutines int
	eventually(t, 10*time.Second, "fds and goroutines back to their baseline", func() bool {
		fds, goroutines = c.fds(), c.goroutines()
		return fds <= baseFDs+4 && goroutines <= baseGoroutines+10
	})
	c.report(dur, recovered, baseFDs, fds, baseGoroutines, goroutines)
	if fp := c.heartbeatFalsePositives(); len(fp) > 0 {
		t.Errorf("%d heartbeat failures on stubs the test never stopped (false positives):\n%s", len(fp), strings.Join(fp, "\n"))
	}
	t.Logf("sequences (tally): %s", seqs)
	if seqs.done == 0 {
		t.Errorf("no sequence completed under chaos: %s", seqs)
	}
	if len(c.failures) > 0 {
		n := min(len(c.failures), 5)
		t.Errorf("%d failures, e.g.:\n%s", len(c.failures), strings.Join(c.failures[:n], "\n"))
	}
}

// falseReadyBound is the longest a surface may say "ready" about a model
// none of whose stubs can run: the documented bound is milliseconds; the
// test allows a generous margin for a shared 2-core machine.
const falseReadyBound = time.Second

type chaos struct {
	t  *testing.T
	s  *server
	hc *http.Client
	gc *grpc.ClientConn

	mu       sync.Mutex
	failures []string
	outcomes map[string]int
	// pending faults waiting to be seen, by pid
	pending map[int]fault
	latency map[string][]time.Duration // detection / recovery, by kind
	stopped map[int]time.Time          // pids we stopped and have not continued
	// everStopped is every pid the test stopped: a heartbeat failure of
	// any other stub is a false positive.
	everStopped map[int]bool
	// false-ready bookkeeping, per model: a window runs from its first bad
	// sample (frStart) to its last (frLast), proven, and at most to the
	// first good sample after it (frMax keeps that upper bound; frProven
	// the longest proven window).
	frStart  map[string]time.Time
	frLast   map[string]time.Time
	frTotal  map[string]time.Duration
	frMax    map[string]time.Duration
	frProven map[string]time.Duration
	unready  map[string]time.Duration
	// falseUnready is not-ready time while a stub the server lists for
	// the model was running, past its initialize.
	falseUnready map[string]time.Duration
	samples      int
	faults       map[string]int
	lastSample   time.Time
}

type fault struct {
	kind string
	at   time.Time
}

func newChaos(t *testing.T, s *server) *chaos {
	conn, err := grpc.NewClient(s.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &chaos{t: t, s: s, hc: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}, gc: conn,
		outcomes: map[string]int{}, pending: map[int]fault{}, latency: map[string][]time.Duration{},
		stopped: map[int]time.Time{}, everStopped: map[int]bool{}, falseUnready: map[string]time.Duration{}, frStart: map[string]time.Time{}, frTotal: map[string]time.Duration{},
		frMax: map[string]time.Duration{}, frLast: map[string]time.Time{}, frProven: map[string]time.Duration{}, unready: map[string]time.Duration{}, faults: map[string]int{}}
}

func (c *chaos) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

func (c *chaos) outcome(o string) {
	c.mu.Lock()
	c.outcomes[o]++
	c.mu.Unlock()
}

// check classifies one HTTP answer: 200 with the right outputs, or 503/504
// with a reason; anything else is a failure.
func (c *chaos) check(what string, code int, body []byte, err error, took time.Duration, right func([]byte) bool) {
	if code == 503 && bytes.Contains(body, []byte("stopped responding")) {
		c.hung(what, took)
	}
	switch {
	case err != nil:
		c.outcome("no response")
		c.fail("%s: no response: %v", what, err)
	case code == 200 && right(body):
		c.outcome("200")
	case code == 200:
		c.outcome("wrong answer")
		c.fail("%s: wrong answer: %s", what, body)
	case (code == 503 || code == 504) && bytes.Contains(body, []byte(`"error":"`)) && !bytes.Contains(body, []byte(`"error":""`)):
		c.outcome(strconv.Itoa(code))
		time.Sleep(20 * time.Millisecond) // a client would back off before retrying
	default:
		c.outcome("bad failure")
		c.fail("%s: %d %s, want 200, or 503/504 with a reason", what, code, body)
	}
}

func (c *chaos) httpClient(ctx context.Context, i int) {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	for ctx.Err() == nil {
		a, b := float32(r.IntN(1000)), float32(r.IntN(1000))
		sent := time.Now()
		resp, err := c.hc.Post(c.s.HTTP+"/v2/models/add_sub/infer", "application/json", strings.NewReader(addSubBody(a, b)))
		var body []byte
		code := 0
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		c.check("http add_sub", code, body, err, time.Since(sent), func(body []byte) bool {
			var out struct {
				Outputs []struct {
					Name string    `json:"name"`
					Data []float32 `json:"data"`
				} `json:"outputs"`
			}
			if json.Unmarshal(body, &out) != nil || len(out.Outputs) != 2 {
				return false
			}
			for _, o := range out.Outputs {
				want := a + b
				if o.Name == "OUTPUT1" {
					want = a - b
				}
				if len(o.Data) != 16 || o.Data[0] != want || o.Data[15] != want {
					return false
				}
			}
			return true
		})
	}
}

func (c *chaos) echoClient(ctx context.Context) {
	for n := 0; ctx.Err() == nil; n++ {
		x := float32(n % 1000)
		sent := time.Now()
		resp, err := c.hc.Post(c.s.HTTP+"/v2/models/echo/infer", "application/json", strings.NewReader(echoBody(x)))
		var body []byte
		code := 0
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		c.check("http echo", code, body, err, time.Since(sent), func(body []byte) bool {
			return bytes.Contains(body, []byte(fmt.Sprintf(`"data":[%v]`, x)))
		})
	}
}

func (c *chaos) grpcClient(ctx context.Context) {
	cl := inferencepb.NewGRPCInferenceServiceClient(c.gc)
	for n := 0; ctx.Err() == nil; n++ {
		a := float32(n % 500)
		raw := make([]byte, 64)
		for i := range 16 {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(a))
		}
		rctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		sent := time.Now()
		resp, err := cl.ModelInfer(rctx, &inferencepb.ModelInferRequest{ModelName: "add_sub",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
				{Name: "INPUT0", Datatype: "FP32", Shape: []int64{1, 16}},
				{Name: "INPUT1", Datatype: "FP32", Shape: []int64{1, 16}},
			}, RawInputContents: [][]byte{raw, raw}})
		cancel()
		st := status.Convert(err)
		if st.Code() == codes.Unavailable && strings.Contains(st.Message(), "stopped responding") {
			c.hung("grpc add_sub", time.Since(sent))
		}
		switch {
		case err == nil:
			ok := len(resp.GetRawOutputContents()) == 2
			for i, o := range resp.GetOutputs() {
				want := 2 * a
				if o.GetName() == "OUTPUT1" {
					want = 0
				}
				if !ok || len(resp.RawOutputContents[i]) != 64 || math.Float32frombits(binary.LittleEndian.Uint32(resp.RawOutputContents[i])) != want {
					ok = false
				}
			}
			if ok {
				c.outcome("200")
			} else {
				c.outcome("wrong answer")
				c.fail("grpc add_sub: wrong answer %v", resp)
			}
		case (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded) && st.Message() != "" && !strings.Contains(st.Message(), "context deadline exceeded"):
			if st.Code() == codes.Unavailable {
				c.outcome("503")
			} else {
				c.outcome("504")
			}
			time.Sleep(20 * time.Millisecond)
		default:
			c.outcome("bad failure")
			c.fail("grpc add_sub: %v, want OK, or UNAVAILABLE/DEADLINE_EXCEEDED with a reason", err)
		}
	}
}

// hungBound is the longest a request held by a stopped stub may wait for
// its 503: the heartbeat timeout (2 s, a ping is sent at the stop) + 1 s,
// with a margin for a shared machine.
const hungBound = 4 * time.Second

// hung records a request answered 503 because its stub stopped responding
// (a stop while it held the request: a hang); took is from its sending,
// an upper bound of the time from the stop.
func (c *chaos) hung(what string, took time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latency["hung request"] = append(c.latency["hung request"], took)
	if took > hungBound {
		c.failures = append(c.failures, fmt.Sprintf("%s: held by a stopped stub for %s before its 503 (bound %s)", what, took, hungBound))
	}
}

// inject SIGKILLs, SIGSTOPs and SIGCONTs stubs at random until ctx ends.
func (c *chaos) inject(ctx context.Context) {
	r := rand.New(rand.NewPCG(1, 2))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(200+r.IntN(600)) * time.Millisecond):
		}
		c.mu.Lock()
		var stopped []int
		for pid := range c.stopped {
			stopped = append(stopped, pid)
		}
		c.mu.Unlock()
		pids := c.children()
		if len(pids) == 0 {
			continue
		}
		now := time.Now()
		switch p := r.IntN(10); {
		case len(stopped) > 0 && p < 4:
			pid := stopped[r.IntN(len(stopped))]
			if syscall.Kill(pid, syscall.SIGCONT) == nil {
				c.mu.Lock()
				delete(c.stopped, pid)
				c.pending[pid] = fault{kind: "continue", at: now}
				c.faults["SIGCONT"]++
				c.mu.Unlock()
			}
		case p < 7:
			pid := pids[r.IntN(len(pids))]
			if syscall.Kill(pid, syscall.SIGSTOP) == nil {
				c.mu.Lock()
				c.stopped[pid] = now
				c.everStopped[pid] = true
				c.pending[pid] = fault{kind: "stop", at: now}
				c.faults["SIGSTOP"]++
				c.mu.Unlock()
			}
		default:
			pid := pids[r.IntN(len(pids))]
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				c.mu.Lock()
				delete(c.stopped, pid)
				c.pending[pid] = fault{kind: "kill", at: now}
				c.faults["SIGKILL"]++
				c.mu.Unlock()
			}
		}
	}
}

// instanceView is what the health JSON says of one instance.
type instanceView struct {
	model    string
	pid      int
	routable bool
	state    string
}

func (c *chaos) instances() ([]instanceView, map[string]bool, bool) {
	resp, err := c.hc.Get(c.s.HTTP + "/readyz?format=json")
	if err != nil {
		return nil, nil, false
	}
	defer resp.Body.Close()
	var h struct {
		Models []struct {
			Name      string `json:"name"`
			Ready     bool   `json:"ready"`
			Instances []struct {
				PID      int    `json:"pid"`
				Routable bool   `json:"routable"`
				State    string `json:"state"`
			} `json:"instances"`
		} `json:"models"`
	}
	if json.NewDecoder(resp.Body).Decode(&h) != nil {
		return nil, nil, false
	}
	var out []instanceView
	ready := map[string]bool{}
	for _, m := range h.Models {
		ready[m.Name] = m.Ready
		for _, in := range m.Instances {
			out = append(out, instanceView{model: m.Name, pid: in.PID, routable: in.Routable, state: in.State})
		}
	}
	return out, ready, true
}

func (c *chaos) allRoutable() bool {
	ins, _, ok := c.instances()
	if !ok || len(ins) != 5 { // add_sub 2, echo 1, tally 2
		return false
	}
	for _, in := range ins {
		if !in.routable || procState(in.pid) != 'S' && procState(in.pid) != 'R' {
			return false
		}
	}
	return true
}

// surfaces asks every readiness surface about a model: REST model ready,
// gRPC ModelReady and grpc.health model/<name>. It returns true only when
// all three say ready, and fails the run when they disagree on a stable
// snapshot (asked twice with the same answer from the REST side).
func (c *chaos) surfaces(model string) (ready bool, ok bool) {
	resp, err := c.hc.Get(c.s.HTTP + "/v2/models/" + model + "/ready")
	if err != nil {
		return false, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rest := resp.StatusCode == 200
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mr, err := inferencepb.NewGRPCInferenceServiceClient(c.gc).ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: model})
	if err != nil {
		return false, false
	}
	hr, err := healthpb.NewHealthClient(c.gc).Check(ctx, &healthpb.HealthCheckRequest{Service: "model/" + model})
	if err != nil {
		return false, false
	}
	g := hr.GetStatus() == healthpb.HealthCheckResponse_SERVING
	return rest || mr.GetReady() || g, true
}

// truth is whether some stub the server lists for model can run: alive
// and not stopped, per /proc.
func truth(ins []instanceView, model string) bool {
	for _, in := range ins {
		if in.model == model && in.pid > 0 {
			if st := procState(in.pid); st == 'R' || st == 'S' || st == 'D' {
				return true
			}
		}
	}
	return false
}

// initialized is whether some stub the server lists for model runs (per
// /proc) and has finished initialize (per the server): one that could
// serve.
func initialized(ins []instanceView, model string) bool {
	for _, in := range ins {
		if in.model == model && in.pid > 0 && in.state != "STARTING" {
			if st := procState(in.pid); st == 'R' || st == 'S' || st == 'D' {
				return true
			}
		}
	}
	return false
}

// sample compares the surfaces with /proc every 10 ms and times detection.
func (c *chaos) sample(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		asked := time.Now()
		before, _, ok := c.instances()
		if !ok {
			continue
		}
		now := time.Now()
		for _, model := range []string{"echo", "add_sub"} {
			claimed, ok := c.surfaces(model)
			after, _, ok2 := c.instances()
			if !ok || !ok2 {
				continue
			}
			dead := !truth(before, model) && !truth(after, model)
			c.mu.Lock()
			dt := now.Sub(c.lastSample)
			if c.lastSample.IsZero() || dt > time.Second {
				dt = 10 * time.Millisecond
			}
			if !claimed {
				c.unready[model] += dt
				if initialized(before, model) && initialized(after, model) {
					c.falseUnready[model] += dt
				}
			}
			if claimed && dead {
				if c.frStart[model].IsZero() {
					c.frStart[model] = now
				}
				c.frLast[model] = now
				c.frTotal[model] += dt
			} else if st := c.frStart[model]; !st.IsZero() {
				// On a loaded machine one sample can take a second: the
				// run fails on what the samples prove, and reports the
				// upper bound too.
				w, proven := now.Sub(st), c.frLast[model].Sub(st)
				c.frMax[model] = max(c.frMax[model], w)
				c.frProven[model] = max(c.frProven[model], proven)
				if proven > falseReadyBound {
					c.failures = append(c.failures, fmt.Sprintf("%s: false-ready for %s (at most %s; bound %s)", model, proven, w, falseReadyBound))
				}
				c.frStart[model] = time.Time{}
			}
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.samples++
		c.lastSample = now
		for pid, f := range c.pending {
			if !asked.After(f.at) {
				continue // this view may predate the fault
			}
			routable, listed := false, false
			for _, in := range before {
				if in.pid == pid {
					listed, routable = true, in.routable
				}
			}
			// A kill or a stop is seen when the instance is out of
			// traffic (or already replaced); a continue when it is back.
			// The figure is an upper bound: the time the view arrived.
			if f.kind == "continue" && routable || f.kind != "continue" && (!routable || !listed) {
				c.latency[f.kind] = append(c.latency[f.kind], now.Sub(f.at))
				delete(c.pending, pid)
			} else if now.Sub(f.at) > 30*time.Second {
				delete(c.pending, pid)
			}
		}
		c.mu.Unlock()
	}
}

// children lists the server's stub processes from /proc.
func (c *chaos) children() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(c.s.cmd.Process.Pid) && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

func (c *chaos) zombies() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(c.s.cmd.Process.Pid) && f[0] == "Z" {
			pid, _ := strconv.Atoi(e.Name())
			out = append(out, pid)
		}
	}
	return out
}

// procState is the state letter of /proc/<pid>/stat, 0 if gone.
func procState(pid int) byte {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) == 0 {
		return 0
	}
	return f[0][0]
}

func (c *chaos) fds() int {
	ents, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(c.s.cmd.Process.Pid), "fd"))
	return len(ents)
}

func (c *chaos) goroutines() int {
	resp, err := c.hc.Get(c.s.HTTP + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	slices.Sort(ds)
	p := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return fmt.Sprintf("n=%d p50 %s p99 %s max %s", len(ds), p(0.5).Round(100*time.Microsecond), p(0.99).Round(100*time.Microsecond), ds[len(ds)-1].Round(100*time.Microsecond))
}

func (c *chaos) report(dur, recovered time.Duration, baseFDs, fds, baseG, g int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	total := 0
	for _, n := range c.outcomes {
		total += n
	}
	keys := make([]string, 0, len(c.outcomes))
	for k := range c.outcomes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %d", k, c.outcomes[k]))
	}
	c.t.Logf("chaos: %s of faults (%v), %d health samples", dur, c.faults, c.samples)
	c.t.Logf("requests: %d (%s)", total, strings.Join(out, ", "))
	c.t.Logf("detection (upper bound: when a 10 ms sample showed it), SIGKILL to the instance out of traffic: %s", percentiles(c.latency["kill"]))
	c.t.Logf("detection, SIGSTOP to the instance out of traffic: %s", percentiles(c.latency["stop"]))
	c.t.Logf("recovery, SIGCONT to the instance routable again: %s", percentiles(c.latency["continue"]))
	c.t.Logf("requests held by a stub when it was stopped, sent to their 503 (a hang; bound heartbeat timeout 2 s + 1 s): %s", percentiles(c.latency["hung request"]))
	for _, m := range []string{"echo", "add_sub"} {
		c.t.Logf("%s: false-ready %s in total (longest window %s proven by the samples, at most %s; bound %s); surfaces said not ready for %s, of which %s while a listed stub was running past its initialize (false-unready)",
			m, c.frTotal[m], c.frProven[m], c.frMax[m], falseReadyBound, c.unready[m].Round(time.Millisecond), c.falseUnready[m].Round(time.Millisecond))
	}
	hb, hangs := 0, 0
	c.s.logMu.Lock()
	defer c.s.logMu.Unlock()
	for _, rec := range c.s.logs {
		if reason, _ := rec["reason"].(string); rec["msg"] == "instance state changed" && strings.Contains(reason, "heartbeat") &&
			rec["to"] != "STARTING" && rec["to"] != "READY" {
			hb++
			if rec["to"] == "RESTARTING" && strings.Contains(reason, "heartbeat failed while executing") {
				hangs++
			}
		}
	}
	c.t.Logf("transitions out of health naming the heartbeat: %d (hangs decided by it: %d); on stubs the test never stopped (false positives): %d",
		hb, hangs, len(c.heartbeatFalsePositivesLocked()))
	c.t.Logf("after the run: all instances routable %s after the faults stopped; fds %d → %d, goroutines %d → %d", recovered.Round(time.Millisecond), baseFDs, fds, baseG, g)
}

// heartbeatFalsePositives lists the heartbeat-driven transitions (a failing
// heartbeat check, or a hang decided by it) of processes the test never
// stopped: a running stub whose heartbeat failed.
func (c *chaos) heartbeatFalsePositives() []string {
	c.s.logMu.Lock()
	defer c.s.logMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heartbeatFalsePositivesLocked()
}

// heartbeatFalsePositivesLocked is heartbeatFalsePositives with c.mu and
// c.s.logMu held.
func (c *chaos) heartbeatFalsePositivesLocked() []string {
	var out []string
	for _, rec := range c.s.logs {
		reason, _ := rec["reason"].(string)
		if rec["msg"] != "instance state changed" || !strings.Contains(reason, "heartbeat") ||
			rec["to"] == "STARTING" || rec["to"] == "READY" {
			continue // a new process's start names the restart's cause; the return to health is none
		}
		pid, _ := rec["pid"].(float64)
		if !c.everStopped[int(pid)] {
			out = append(out, fmt.Sprintf("%v %v pid %d: %v -> %v: %s", rec["time"], rec["instance"], int(pid), rec["from"], rec["to"], reason))
		}
	}
	return out
}
