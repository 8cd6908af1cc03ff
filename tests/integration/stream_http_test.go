package integration

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/vigilhq/vigil/internal/inferencepb"
)

func TestAsyncDecoupledModelServesRequestsConcurrentlyOnOneInstance(t *testing.T) {
	s := start(t, copyModels(t, "async_sleeper"))
	s.waitReady(30 * time.Second)
	st, ch := s.openStream(ctxTimeout(t, time.Minute))
	begin := time.Now()
	for _, id := range []string{"a", "b", "c", "d"} {
		req := &pb.ModelInferRequest{ModelName: "async_sleeper", Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
			Name: "MS", Datatype: "INT32", Shape: []int64{1}, Contents: &pb.InferTensorContents{IntContents: []int32{500}}}}}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 4 {
		m := next(t, ch, 10*time.Second)
		if m.GetErrorMessage() != "" {
			t.Fatal(m.GetErrorMessage())
		}
		seen[m.GetInferResponse().GetId()] = true
	}
	took := time.Since(begin)
	t.Logf("4 requests that each await 0.5 s on one instance took %s", took)
	if took > 1500*time.Millisecond {
		t.Errorf("took %s: the requests did not run concurrently (serially they take 2 s)", took)
	}
}

// TestSSEClientDisconnectCancelsTheModel reads a few events of an endless
// generate_stream over a raw connection, closes it, and waits for the model
// to see is_cancelled().
func TestSSEClientDisconnectCancelsTheModel(t *testing.T) {
	repo := copyModels(t, "streamer")
	s := start(t, repo)
	s.waitReady(30 * time.Second)
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.HTTP, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"id":"sse1","N":-1,"GAP_MS":5}`
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("POST /v2/models/streamer/generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
		itoa(len(body)) + "\r\n\r\n" + body)); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	events := 0
	for events < 3 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if strings.HasPrefix(line, "HTTP/1.1 ") && !strings.Contains(line, "200") {
			t.Fatalf("status %s", line)
		}
		if strings.HasPrefix(line, "data: ") || strings.Contains(line, "data: {") {
			events++
		}
	}
	conn.Close()
	eventually(t, 10*time.Second, "the model sees the disconnect", func() bool {
		_, err := os.Stat(filepath.Join(repo, "streamer", "cancelled-sse1"))
		return err == nil
	})
	eventually(t, 10*time.Second, "the stream counted as cancelled", func() bool {
		return strings.Contains(string(s.get("/metrics").Body), `vigil_stream_ends_total{end="cancelled",model="streamer",version="1"} 1`)
	})
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
