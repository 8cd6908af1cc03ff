package grpc

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// maxStreamInFlight bounds the requests one ModelStreamInfer stream runs at
// once. When it is reached the stream stops reading, and gRPC flow control
// pushes back on the client.
const maxStreamInFlight = 64

// ModelInfer runs one inference.
func (svc *inferenceService) ModelInfer(ctx context.Context, in *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	req, err := requestFromProto(in)
	if err != nil {
		return nil, toStatus(err)
	}
	resp, err := svc.s.models.Infer(ctx, req)
	if err != nil {
		svc.s.log.Debug("grpc infer failed", logKeyModel, req.Model, logKeyErr, err)
		return nil, toStatus(err)
	}
	return responseToProto(req, resp), nil
}

// ModelStreamInfer answers each request on the stream with one response
// (models are not decoupled). Requests run concurrently, so responses may
// come back in a different order; each carries its request's id. A failed
// request is answered with error_message and the stream stays open.
//
// The stream ends OK after the client closes its side and every response
// was sent. When the server stops, the stream stops taking requests, sends
// the responses of those in flight and ends UNAVAILABLE; requests the client
// sent after that get no response, which the status tells it.
func (svc *inferenceService) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	ctx := stream.Context()
	st := &streamState{}
	var sendMu sync.Mutex // grpc forbids concurrent SendMsg
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
				out := svc.streamInferOne(ctx, in)
				sendMu.Lock()
				err := stream.Send(out)
				sendMu.Unlock()
				if err != nil {
					svc.s.log.Debug("grpc stream send failed", logKeyModel, in.GetModelName(), logKeyErr, err)
				}
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

// streamInferOne runs one request of a stream. Failures become the
// response's error_message, with the request's model, version and id so the
// client can match the answer.
func (svc *inferenceService) streamInferOne(ctx context.Context, in *pb.ModelInferRequest) *pb.ModelStreamInferResponse {
	fail := func(err error) *pb.ModelStreamInferResponse {
		svc.s.log.Debug("grpc stream infer failed", logKeyModel, in.GetModelName(), logKeyErr, err)
		return &pb.ModelStreamInferResponse{
			ErrorMessage: err.Error(),
			InferResponse: &pb.ModelInferResponse{
				ModelName:    in.GetModelName(),
				ModelVersion: in.GetModelVersion(),
				Id:           in.GetId(),
			},
		}
	}
	req, err := requestFromProto(in)
	if err != nil {
		return fail(err)
	}
	resp, err := svc.s.models.Infer(ctx, req)
	if err != nil {
		return fail(err)
	}
	return &pb.ModelStreamInferResponse{InferResponse: responseToProto(req, resp)}
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
