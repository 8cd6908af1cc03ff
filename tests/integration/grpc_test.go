package integration

import (
	"context"
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

func (s *server) dial() *grpc.ClientConn {
	s.t.Helper()
	conn, err := grpc.NewClient(s.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return conn
}

// nextStatus waits for the next status pushed on a Watch stream.
func nextStatus(t *testing.T, stream healthpb.Health_WatchClient) (healthpb.HealthCheckResponse_ServingStatus, time.Time) {
	t.Helper()
	m, err := stream.Recv()
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	return m.GetStatus(), time.Now()
}

func TestWatchSeesAKilledStubAndItsRecovery(t *testing.T) {
	s := start(t, copyModels(t, "echo"))
	s.waitReady(30 * time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	stream, err := healthpb.NewHealthClient(s.dial()).Watch(ctx, &healthpb.HealthCheckRequest{Service: "model/echo"})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := nextStatus(t, stream); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %s, want SERVING", st)
	}
	pid := s.stubPIDs("echo")[0]
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, at := nextStatus(t, stream)
	if st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after SIGKILL: %s, want NOT_SERVING", st)
	}
	t.Logf("NOT_SERVING pushed %s after SIGKILL", at.Sub(killed))
	if d := at.Sub(killed); d > 2*time.Second {
		t.Errorf("NOT_SERVING took %s", d)
	}
	st, at = nextStatus(t, stream)
	if st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after the restart: %s, want SERVING", st)
	}
	t.Logf("SERVING again %s after SIGKILL", at.Sub(killed))
}

func TestGRPCProbeDuringLoadAndDrain(t *testing.T) {
	s := start(t, copyModels(t, "slow_init"), "--drain-delay", "2s")
	hc := healthpb.NewHealthClient(s.dial())
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	// slow_init takes 1.5 s to initialize: the ports are open, liveness
	// passes, readiness and startup do not.
	if st := check("liveness"); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness while loading: %s", st)
	}
	if st := check("readiness"); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness while loading: %s", st)
	}
	eventually(t, 30*time.Second, "readiness SERVING after load", func() bool {
		return check("readiness") == healthpb.HealthCheckResponse_SERVING
	})
	if st := check("startup"); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("startup after load: %s", st)
	}
	if st := check(""); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf(`service "" after load: %s`, st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "model/nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown service: %v, want NOT_FOUND", err)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 2*time.Second, "readiness NOT_SERVING on drain", func() bool {
		return check("readiness") == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if st := check("liveness"); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness during drain: %s", st)
	}
	// Inference still works during the drain delay.
	inf := inferencepb.NewGRPCInferenceServiceClient(s.dial())
	ictx, icancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer icancel()
	_, err := inf.ModelInfer(ictx, &inferencepb.ModelInferRequest{ModelName: "slow_init",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "INPUT0", Datatype: "FP32", Shape: []int64{1},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{4}}}}})
	if err != nil {
		t.Errorf("infer during drain: %v", err)
	}
}
