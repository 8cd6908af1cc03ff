package probe

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// grpcService is the grpc.health.v1 service that answers the probe's
// question.
func grpcService(r resolved) string {
	switch r.Target {
	case TargetLive:
		return "liveness"
	case TargetReady:
		return "readiness"
	case TargetStartup:
		return "startup"
	}
	return "model/" + r.Model
}

// dialRecorder keeps the last error of the connection's dialer, so a
// failed connection can be explained with a typed error rather than by
// parsing gRPC's status message.
type dialRecorder struct {
	mu  sync.Mutex
	err error
}

func (d *dialRecorder) set(err error) {
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
}

func (d *dialRecorder) get() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func checkGRPC(ctx context.Context, r resolved) Result {
	res := Result{Label: r.label, Addr: r.Addr}
	var rec dialRecorder
	conn, err := grpc.NewClient("passthrough:///"+r.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("vigil-probe"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, r.ConnectTimeout)
			defer cancel()
			c, err := r.Dial(dctx, "tcp", addr)
			rec.set(err)
			return c, err
		}),
	)
	if err != nil {
		res.Outcome, res.Detail = Unknown, oneLine(err.Error())
		return res
	}
	defer conn.Close()

	// Connect first, within the connect timeout, so a server that is not
	// there is told apart from one that does not answer.
	if detail, ok := connect(ctx, conn, &rec, r); !ok {
		res.Outcome, res.Detail = Unknown, detail
		return res
	}

	rctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	svc := grpcService(r)
	resp, err := healthpb.NewHealthClient(conn).Check(rctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		res.Outcome, res.Detail = classifyGRPCError(ctx, r, svc, err)
		return res
	}
	switch resp.GetStatus() {
	case healthpb.HealthCheckResponse_SERVING:
		res.Outcome = Healthy
	default:
		res.Outcome = Unhealthy
		res.Detail = fmt.Sprintf("service %q is %s", svc, resp.GetStatus())
	}
	return res
}

// connect waits for conn to be ready. It returns why not when it is not.
func connect(ctx context.Context, conn *grpc.ClientConn, rec *dialRecorder, r resolved) (string, bool) {
	cctx, cancel := context.WithTimeout(ctx, r.ConnectTimeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return "", true
		case connectivity.TransientFailure, connectivity.Shutdown:
			if err := rec.get(); err != nil {
				return describeDialErr(err, r.ConnectTimeout), false
			}
			// Connected at the TCP level, but the gRPC handshake failed
			// (e.g. not a gRPC server): a fail-fast RPC carries the reason.
			return failFastReason(ctx, conn, r), false
		}
		if !conn.WaitForStateChange(cctx, s) {
			if ctx.Err() != nil {
				return "interrupted: " + ctx.Err().Error(), false
			}
			if err := rec.get(); err != nil {
				return describeDialErr(err, r.ConnectTimeout), false
			}
			return fmt.Sprintf("no connection within %s", r.ConnectTimeout), false
		}
	}
}

func failFastReason(ctx context.Context, conn *grpc.ClientConn, r resolved) string {
	rctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(rctx, &healthpb.HealthCheckRequest{Service: grpcService(r)})
	if err == nil {
		return "connection failed"
	}
	return oneLine(status.Convert(err).Message())
}

// classifyGRPCError maps a failed Check to an outcome. NOT_FOUND for a
// model is an answer (the server has no such model); for the server's own
// services it means the server is not vigil.
func classifyGRPCError(parent context.Context, r resolved, svc string, err error) (Outcome, string) {
	st := status.Convert(err)
	switch st.Code() {
	case codes.NotFound:
		if r.Target == TargetModel {
			return Unhealthy, fmt.Sprintf("the server does not know model %q", r.Model)
		}
		return Unknown, fmt.Sprintf("the server has no health service %q", svc)
	case codes.Unimplemented:
		return Unknown, "the server does not implement grpc.health.v1"
	case codes.DeadlineExceeded, codes.Canceled:
		if parent.Err() != nil {
			return Unknown, "interrupted: " + parent.Err().Error()
		}
		if st.Code() == codes.DeadlineExceeded {
			return Unknown, fmt.Sprintf("no answer within %s", r.Timeout)
		}
	}
	return Unknown, oneLine(fmt.Sprintf("%s: %s", st.Code(), st.Message()))
}
