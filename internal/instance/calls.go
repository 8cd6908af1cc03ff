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
	// CallStream runs a call made with exec(decoupled=True), passing each
	// response to emit; the last has final set.
	CallStream(ctx context.Context, req *inference.Request, emit func(resp *inference.Response, err error, final bool) error) error
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
		if call.Decoupled {
			i.runStreamCall(call)
			return
		}
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
	ctx, req, done := i.callContext(call)
	defer done()
	resp, err := i.cfg.Calls.Call(ctx, req)
	return resp, i.callError(call, err)
}

// runStreamCall runs a call made with exec(decoupled=True): each response
// goes to the stub as it comes.
func (i *Instance) runStreamCall(call *ipc.Call) {
	ctx, req, done := i.callContext(call)
	defer done()
	err := i.cfg.Calls.CallStream(ctx, req, func(resp *inference.Response, err error, final bool) error {
		if !call.Respond(resp, i.callError(call, err), final) {
			return errors.New("the calling stub is gone")
		}
		return nil
	})
	call.Respond(nil, i.callError(call, err), true) // a no-op after the final response
}

// callError words a timeout of the call's own limit.
func (i *Instance) callError(call *ipc.Call, err error) error {
	if err != nil && call.Timeout > 0 && errors.Is(err, context.DeadlineExceeded) && call.Context().Err() == nil {
		return &apierr.Error{Code: apierr.DeadlineExceeded, Err: err,
			Msg: fmt.Sprintf("BLS call to model %s timed out: its timeout of %s passed", call.Request.Model, call.Timeout)}
	}
	return err
}

// callContext is the context a call runs under and its request with the
// chain of callers set.
func (i *Instance) callContext(call *ipc.Call) (context.Context, *inference.Request, func()) {
	var cleanups []func()
	done := func() {
		for _, f := range cleanups {
			f()
		}
	}
	ctx := call.Context()
	req := call.Request
	var scope callScope
	if call.Parent != nil {
		scope, _ = call.Parent.Value(scopeKey{}).(callScope)
	}
	if scope.clients != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		stop := context.AfterFunc(scope.clients, cancel)
		cleanups = append(cleanups, func() { stop(); cancel() })
		req.Callers = scope.chain
	} else {
		// A call from a thread the model started, outside any batch.
		req.Callers = []string{i.cfg.Key.Model}
	}
	if call.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, call.Timeout)
		cleanups = append(cleanups, cancel)
	}
	return ctx, req, done
}
