package model

import (
	"context"
	"errors"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Reply is one response of a streamed request, or its end; see
// scheduler.Reply.
type Reply = scheduler.Reply

// errStopEmit stops a stream whose first reply says its version was
// replaced, so that the replacement can serve it.
var errStopEmit = errors.New("retry on the replacement version")

// InferStream checks a request against the model's configuration, runs it,
// and passes each response to emit, on the calling goroutine, in the order
// the model sends them; the last Reply has Final set. It works for every
// model: a default-mode model gives one response, a decoupled one 0..N.
// An error returned before anything was emitted means the request was
// refused (unknown model, bad input, no instance); after that, errors
// arrive as Replies, except when ctx ends or emit fails: InferStream then
// returns that error and the model sees the request cancelled.
func (m *Manager) InferStream(ctx context.Context, req *inference.Request, emit func(Reply) error) error {
	v, err := m.resolve(req.Model, req.Version)
	if err != nil {
		return err
	}
	start := time.Now()
	key := v.key
	var st streamTally
	err = m.streamOn(ctx, v, req, emit, &st)
	if errors.Is(err, errStopEmit) {
		if next, rerr := m.resolve(req.Model, req.Version); rerr != nil {
			err = rerr
		} else if next != v {
			err = m.streamOn(ctx, next, req, emit, &st)
		} else {
			err = st.finalErr
		}
	}
	outcome := err
	if outcome == nil {
		outcome = st.finalErr
	}
	m.metrics.observe(key.Model, key.Version, start, outcome)
	m.metrics.observeStream(key.Model, key.Version, st.responses, outcome)
	return err
}

// streamTally is what a stream has sent so far.
type streamTally struct {
	emitted   int // replies passed to emit
	responses int // of them, replies with a response
	finalErr  error
}

func (m *Manager) streamOn(ctx context.Context, v *version, req *inference.Request, emit func(Reply) error, st *streamTally) error {
	if v.seq != nil {
		return m.streamSequence(ctx, v, req, emit, st)
	}
	r := *req
	r.Inputs = append([]tensor.Tensor(nil), req.Inputs...)
	cfg := v.spec.Config
	size, err := checkRequest(cfg, &r, m.cfg.MaxElements)
	if err != nil {
		return err
	}
	return v.queue.Stream(ctx, &r, size, func(rep Reply) error {
		if rep.Final && st.emitted == 0 && errors.Is(rep.Err, errReplaced) {
			return errStopEmit
		}
		if rep.Response != nil {
			if err := m.holdOutputs(v, rep.Response, size); err != nil {
				rep = Reply{Err: err, Final: rep.Final}
			} else if out, err := selectOutputs(v, req, rep.Response); err != nil {
				rep = Reply{Err: err, Final: rep.Final}
			} else {
				rep.Response = out
				st.responses++
			}
		}
		if rep.Final {
			st.finalErr = rep.Err
		}
		st.emitted++
		return emit(rep)
	})
}

// ErrDecoupled is wrapped by the error Infer returns for a decoupled
// model, which may answer with any number of responses.
var ErrDecoupled = errors.New("decoupled transaction policy")

// Decoupled reports whether a model version answers through response
// senders (model_transaction_policy.decoupled), so that a front end can
// refuse it where exactly one response is expected. An empty version means
// the server's choice.
func (m *Manager) Decoupled(name, ver string) (bool, error) {
	spec, err := m.specFor(name, ver)
	if err != nil {
		return false, err
	}
	return spec.Config.GetModelTransactionPolicy().GetDecoupled(), nil
}

// decoupledError is Infer's error for a decoupled model.
func decoupledError(name string) error {
	return &apierr.Error{Code: apierr.Unimplemented, Err: ErrDecoupled, Msg: "model " + name +
		" uses the decoupled transaction policy (any number of responses per request): call it with gRPC ModelStreamInfer or HTTP generate_stream"}
}
