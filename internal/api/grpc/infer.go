package grpc

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	pb "github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// maxStreamInFlight bounds the requests one ModelStreamInfer stream runs at
// once. When it is reached the stream stops reading, and gRPC flow control
// pushes back on the client.
const maxStreamInFlight = 64

// ModelInfer runs one inference.
func (svc *inferenceService) ModelInfer(ctx context.Context, in *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	file := svc.s.codec.requestFile(in) // files.go
	req, err := requestFromProto(in)
	if err != nil {
		file.End(false)
		return nil, toStatus(err)
	}
	file.ShareInputs(req.Inputs, sharedmemory.ShareThreshold)
	resp, err := svc.s.models.Infer(ctx, req)
	if err != nil {
		file.End(false)
		svc.s.log.Debug("grpc infer failed", logKeyModel, req.Model, logKeyErr, err)
		if errors.Is(err, model.ErrDecoupled) {
			// Triton's wording first, then what to do instead.
			err = apierr.Wrap(apierr.CodeOf(err), err, "ModelInfer RPC doesn't support models with decoupled transaction policy")
		}
		return nil, toStatus(err)
	}
	out := responseToProto(req, resp)
	svc.s.codec.passResponseFile(out, file)
	return out, nil
}

// ModelStreamInfer runs each request on the stream and sends every
// response the model gives it: one for a default-mode model, 0..N for a
// decoupled one, in the order the model sends them. Requests run
// concurrently, so responses of different requests interleave; each
// carries its request's id and the response parameter
// triton_final_response, true on the request's last response. A decoupled
// model's flag-only FINAL is sent as an empty response only when the
// request sets triton_enable_empty_final_response. A failed request is
// answered with error_message and the stream stays open.
//
// When the client cancels the stream or its deadline passes, every request
// in flight is cancelled: the model sees request.is_cancelled() become
// True. The stream ends OK after the client closes its side and every
// response was sent. When the server stops, the stream stops taking
// requests, sends the responses of those in flight and ends UNAVAILABLE;
// requests the client sent after that get no response, which the status
// tells it.
func (svc *inferenceService) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	ctx := stream.Context()
	st := &streamState{}
	var sendMu sync.Mutex // grpc forbids concurrent SendMsg
	send := func(out *pb.ModelStreamInferResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(out)
	}
	slots := make(chan struct{}, maxStreamInFlight)
	recvErr := make(chan error, 1)
	var order sequenceOrder

	// The receiver outlives this handler by a moment: a blocked Recv only
	// returns once grpc tears the stream down, after the handler returned.
	// The Server waits for it in GracefulStop; handlers only run before that.
	svc.s.wg.Add(1)
	go func() {
		defer svc.s.wg.Done()
		for {
			slots <- struct{}{}
			in, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if !st.start() {
				return // the handler is finishing; see the doc comment
			}
			prev, done := order.enter(in)
			go func() {
				defer st.inflight.Done()
				defer func() { <-slots }()
				defer done()
				if prev != nil {
					select {
					case <-prev:
					case <-ctx.Done():
					}
				}
				svc.streamInferOne(ctx, in, send)
			}()
		}
	}()

	select {
	case err := <-recvErr:
		st.finish()
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-svc.s.stopping.Done():
		st.finish()
		return status.Error(codes.Unavailable, "server is shutting down")
	}
}

// Response parameters and request parameters of Triton's decoupled
// streaming.
const (
	paramFinalResponse      = "triton_final_response"
	paramEnableEmptyFinal   = "triton_enable_empty_final_response"
	reservedParameterPrefix = "triton_"
)

// streamInferOne runs one request of a stream and sends its responses.
// Failures become error_message responses with the request's model,
// version and id so the client can match them.
func (svc *inferenceService) streamInferOne(ctx context.Context, in *pb.ModelInferRequest, send func(*pb.ModelStreamInferResponse) error) {
	header := func(final bool) *pb.ModelInferResponse {
		return &pb.ModelInferResponse{
			ModelName:    in.GetModelName(),
			ModelVersion: in.GetModelVersion(),
			Id:           in.GetId(),
			Parameters:   finalParam(final),
		}
	}
	sendErr := func(err error, final bool) error {
		svc.s.log.Debug("grpc stream infer failed", logKeyModel, in.GetModelName(), logKeyErr, err)
		return send(&pb.ModelStreamInferResponse{ErrorMessage: err.Error(), InferResponse: header(final)})
	}
	// Each response that carries outputs in the request's file, if any,
	// takes a reference of its own (passResponseFile), released once the
	// transport has written those outputs; the request's ends with it.
	file := svc.s.codec.requestFile(in)
	answered := false
	defer func() { file.End(answered) }()
	req, err := requestFromProto(in)
	if err != nil {
		_ = sendErr(err, true)
		return
	}
	file.ShareInputs(req.Inputs, sharedmemory.ShareThreshold)
	emptyFinal, err := takeEmptyFinal(req)
	if err != nil {
		_ = sendErr(err, true)
		return
	}
	sent := false
	var sendFailed error
	err = svc.s.models.InferStream(ctx, req, func(rep model.Reply) error {
		sent = true
		var err error
		switch {
		case rep.Err != nil:
			err = sendErr(rep.Err, rep.Final)
		case rep.Response != nil:
			out := responseToProto(req, rep.Response)
			if out.Parameters == nil {
				out.Parameters = make(map[string]*pb.InferParameter, 1)
			}
			out.Parameters[paramFinalResponse] = boolParam(rep.Final)
			svc.s.codec.passResponseFile(out, file.Ref())
			err = send(&pb.ModelStreamInferResponse{InferResponse: out})
		case rep.Final && emptyFinal:
			err = send(&pb.ModelStreamInferResponse{InferResponse: header(true)})
		}
		if err != nil {
			sendFailed = err
			return streamGone(err)
		}
		return nil
	})
	answered = err == nil
	if err == nil || sent || sendFailed != nil || ctx.Err() != nil {
		return // answered, or nobody is listening any more
	}
	_ = sendErr(err, true)
}

// streamGone is the error that ends a streamed request whose response the
// stream did not take. The server sets no send size limit, so a failed send
// means the stream or its transport has ended: the client went away, which
// ends the request as cancelled (as generate_stream's event stream does),
// whichever of the two the server sees first.
func streamGone(err error) error {
	return apierr.Wrap(apierr.Cancelled, err, "the client went away: sending on the stream")
}

// takeEmptyFinal removes triton_enable_empty_final_response from the
// request's parameters and returns it; it must be a bool_param. Other
// parameters starting with triton_ are reserved, as in Triton.
func takeEmptyFinal(req *inference.Request) (bool, error) {
	var on bool
	for k, v := range req.Parameters {
		if !strings.HasPrefix(k, reservedParameterPrefix) {
			continue
		}
		if k != paramEnableEmptyFinal {
			return false, apierr.New(apierr.InvalidArgument,
				"parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys starting with 'triton_' are allowed: %s", paramEnableEmptyFinal)
		}
		b, ok := v.(bool)
		if !ok {
			return false, apierr.New(apierr.InvalidArgument, "invalid value type for '%s' parameter, expected bool_param.", paramEnableEmptyFinal)
		}
		on = b
	}
	delete(req.Parameters, paramEnableEmptyFinal)
	return on, nil
}

func finalParam(final bool) map[string]*pb.InferParameter {
	return map[string]*pb.InferParameter{paramFinalResponse: boolParam(final)}
}

func boolParam(b bool) *pb.InferParameter {
	return &pb.InferParameter{ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: b}}
}

// streamState tracks a stream's in-flight requests so that the handler can
// stop new ones and wait for the rest without racing the receiver.
type streamState struct {
	mu       sync.Mutex
	finished bool
	inflight sync.WaitGroup
}

// start registers a request; false once finish began.
func (st *streamState) start() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.finished {
		return false
	}
	st.inflight.Add(1)
	return true
}

// finish refuses new requests and waits for those in flight.
func (st *streamState) finish() {
	st.mu.Lock()
	st.finished = true
	st.mu.Unlock()
	st.inflight.Wait()
}
