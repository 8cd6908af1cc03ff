package integration

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

// streamerRequest asks the streamer model for n responses gap apart
// (n < 0: until cancelled), stalling after stallAfter when ≥ 0.
func streamerRequest(id string, n, gapMS, stallAfter int32) *pb.ModelInferRequest {
	in := func(name string, v int32) *pb.ModelInferRequest_InferInputTensor {
		return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "INT32", Shape: []int64{1},
			Contents: &pb.InferTensorContents{IntContents: []int32{v}}}
	}
	r := &pb.ModelInferRequest{ModelName: "streamer", Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{in("N", n), in("GAP_MS", gapMS)}}
	if stallAfter >= 0 {
		r.Inputs = append(r.Inputs, in("STALL_AFTER", stallAfter))
	}
	return r
}

// openStream opens a ModelStreamInfer stream; its messages land in the
// returned channel, which is closed when the stream ends.
func (s *server) openStream(ctx context.Context) (pb.GRPCInferenceService_ModelStreamInferClient, <-chan *pb.ModelStreamInferResponse) {
	s.t.Helper()
	st, err := pb.NewGRPCInferenceServiceClient(s.dial()).ModelStreamInfer(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	ch := make(chan *pb.ModelStreamInferResponse, 1024)
	go func() {
		defer close(ch)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			ch <- m
		}
	}()
	return st, ch
}

// next waits for the next message of a stream.
func next(t *testing.T, ch <-chan *pb.ModelStreamInferResponse, within time.Duration) *pb.ModelStreamInferResponse {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("the stream ended")
		}
		return m
	case <-time.After(within):
		t.Fatalf("no stream message within %s", within)
	}
	return nil
}

func outValue(m *pb.ModelStreamInferResponse) int32 {
	raw := m.GetInferResponse().GetRawOutputContents()
	if len(raw) == 0 || len(raw[0]) < 4 {
		return -1
	}
	return int32(binary.LittleEndian.Uint32(raw[0]))
}

func TestStubDeathEndsEveryOpenStreamAtOnce(t *testing.T) {
	s := start(t, copyModels(t, "streamer"))
	s.waitReady(30 * time.Second)
	ctx := ctxTimeout(t, time.Minute)
	var chans []<-chan *pb.ModelStreamInferResponse
	for _, id := range []string{"a", "b"} {
		st, ch := s.openStream(ctx)
		if err := st.Send(streamerRequest(id, -1, 10, -1)); err != nil {
			t.Fatal(err)
		}
		if m := next(t, ch, 10*time.Second); m.GetErrorMessage() != "" {
			t.Fatalf("stream %s: %s", id, m.GetErrorMessage())
		}
		chans = append(chans, ch)
	}
	if r := s.healthJSON(); !strings.Contains(string(s.get("/readyz?format=json").Body), `"open_streams":2`) {
		t.Errorf("readyz JSON does not show 2 open streams: %v", r)
	}
	pids := s.stubPIDs("streamer")
	if len(pids) != 1 {
		t.Fatalf("stub pids %v", pids)
	}
	killed := time.Now()
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		for {
			m := next(t, ch, 5*time.Second)
			if m.GetErrorMessage() == "" {
				continue // a response sent before the kill
			}
			want := "instance streamer_0 died while streaming: killed by signal SIGKILL"
			if !strings.Contains(m.GetErrorMessage(), want) {
				t.Errorf("stream %d: error %q, want it to contain %q", i, m.GetErrorMessage(), want)
			}
			if !m.GetInferResponse().GetParameters()["triton_final_response"].GetBoolParam() {
				t.Errorf("stream %d: the death error is not marked final", i)
			}
			break
		}
	}
	took := time.Since(killed)
	t.Logf("both streams ended %s after SIGKILL", took)
	if took > 2*time.Second {
		t.Errorf("streams ended %s after the kill, want at once", took)
	}
	eventually(t, 30*time.Second, "streamer restarted and ready again", func() bool {
		return s.restarts("streamer") >= 1 && s.get("/v2/models/streamer/ready").Status == 200
	})
	st, ch := s.openStream(ctx)
	if err := st.Send(streamerRequest("after", 2, 0, -1)); err != nil {
		t.Fatal(err)
	}
	for want := int32(0); want < 2; want++ {
		if m := next(t, ch, 10*time.Second); m.GetErrorMessage() != "" || outValue(m) != want {
			t.Fatalf("after the restart: %v, want OUT %d", m, want)
		}
	}
	metrics := string(s.get("/metrics").Body)
	if !strings.Contains(metrics, `vigil_stream_ends_total{end="died",model="streamer",version="1"} 2`) {
		t.Errorf("metrics do not count 2 streams ended by death:\n%s", grepLines(metrics, "vigil_stream"))
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestCancelledStreamReachesTheModel(t *testing.T) {
	repo := copyModels(t, "streamer")
	s := start(t, repo)
	s.waitReady(30 * time.Second)
	ctx, cancel := context.WithCancel(ctxTimeout(t, time.Minute))
	st, ch := s.openStream(ctx)
	if err := st.Send(streamerRequest("c1", -1, 5, -1)); err != nil {
		t.Fatal(err)
	}
	next(t, ch, 10*time.Second)
	cancel()
	marker := filepath.Join(repo, "streamer", "cancelled-c1")
	eventually(t, 10*time.Second, "the model sees the cancellation", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
	eventually(t, 10*time.Second, "the stream is counted as cancelled", func() bool {
		return strings.Contains(string(s.get("/metrics").Body), `vigil_stream_ends_total{end="cancelled",model="streamer",version="1"} 1`)
	})
	eventually(t, 10*time.Second, "no open stream left", func() bool {
		return strings.Contains(string(s.get("/readyz?format=json").Body), `"open_streams":0`)
	})
	// What the model sent after the cancellation (at least its CANCELLED
	// final) was dropped and counted, not written.
	eventually(t, 10*time.Second, "late responses counted as dropped", func() bool {
		for _, l := range strings.Split(string(s.get("/metrics").Body), "\n") {
			if strings.HasPrefix(l, `vigil_responses_dropped_total{model="streamer",version="1"} `) && !strings.HasSuffix(l, " 0") {
				return true
			}
		}
		return false
	})

	// A gRPC deadline cancels the same way.
	dctx, dcancel := context.WithTimeout(ctxTimeout(t, time.Minute), 500*time.Millisecond)
	defer dcancel()
	st, _ = s.openStream(dctx)
	if err := st.Send(streamerRequest("d1", -1, 5, -1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the model sees the deadline", func() bool {
		_, err := os.Stat(filepath.Join(repo, "streamer", "cancelled-d1"))
		return err == nil
	})
}

func TestExecuteTimeoutAppliesBetweenResponses(t *testing.T) {
	repo := copyModels(t, "streamer")
	if err := os.WriteFile(filepath.Join(repo, "streamer", "health.yaml"), []byte("execute_timeout_seconds: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, repo)
	s.waitReady(30 * time.Second)
	ctx := ctxTimeout(t, time.Minute)
	// 8 responses 300 ms apart: 2.4 s in all, but never 1 s without one.
	st, ch := s.openStream(ctx)
	if err := st.Send(streamerRequest("slow", 8, 300, -1)); err != nil {
		t.Fatal(err)
	}
	for want := int32(0); want < 8; want++ {
		if m := next(t, ch, 10*time.Second); m.GetErrorMessage() != "" || outValue(m) != want {
			t.Fatalf("progressing stream: %v, want OUT %d", m, want)
		}
	}
	if r := s.get("/v2/models/streamer/ready"); r.Status != 200 {
		t.Fatalf("a stream that made progress took the model out of traffic: %d %s", r.Status, r.Body)
	}
	// Two responses, then silence: a hang, within the limit plus a check period.
	if err := st.Send(streamerRequest("stuck", 5, 0, 2)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last *pb.ModelStreamInferResponse
	for last = next(t, ch, 10*time.Second); last.GetErrorMessage() == ""; last = next(t, ch, 10*time.Second) {
	}
	t.Logf("stalled stream ended after %s", time.Since(start))
	if !strings.Contains(last.GetErrorMessage(), "no response within execute_timeout_seconds (1s)") {
		t.Errorf("stalled stream error %q", last.GetErrorMessage())
	}
	eventually(t, 30*time.Second, "instance restarted after the stall", func() bool { return s.restarts("streamer") >= 1 })
}

func TestWedgedStubEndsItsStreamsWhenTheHeartbeatRestartsIt(t *testing.T) {
	// restart_threshold_seconds is long: the stopped stub holds a stream,
	// so it is a hang, answered and restarted within the heartbeat bound,
	// not a failing check waiting for the threshold.
	s := start(t, copyModels(t, "streamer"),
		"--health-default", "heartbeat_period_seconds=0.5",
		"--health-default", "heartbeat_timeout_seconds=0.3",
		"--health-default", "restart_threshold_seconds=60")
	s.waitReady(30 * time.Second)
	st, ch := s.openStream(ctxTimeout(t, time.Minute))
	if err := st.Send(streamerRequest("w", -1, 10, -1)); err != nil {
		t.Fatal(err)
	}
	next(t, ch, 10*time.Second)
	pid := s.stubPIDs("streamer")[0]
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	stopped := time.Now()
	var m *pb.ModelStreamInferResponse
	for m = next(t, ch, 10*time.Second); m.GetErrorMessage() == ""; m = next(t, ch, 10*time.Second) {
	}
	took := time.Since(stopped)
	t.Logf("the stopped stub's stream ended after %s: %s", took, m.GetErrorMessage())
	// The bound: a ping is sent at the stop and times out after 0.3 s;
	// the second is slack for a loaded machine.
	if took > 1300*time.Millisecond {
		t.Errorf("stream ended %s after SIGSTOP, want within heartbeat_timeout_seconds + 1 s", took)
	}
	msg := m.GetErrorMessage()
	if !strings.Contains(msg, "instance streamer_0 stopped responding while executing the request") ||
		!strings.Contains(msg, "stopped by a signal") || !strings.Contains(msg, "the instance is restarted") {
		t.Errorf("error %q does not say that the stopped instance stopped responding and is restarted", msg)
	}
	eventually(t, 10*time.Second, "the instance restarted at once", func() bool { return s.restarts("streamer") >= 1 })
}

func TestStreamWithoutFinalIsBoundedByMaxStreamDuration(t *testing.T) {
	repo := copyModels(t, "streamer")
	s := start(t, repo, "--max-stream-duration", "1s")
	s.waitReady(30 * time.Second)
	st, ch := s.openStream(ctxTimeout(t, time.Minute))
	if err := st.Send(streamerRequest("long", -1, 20, -1)); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	var m *pb.ModelStreamInferResponse
	for m = next(t, ch, 10*time.Second); m.GetErrorMessage() == ""; m = next(t, ch, 10*time.Second) {
	}
	t.Logf("ended after %s: %s", time.Since(begin), m.GetErrorMessage())
	if !strings.Contains(m.GetErrorMessage(), "ran past the 1s limit (--max-stream-duration)") {
		t.Errorf("error %q", m.GetErrorMessage())
	}
	eventually(t, 10*time.Second, "the model sees the request cancelled", func() bool {
		_, err := os.Stat(filepath.Join(repo, "streamer", "cancelled-long"))
		return err == nil
	})
	if r := s.get("/v2/models/streamer/ready"); r.Status != 200 {
		t.Errorf("a stream past its limit took the model out of traffic: %d", r.Status)
	}
}
