package instance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// Calls serves what the instance's model asks of the server: BLS requests
// and model control. The model manager implements it.
type Calls interface {
	// Call runs a request the model made (InferenceRequest.exec). Its
	// Callers name the chain of models it came through, this one last.
	Call(ctx context.Context, req *inference.Request) (*inference.Response, error)
	// Control loads, unloads or checks a model (pb_utils.load_model,
	// unload_model, is_model_ready); ready is is_model_ready's answer.
	Control(ctx context.Context, req ControlRequest) (ready bool, err error)
}

// ControlRequest is one model-control request from a model.
type ControlRequest struct {
	Op               string // "load", "unload" or "ready"
	Name             string
	Version          string
	Config           string
	Files            map[string][]byte
	UnloadDependents bool
	// Caller is the model that asked.
	Caller string
}

// callScope is what the BLS calls a batch makes inherit from it: they are
// cancelled when every client of the batch has gone, and they carry the
// batch's chain of callers.
type callScope struct {
	clients context.Context
	chain   []string
}

type scopeKey struct{}

// scopeFor builds the scope of a batch: its clients' contexts and the union
// of its requests' caller chains, with the model itself last. release
// frees what watching the clients took.
func scopeFor(model string, batch []*scheduler.Task) (callScope, func()) {
	var chain []string
	for _, t := range batch {
		for _, c := range t.Req.Callers {
			if !slices.Contains(chain, c) {
				chain = append(chain, c)
			}
		}
	}
	if !slices.Contains(chain, model) {
		chain = append(chain, model)
	}
	if len(batch) == 1 {
		return callScope{clients: batch[0].Context(), chain: chain}, func() {}
	}
	// The batch's calls end when its last client has gone.
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	left := len(batch)
	stops := make([]func() bool, 0, len(batch))
	for _, t := range batch {
		stops = append(stops, context.AfterFunc(t.Context(), func() {
			mu.Lock()
			left--
			last := left == 0
			mu.Unlock()
			if last {
				cancel()
			}
		}))
	}
	return callScope{clients: ctx, chain: chain}, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// stubCalls is the handler of one generation's stub connection.
type stubCalls struct {
	i *Instance
}

var _ ipc.Handler = stubCalls{}

// Infer runs a BLS call on a goroutine of the instance (Stop waits for it).
func (h stubCalls) Infer(call *ipc.Call) {
	i := h.i
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		resp, err := i.runCall(call)
		call.Respond(resp, err, true)
	}()
}

// Control runs a model-control request on a goroutine of the instance.
func (h stubCalls) Control(cc *ipc.ControlCall) {
	i := h.i
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		ready, err := i.cfg.Calls.Control(i.ctx, ControlRequest{Op: cc.Op, Name: cc.Name, Version: cc.Version,
			Config: cc.Config, Files: cc.Files, UnloadDependents: cc.UnloadDependents, Caller: i.cfg.Key.Model})
		cc.Respond(ready, err)
	}()
}

// runCall runs one BLS call under its batch's scope: it ends when the
// stub cancels it or goes, when the batch's clients have all gone, or at
// the call's timeout.
func (i *Instance) runCall(call *ipc.Call) (*inference.Response, error) {
	ctx := call.Context()
	req := call.Request
	var scope callScope
	if call.Parent != nil {
		scope, _ = call.Parent.Value(scopeKey{}).(callScope)
	}
	if scope.clients != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(scope.clients, cancel)()
		req.Callers = scope.chain
	} else {
		// A call from a thread the model started, outside any batch.
		req.Callers = []string{i.cfg.Key.Model}
	}
	if call.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, call.Timeout)
		defer cancel()
	}
	resp, err := i.cfg.Calls.Call(ctx, req)
	if err != nil && call.Timeout > 0 && errors.Is(err, context.DeadlineExceeded) && call.Context().Err() == nil {
		return nil, &apierr.Error{Code: apierr.DeadlineExceeded, Err: err,
			Msg: fmt.Sprintf("BLS call to model %s timed out: its timeout of %s passed", req.Model, call.Timeout)}
	}
	return resp, err
}
