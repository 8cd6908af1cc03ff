package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// stubPID reads a model's first instance PID from the health JSON.
func stubPID(s *vigilServer, model string) (int, error) {
	resp, err := http.Get(s.http + "/readyz?format=json")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var h struct {
		Models []struct {
			Name      string
			Instances []struct{ PID int }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return 0, err
	}
	for _, m := range h.Models {
		if m.Name == model && len(m.Instances) > 0 && m.Instances[0].PID > 0 {
			return m.Instances[0].PID, nil
		}
	}
	return 0, fmt.Errorf("no running instance of %s", model)
}

// watcher follows one health service and timestamps every status it is
// pushed.
type watcher struct {
	updates chan update
	cancel  context.CancelFunc
}

type update struct {
	status healthpb.HealthCheckResponse_ServingStatus
	at     time.Time
}

func watch(ctx context.Context, conn *grpc.ClientConn, service string) (*watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		cancel()
		return nil, err
	}
	w := &watcher{updates: make(chan update, 64), cancel: cancel}
	go func() {
		defer close(w.updates)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			w.updates <- update{m.GetStatus(), time.Now()}
		}
	}()
	return w, nil
}

// until waits for status and returns when it was pushed.
func (w *watcher) until(status healthpb.HealthCheckResponse_ServingStatus, within time.Duration) (time.Time, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case u, ok := <-w.updates:
			if !ok {
				return time.Time{}, fmt.Errorf("watch ended")
			}
			if u.status == status {
				return u.at, nil
			}
		case <-t.C:
			return time.Time{}, fmt.Errorf("no %s within %s", status, within)
		}
	}
}

func measureRecovery(ctx context.Context, s *vigilServer, o options, r *report) error {
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	w, err := watch(ctx, conn, "model/victim")
	if err != nil {
		return err
	}
	defer w.cancel()
	if _, err := w.until(healthpb.HealthCheckResponse_SERVING, 30*time.Second); err != nil {
		return err
	}
	var detect, recover []time.Duration
	for i := 0; i < o.kills; i++ {
		pid, err := stubPID(s, "victim")
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
		down, err := w.until(healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
		if err != nil {
			return fmt.Errorf("kill %d: %w", i, err)
		}
		up, err := w.until(healthpb.HealthCheckResponse_SERVING, 30*time.Second)
		if err != nil {
			return fmt.Errorf("kill %d: %w", i, err)
		}
		detect = append(detect, down.Sub(t0))
		recover = append(recover, up.Sub(t0))
	}
	dd, rd := summarize(detect), summarize(recover)
	r.add("SIGKILL → model NOT_SERVING (gRPC Watch)", dd, target(dd.p99 <= 10*time.Millisecond, "p99 ≤ 10ms"))
	r.add("SIGKILL → model SERVING again (restart + init)", rd, target(rd.p99 <= time.Second, "≤ 1s"))

	// Responsiveness: SIGSTOP against heartbeat_timeout_seconds 0.5 with a
	// 0.1 s ping period.
	pid, err := stubPID(s, "victim")
	if err != nil {
		return err
	}
	t0 := time.Now()
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	down, err := w.until(healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if err != nil {
		return fmt.Errorf("SIGSTOP: %w", err)
	}
	stopped := down.Sub(t0)
	r.add("SIGSTOP → model NOT_SERVING", dist{n: 1, p50: stopped, p99: stopped, max: stopped},
		fmt.Sprintf("limit: heartbeat_timeout 500ms + period 100ms; %.2f× limit", float64(stopped)/float64(600*time.Millisecond)))
	if _, err := w.until(healthpb.HealthCheckResponse_SERVING, 30*time.Second); err != nil {
		return err
	}

	// Progress: a hung execute against execute_timeout_seconds 1.
	t0 = time.Now()
	resp, err := http.Post(s.http+"/v2/models/sleepy/infer", "application/json",
		strings.NewReader(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[60]}]}`))
	if err != nil {
		return err
	}
	resp.Body.Close()
	hung := time.Since(t0)
	r.add("hung execute → 504", dist{n: 1, p50: hung, p99: hung, max: hung},
		fmt.Sprintf("HTTP %d; limit execute_timeout 1s; %.2f× limit", resp.StatusCode, float64(hung)/float64(time.Second)))
	return nil
}
