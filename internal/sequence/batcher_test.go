package sequence

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/tensor"
)

// worker is a fake instance worker: it pulls batches from one Instance and
// answers each request with exec, recording the batches it ran.
type worker struct {
	t      *testing.T
	in     *Instance
	exec   func(req *inference.Request) *inference.Response
	cancel context.CancelFunc
	done   chan struct{}
	gate   chan struct{} // when set, each batch waits for a token

	mu      sync.Mutex
	batches [][]*inference.Request
	// gen is the current process's context: die ends it, as a process's
	// end ends the instance's session.
	root   context.Context
	gen    context.Context
	endGen context.CancelFunc
}

// session returns the current generation's context.
func (w *worker) session() context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

// die ends the current process, tells the batcher as the instance's reaper
// does, and starts the next one.
func (w *worker) die(how string) {
	w.mu.Lock()
	w.endGen()
	w.mu.Unlock()
	w.in.GenerationEnded(how)
	w.mu.Lock()
	w.gen, w.endGen = context.WithCancel(w.root)
	w.mu.Unlock()
}

func startWorker(t *testing.T, in *Instance, exec func(*inference.Request) *inference.Response) *worker {
	t.Helper()
	return startGatedWorker(t, in, exec, nil)
}

// startGatedWorker starts a worker that runs a batch only when it can
// receive from gate (nil: at once).
func startGatedWorker(t *testing.T, in *Instance, exec func(*inference.Request) *inference.Response, gate chan struct{}) *worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{t: t, in: in, exec: exec, cancel: cancel, done: make(chan struct{}), gate: gate, root: ctx}
	w.gen, w.endGen = context.WithCancel(ctx)
	go w.run(ctx)
	t.Cleanup(w.stop)
	eventually(t, "the worker to attach", func() bool {
		in.b.mu.Lock()
		defer in.b.mu.Unlock()
		return in.liveLocked()
	})
	return w
}

func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	for {
		batch, err := w.in.Next(w.session(), nil)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			select { // the next generation is starting
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if w.gate != nil {
			select {
			case <-w.gate:
			case <-ctx.Done():
			}
		}
		reqs := make([]*inference.Request, len(batch))
		for k, task := range batch {
			reqs[k] = task.Req
		}
		w.mu.Lock()
		w.batches = append(w.batches, reqs)
		w.mu.Unlock()
		for _, task := range batch {
			task.Finish(w.exec(task.Req), nil)
		}
	}
}

func (w *worker) stop() {
	w.cancel()
	<-w.done
	w.mu.Lock()
	w.endGen()
	w.mu.Unlock()
}

func (w *worker) ran() [][]*inference.Request {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]*inference.Request(nil), w.batches...)
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func i32(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func input(req *inference.Request, name string) *tensor.Tensor {
	for k := range req.Inputs {
		if req.Inputs[k].Name == name {
			return &req.Inputs[k]
		}
	}
	return nil
}

func int32Of(t *tensor.Tensor) int32 {
	if t == nil || len(t.Data) < 4 {
		return -999
	}
	return int32(binary.LittleEndian.Uint32(t.Data))
}

// simpleSequence computes simple_dyna_sequence's arithmetic:
// OUTPUT = READY * (INPUT + START + END * CORRID).
func simpleSequence(req *inference.Request) *inference.Response {
	in := int32Of(input(req, "INPUT"))
	start, end, ready := int32Of(input(req, "START")), int32Of(input(req, "END")), int32Of(input(req, "READY"))
	corr := int32(0)
	if c := input(req, "CORRID"); c != nil {
		corr = int32(binary.LittleEndian.Uint64(c.Data))
	}
	out := ready * (in + start + end*corr)
	return &inference.Response{Outputs: []tensor.Tensor{{Name: "OUTPUT", Datatype: tensor.Int32, Shape: []int64{1, 1}, Data: i32(out)}}}
}

func int32Control(kind Kind, name string) Control {
	return Control{Kind: kind, Name: name, Datatype: tensor.Int32, False: i32(0), True: i32(1)}
}

func testConfig() Config {
	return Config{
		Model: "seq", Name: "seq version 1", MaxBatchSize: 2, Strategy: Direct, Slots: 2, Idle: time.Minute,
		Controls: []Control{
			int32Control(KindStart, "START"), int32Control(KindEnd, "END"), int32Control(KindReady, "READY"),
			{Kind: KindCorrID, Name: "CORRID", Datatype: tensor.Uint64},
		},
	}
}

func request(id inference.CorrelationID, start, end bool, v int32) *inference.Request {
	return &inference.Request{
		ID:       fmt.Sprintf("%s_%d", id, v),
		Inputs:   []tensor.Tensor{{Name: "INPUT", Datatype: tensor.Int32, Shape: []int64{1, 1}, Data: i32(v)}},
		Sequence: inference.Sequence{ID: id, Start: start, End: end},
	}
}

func output(t *testing.T, resp *inference.Response, err error) int32 {
	t.Helper()
	if err != nil {
		t.Fatalf("infer: %v", err)
	}
	return int32Of(&resp.Outputs[0])
}

func newBatcher(t *testing.T, cfg Config, names ...string) *Batcher {
	t.Helper()
	b := New(cfg, names)
	t.Cleanup(func() { b.Close(apierr.Unavailablef("closed")) })
	return b
}

func TestSimpleDynaSequenceArithmetic(t *testing.T) {
	b := newBatcher(t, testConfig(), "seq_0", "seq_1")
	startWorker(t, b.Instance(0), simpleSequence)
	startWorker(t, b.Instance(1), simpleSequence)
	ctx := context.Background()
	values := []int32{11, 7, 5, 3, 2, 0, 1}
	// Two sequences, interleaved request by request, as Triton's sync
	// example clients send them.
	ids := []uint64{1000, 1001}
	for step := 0; step <= len(values); step++ {
		for k, n := range ids {
			id := inference.NumericID(n)
			v, want := int32(0), int32(1)
			if k == 1 {
				v, want = 100, 101
			}
			if step > 0 {
				v = values[step-1]
				if k == 1 {
					v = -v
				}
				want = v
			}
			last := step == len(values)
			if last {
				want += int32(n)
			}
			resp, err := b.Submit(ctx, request(id, step == 0, last, v), 1)
			if got := output(t, resp, err); got != want {
				t.Fatalf("sequence %d step %d: got %d, want %d", n, step, got, want)
			}
		}
	}
	if open := b.Open(); open != 0 {
		t.Errorf("%d sequences still open after their END", open)
	}
}

func TestEverySequenceKeepsItsInstanceAndOrder(t *testing.T) {
	cfg := testConfig()
	b := newBatcher(t, cfg, "seq_0", "seq_1")
	var workers []*worker
	for k := range 2 {
		workers = append(workers, startGatedWorker(t, b.Instance(k), simpleSequence, make(chan struct{})))
	}
	ctx := context.Background()
	const seqs, steps = 4, 6
	// Every request of every sequence is sent without waiting for the
	// previous one, as a gRPC streaming client does, while the instances
	// are held: the batcher must run each sequence's requests in order,
	// one per batch, on one instance.
	var wg sync.WaitGroup
	errs := make(chan error, seqs*steps)
	queued := 0
	for step := range steps {
		for s := range seqs {
			id := inference.NumericID(uint64(100 + s))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := b.Submit(ctx, request(id, step == 0, step == steps-1, int32(step*10)), 1); err != nil {
					errs <- err
				}
			}()
			queued++
			eventually(t, "the request to be admitted", func() bool { return b.admitted() == queued })
		}
	}
	for _, w := range workers {
		close(w.gate)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	owner := map[uint64]int{}
	for k, w := range workers {
		seen := map[uint64]int32{}
		for _, batch := range w.ran() {
			inBatch := map[uint64]bool{}
			for _, req := range batch {
				n := req.Sequence.ID.N
				if inBatch[n] {
					t.Errorf("sequence %d has two requests in one batch", n)
				}
				inBatch[n] = true
				if o, ok := owner[n]; ok && o != k {
					t.Errorf("sequence %d ran on instances %d and %d", n, o, k)
				}
				owner[n] = k
				v := int32Of(input(req, "INPUT"))
				if last, ok := seen[n]; ok && v <= last {
					t.Errorf("sequence %d: input %d ran after %d", n, v, last)
				}
				seen[n] = v
			}
			if len(batch) > cfg.MaxBatchSize {
				t.Errorf("batch of %d, max %d", len(batch), cfg.MaxBatchSize)
			}
		}
	}
	if len(owner) != seqs {
		t.Errorf("%d sequences ran, want %d", len(owner), seqs)
	}
}

func TestControlEncodings(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBatchSize = 0
	cfg.Slots = 1
	cfg.Controls = []Control{
		{Kind: KindStart, Name: "S", Datatype: tensor.FP32, False: f32(0.5), True: f32(2)},
		{Kind: KindEnd, Name: "E", Datatype: tensor.Bool, False: []byte{0}, True: []byte{1}},
		{Kind: KindReady, Name: "R", Datatype: tensor.Int32, False: i32(-1), True: i32(7)},
		{Kind: KindCorrID, Name: "C", Datatype: tensor.Bytes},
	}
	b := newBatcher(t, cfg, "m_0")
	var got []*inference.Request
	var mu sync.Mutex
	startWorker(t, b.Instance(0), func(req *inference.Request) *inference.Response {
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		return &inference.Response{}
	})
	ctx := context.Background()
	id := inference.StringID("abc-uuid")
	for _, r := range []*inference.Request{request(id, true, false, 1), request(id, false, true, 2)} {
		r.Inputs[0].Shape = []int64{1}
		if _, err := b.Submit(ctx, r, 1); err != nil {
			t.Fatal(err)
		}
	}
	want := []struct{ s, e []byte }{{f32(2), []byte{0}}, {f32(0.5), []byte{1}}}
	for k, req := range got {
		s, e, r, c := input(req, "S"), input(req, "E"), input(req, "R"), input(req, "C")
		if string(s.Data) != string(want[k].s) || string(e.Data) != string(want[k].e) || int32Of(r) != 7 {
			t.Errorf("request %d: START %v END %v READY %v", k, s.Data, e.Data, r.Data)
		}
		if c.Datatype != tensor.Bytes || string(c.Data) != string(tensor.AppendBytesElement(nil, []byte("abc-uuid"))) {
			t.Errorf("request %d: CORRID %v %q", k, c.Datatype, c.Data)
		}
		if len(s.Shape) != 1 || s.Shape[0] != 1 {
			t.Errorf("control shape %v, want [1] for a model without batching", s.Shape)
		}
	}
}

func f32(v float32) []byte {
	return binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
}

func TestTritonErrors(t *testing.T) {
	cfg := testConfig()
	b := newBatcher(t, cfg, "seq_0")
	startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	for _, tc := range []struct {
		req  *inference.Request
		size int
		code apierr.Code
		want string
	}{
		{request(inference.NumericID(0), true, false, 1), 1, apierr.InvalidArgument,
			"inference request to model 'seq' must specify a non-zero or non-empty correlation ID"},
		{request(inference.StringID(""), true, false, 1), 1, apierr.InvalidArgument,
			"inference request to model 'seq' must specify a non-zero or non-empty correlation ID"},
		{request(inference.NumericID(5), true, false, 1), 2, apierr.InvalidArgument,
			"inference request to model 'seq' must specify batch-size 1 due to requirements of sequence batcher"},
		{request(inference.NumericID(42), false, false, 1), 1, apierr.InvalidArgument,
			"inference request for sequence 42 to model 'seq' must specify the START flag on the first request of the sequence"},
		{request(inference.StringID("s"), true, false, 1), 1, apierr.InvalidArgument,
			"[request id: s_1] sequence batching control 'CORRID' data-type is 'TYPE_STRING', but model 'seq' expects 'TYPE_UINT64'"},
	} {
		_, err := b.Submit(ctx, tc.req, tc.size)
		if err == nil || apierr.CodeOf(err) != tc.code || err.Error() != tc.want {
			t.Errorf("error %v (%v), want %v %q", err, apierr.CodeOf(err), tc.code, tc.want)
		}
	}
	// An ended sequence needs a new START.
	id := inference.NumericID(7)
	if _, err := b.Submit(ctx, request(id, true, true, 1), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Submit(ctx, request(id, false, false, 1), 1); err == nil || !strings.Contains(err.Error(), "must specify the START flag") {
		t.Errorf("request after END: %v", err)
	}
}

func TestBacklogAndBound(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBatchSize, cfg.Slots, cfg.MaxBacklog = 0, 1, 1
	b := newBatcher(t, cfg, "seq_0")
	startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	a, bb, c := inference.NumericID(1), inference.NumericID(2), inference.NumericID(3)
	if _, err := b.Submit(ctx, request(a, true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	// B waits in the backlog for A's slot.
	res := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(bb, true, false, 1), 1)
		res <- err
	}()
	eventually(t, "B in the backlog", func() bool { return b.Open() == 2 })
	_, err := b.Submit(ctx, request(c, true, false, 1), 1)
	if apierr.CodeOf(err) != apierr.ResourceExhausted || apierr.HTTPStatus(err) != 503 ||
		!strings.Contains(err.Error(), "all 1 sequence slots are busy and 1 sequences already wait for one") {
		t.Errorf("third START: %v", err)
	}
	select {
	case err := <-res:
		t.Fatalf("B ran while A held the only slot: %v", err)
	default:
	}
	if _, err := b.Submit(ctx, request(a, false, true, 1), 1); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("B after A ended: %v", err)
	}
}

func TestIdleSequenceIsReleased(t *testing.T) {
	cfg := testConfig()
	cfg.Idle = 30 * time.Millisecond
	b := newBatcher(t, cfg, "seq_0")
	startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	id := inference.NumericID(9)
	if _, err := b.Submit(ctx, request(id, true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the idle sequence to be released", func() bool { return b.Open() == 0 })
	_, err := b.Submit(ctx, request(id, false, false, 1), 1)
	if err == nil || !strings.Contains(err.Error(), "inference request for sequence 9 to model 'seq' must specify the START flag") {
		t.Errorf("after idle: %v", err)
	}
}

func TestLostSequence(t *testing.T) {
	cfg := testConfig()
	b := newBatcher(t, cfg, "acc_0", "acc_1")
	w0 := startWorker(t, b.Instance(0), simpleSequence)
	w1 := startWorker(t, b.Instance(1), simpleSequence)
	ctx := context.Background()
	id := inference.NumericID(42)
	if _, err := b.Submit(ctx, request(id, true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	holder, hw := b.Instance(0), w0
	if len(w0.ran()) == 0 {
		holder, hw = b.Instance(1), w1
	}
	// The holder's process dies.
	hw.die("died (killed by signal SIGKILL)")
	_, err := b.Submit(ctx, request(id, false, false, 2), 1)
	want := "sequence 42 was lost: instance " + holder.name + " died (killed by signal SIGKILL)"
	if err == nil || err.Error() != want || apierr.HTTPStatus(err) != 503 {
		t.Fatalf("next request: %v, want 503 %q", err, want)
	}
	// Again: a lost sequence never continues elsewhere.
	if _, err := b.Submit(ctx, request(id, false, true, 2), 1); err == nil || err.Error() != want {
		t.Fatalf("second request: %v", err)
	}
	// A new START of the same ID starts over.
	resp, err := b.Submit(ctx, request(id, true, false, 5), 1)
	if got := output(t, resp, err); got != 6 {
		t.Errorf("restarted sequence: %d, want 6", got)
	}
}

func TestLostWhileWaiting(t *testing.T) {
	cfg := testConfig()
	b := newBatcher(t, cfg, "acc_0")
	w := startGatedWorker(t, b.Instance(0), simpleSequence, make(chan struct{}))
	ctx := context.Background()
	id := inference.NumericID(8)
	first := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(id, true, false, 1), 1)
		first <- err
	}()
	eventually(t, "the first request to run", func() bool { return b.Len() == 0 && b.Open() == 1 })
	second := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(id, false, false, 2), 1)
		second <- err
	}()
	eventually(t, "the second request to wait", func() bool { return b.Len() == 1 })
	w.die("died (exit code 1)")
	if err := <-second; err == nil || !strings.Contains(err.Error(), "sequence 8 was lost: instance acc_0 died (exit code 1)") {
		t.Errorf("waiting request: %v", err)
	}
	close(w.gate)
	<-first
}

func TestImplicitState(t *testing.T) {
	cfg := testConfig()
	cfg.Controls = cfg.Controls[:1] // START only
	cfg.States = []State{{Input: "STATE_IN", Output: "STATE_OUT", Datatype: tensor.Int32, Dims: []int64{1}, InitialDims: []int64{1}, InitialData: i32(100)}}
	b := newBatcher(t, cfg, "acc_0")
	// An accumulator: OUTPUT = STATE_OUT = STATE_IN + INPUT.
	startWorker(t, b.Instance(0), func(req *inference.Request) *inference.Response {
		sum := int32Of(input(req, "STATE_IN")) + int32Of(input(req, "INPUT"))
		return &inference.Response{Outputs: []tensor.Tensor{
			{Name: "OUTPUT", Datatype: tensor.Int32, Shape: []int64{1, 1}, Data: i32(sum)},
			{Name: "STATE_OUT", Datatype: tensor.Int32, Shape: []int64{1, 1}, Data: i32(sum)},
		}}
	})
	ctx := context.Background()
	x, y := inference.NumericID(1), inference.NumericID(2)
	steps := []struct {
		id    inference.CorrelationID
		start bool
		v     int32
		want  int32
	}{{x, true, 1, 101}, {y, true, 5, 105}, {x, false, 2, 103}, {y, false, 5, 110}, {x, false, 3, 106}, {x, true, 1, 101}}
	for _, s := range steps {
		req := request(s.id, s.start, false, s.v)
		req.Outputs = []inference.RequestedOutput{{Name: "OUTPUT"}}
		resp, err := b.Submit(ctx, req, 1)
		if got := output(t, resp, err); got != s.want {
			t.Errorf("sequence %s input %d: got %d, want %d", s.id, s.v, got, s.want)
		}
		if len(resp.Outputs) != 1 {
			t.Errorf("state output reached the client: %v", resp.Outputs)
		}
	}
}

func TestOldestBatchesAcrossSequences(t *testing.T) {
	cfg := testConfig()
	cfg.Strategy, cfg.Slots, cfg.MaxBatchSize = Oldest, 8, 4
	cfg.MaxDelay = 5 * time.Second // only a full or preferred batch goes early
	cfg.Preferred = []int{4}
	b := newBatcher(t, cfg, "dyna_0")
	w := startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	var wg sync.WaitGroup
	for n := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Submit(ctx, request(inference.NumericID(uint64(10+n)), true, false, 1), 1); err != nil {
				t.Error(err)
			}
		}()
		// The first three are held back for a preferred batch.
		if n < 3 {
			eventually(t, "the request to be pending", func() bool { return b.Len() == n+1 })
		}
	}
	wg.Wait()
	batches := w.ran()
	if len(batches) != 1 || len(batches[0]) != 4 {
		t.Fatalf("batches %d (first of %d), want one batch of 4", len(batches), len(batches[0]))
	}
}

func TestDrainRefusesNewSequences(t *testing.T) {
	b := newBatcher(t, testConfig(), "seq_0")
	startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	id := inference.NumericID(3)
	if _, err := b.Submit(ctx, request(id, true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	b.Drain()
	_, err := b.Submit(ctx, request(inference.NumericID(4), true, false, 1), 1)
	if err == nil || apierr.HTTPStatus(err) != 503 || err.Error() != "Server is stopping, scheduler for model has stopped accepting new inference requests" {
		t.Errorf("START while draining: %v", err)
	}
	if _, err := b.Submit(ctx, request(id, false, true, 1), 1); err != nil {
		t.Errorf("open sequence while draining: %v", err)
	}
}

func TestReportOpenSequences(t *testing.T) {
	cfg := testConfig()
	var mu sync.Mutex
	open := map[string]int{}
	cfg.Report = func(in string, n, slots int) {
		mu.Lock()
		open[in] = n
		mu.Unlock()
		if slots != 2 {
			t.Errorf("slots %d, want 2", slots)
		}
	}
	b := newBatcher(t, cfg, "seq_0")
	startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	if _, err := b.Submit(ctx, request(inference.NumericID(1), true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := open["seq_0"]
	mu.Unlock()
	if got != 1 {
		t.Errorf("reported %d open, want 1", got)
	}
	if _, err := b.Submit(ctx, request(inference.NumericID(1), false, true, 1), 1); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got = open["seq_0"]
	mu.Unlock()
	if got != 0 {
		t.Errorf("reported %d open after END, want 0", got)
	}
}

// admitted counts the requests the batcher holds: waiting or running.
func (b *Batcher) admitted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.seqs {
		n += len(s.pending)
		if s.running {
			n++
		}
	}
	for _, in := range b.instances {
		for _, s := range in.slots {
			if s != nil && b.seqs[s.id] != s && s.running {
				n++
			}
		}
	}
	return n
}

func TestCorrIDEncodings(t *testing.T) {
	big := inference.NumericID(1<<40 + 7)
	for _, tc := range []struct {
		d    tensor.Datatype
		id   inference.CorrelationID
		want []byte
	}{
		{tensor.Uint64, big, binary.LittleEndian.AppendUint64(nil, 1<<40+7)},
		{tensor.Int64, big, binary.LittleEndian.AppendUint64(nil, 1<<40+7)},
		{tensor.Uint32, big, binary.LittleEndian.AppendUint32(nil, 7)}, // the low 32 bits, as in Triton
		{tensor.Int32, big, binary.LittleEndian.AppendUint32(nil, 7)},
		{tensor.Bytes, big, tensor.AppendBytesElement(nil, []byte("1099511627783"))},
		{tensor.Bytes, inference.StringID("x-1"), tensor.AppendBytesElement(nil, []byte("x-1"))},
	} {
		if got := corrIDData(tc.d, tc.id); string(got) != string(tc.want) {
			t.Errorf("%s %s: %v, want %v", tc.d, tc.id, got, tc.want)
		}
	}
}

func TestDirectMinimumSlotUtilization(t *testing.T) {
	cfg := testConfig()
	cfg.MaxDelay, cfg.MinSlotUtilization = time.Minute, 1.0 // wait for both slots
	b := newBatcher(t, cfg, "seq_0")
	w := startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(inference.NumericID(1), true, false, 1), 1)
		first <- err
	}()
	eventually(t, "the first request to wait", func() bool { return b.Len() == 1 })
	if _, err := b.Submit(ctx, request(inference.NumericID(2), true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := w.ran(); len(got) != 1 || len(got[0]) != 2 {
		t.Fatalf("batches %v, want one batch of both slots", got)
	}
}

// TestLateNewsOfAnEndKeepsTheNextProcessSequences covers a restart whose new
// process takes a sequence before the old process's end is reported: only
// the old process's sequences are lost.
func TestLateNewsOfAnEndKeepsTheNextProcessSequences(t *testing.T) {
	b := newBatcher(t, testConfig(), "acc_0")
	w := startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()
	old, fresh := inference.NumericID(1), inference.NumericID(2)
	if _, err := b.Submit(ctx, request(old, true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.endGen() // the process ends ...
	w.gen, w.endGen = context.WithCancel(w.root)
	w.mu.Unlock()
	eventually(t, "the next process to attach", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.instances[0].liveLocked()
	})
	if _, err := b.Submit(ctx, request(fresh, true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	b.Instance(0).GenerationEnded("died (killed by signal SIGKILL)") // ... and only now is it reported
	if _, err := b.Submit(ctx, request(old, false, false, 1), 1); err == nil || !strings.Contains(err.Error(), "sequence 1 was lost") {
		t.Errorf("old process's sequence: %v", err)
	}
	if _, err := b.Submit(ctx, request(fresh, false, true, 1), 1); err != nil {
		t.Errorf("new process's sequence: %v", err)
	}
}

// oldest's fields, from config.pbtxt to behaviour: max_candidate_sequences
// is how many sequences an instance holds (the next START waits for one to
// end), preferred_batch_size sends a batch as soon as it is reached, and
// max_queue_delay_microseconds bounds how long a smaller batch waits.
func TestOldestConfigFields(t *testing.T) {
	mc, err := modelconfig.ParseConfig([]byte(`name: "dyna" backend: "python" max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  max_sequence_idle_microseconds: 60000000
  oldest { max_candidate_sequences: 2 preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 500000 }
  control_input [ { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] } ]
}`), "config.pbtxt")
	if err != nil {
		t.Fatal(err)
	}
	cfg := FromModel(&modelconfig.Model{Name: "dyna", Config: mc}, "dyna version 1", 8, nil)
	if cfg.Strategy != Oldest || cfg.Slots != 2 || len(cfg.Preferred) != 1 || cfg.Preferred[0] != 2 || cfg.MaxDelay != 500*time.Millisecond {
		t.Fatalf("FromModel = strategy %v slots %d preferred %v delay %v", cfg.Strategy, cfg.Slots, cfg.Preferred, cfg.MaxDelay)
	}
	b := newBatcher(t, cfg, "dyna_0")
	w := startWorker(t, b.Instance(0), simpleSequence)
	ctx := context.Background()

	// One request alone waits for the delay, then goes by itself.
	began := time.Now()
	if _, err := b.Submit(ctx, request(inference.NumericID(1), true, false, 1), 1); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited < cfg.MaxDelay {
		t.Errorf("a lone request went after %v, before max_queue_delay %v", waited, cfg.MaxDelay)
	}
	// Two ready sequences make a preferred batch: one batch of both.
	var wg sync.WaitGroup
	for _, id := range []inference.CorrelationID{inference.NumericID(1), inference.NumericID(2)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Submit(ctx, request(id, id.N == 2, false, 2), 1); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := w.ran(); len(got) != 2 || len(got[1]) != 2 {
		t.Fatalf("batches %v, want the lone request, then one batch of two", got)
	}
	// Both candidate places are taken: a third sequence waits until one ends.
	res := make(chan error, 1)
	go func() {
		_, err := b.Submit(ctx, request(inference.NumericID(3), true, true, 3), 1)
		res <- err
	}()
	eventually(t, "sequence 3 in the backlog", func() bool { return b.Open() == 3 })
	select {
	case err := <-res:
		t.Fatalf("a third sequence ran with max_candidate_sequences 2: %v", err)
	case <-time.After(2 * cfg.MaxDelay):
	}
	if _, err := b.Submit(ctx, request(inference.NumericID(1), false, true, 4), 1); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("sequence 3 after 1 ended: %v", err)
	}
}
