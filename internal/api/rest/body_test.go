package rest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
)

// restServer serves NewHandler on a real listener and returns the server
// value behind it, so tests can read its byte budget.
func restServer(t *testing.T, fm *fakeModels, cfg Config) (*httptest.Server, *server) {
	t.Helper()
	s := newServer(fm, fakeHealth{readySnapshot()}, cfg)
	mux := http.NewServeMux()
	for _, rt := range s.apiRoutes() {
		s.handle(mux, rt.method, rt.pattern, rt.h)
	}
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts, s
}

// waitBudget polls the budget until it holds want bytes.
func waitBudget(t *testing.T, s *server, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.budget.inUse() != want {
		if time.Now().After(deadline) {
			t.Fatalf("budget in use %d, want %d", s.budget.inUse(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A body announced as 4 MiB that trickles in holds the first chunk, not
// 4 MiB, and gives it back when the request ends.
func TestAnnouncedBodyIsNotPreallocated(t *testing.T) {
	ts, s := restServer(t, &fakeModels{}, Config{})
	conns := make([]net.Conn, 20)
	for i := range conns {
		c, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		fmt.Fprintf(c, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{", 4<<20)
	}
	waitBudget(t, s, int64(len(conns))*firstChunk)
	for _, c := range conns {
		c.Close()
	}
	waitBudget(t, s, 0)
}

// Once the first chunk of an announced body is full, its buffer is sized
// to the announced length in one step (reserved from the budget), rather
// than doubling and copying on the way there.
func TestAnnouncedBodyGrowsToItsLengthInOneStep(t *testing.T) {
	ts, s := restServer(t, &fakeModels{}, Config{})
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	const announced = 4 << 20
	fmt.Fprintf(c, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{%s", announced, strings.Repeat(" ", firstChunk))
	waitBudget(t, s, announced)
	c.Close()
	waitBudget(t, s, 0)
}

// The bytes all requests hold at once are bounded: past the budget a request
// gets 503 with Retry-After, and the budget is whole again afterwards.
func TestConcurrentRequestBytesAreBounded(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	fm := &fakeModels{InferFunc: func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		entered <- struct{}{}
		<-release
		return &inference.Response{}, nil
	}}
	ts, s := restServer(t, fm, Config{MaxRequestBytes: 1 << 20, MaxConcurrentRequestBytes: 1<<20 + 1})
	body := []byte(`{"inputs":[{"name":"A","datatype":"BYTES","shape":[1],"data":["` + strings.Repeat("x", 900<<10) + `"]}]}`)
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(ts.URL+"/v2/models/m/infer", "application/json", bytes.NewReader(body))
		if err != nil {
			first <- -1
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Post(ts.URL+"/v2/models/m/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "--max-concurrent-request-bytes") {
		t.Fatalf("second body: %d %s (Retry-After %q), want 503 naming the flag", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	close(release)
	if code := <-first; code != 200 {
		t.Fatalf("first request: %d", code)
	}
	waitBudget(t, s, 0)
}

// A chunked body over the limit is refused without buffering more than the
// limit.
func TestChunkedBodyOverTheLimitIsCapped(t *testing.T) {
	ts, s := restServer(t, &fakeModels{}, Config{MaxRequestBytes: 1 << 20})
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	chunk := strings.Repeat("y", 256<<10)
	peak := int64(0)
	go func() {
		for range 12 { // 3 MiB
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if n := s.budget.inUse(); n > peak {
		peak = n
	}
	if resp.StatusCode != 413 || !strings.Contains(string(b), "over the limit") {
		t.Fatalf("chunked 3 MiB body: %d %s, want 413", resp.StatusCode, b)
	}
	if peak > 1<<20+1 {
		t.Errorf("held %d bytes for a body limited to 1 MiB", peak)
	}
}

// Invalid UTF-8 in a JSON string is refused, not replaced.
func TestInvalidUTF8IsRefused(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	body := []byte("{\"inputs\":[{\"name\":\"A\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"a\xffb\"]}]}")
	rec := e.do("POST", "/v2/models/m/infer", body, "Content-Type", "application/json")
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "not valid UTF-8") || !strings.Contains(rec.Body.String(), "0xff") {
		t.Fatalf("infer with invalid UTF-8: %d %s, want 400", rec.Code, rec.Body)
	}
	rec = e.do("POST", "/v2/repository/models/m/load", []byte("{\"parameters\":{\"config\":\"\xc3\"}}"))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "not valid UTF-8") {
		t.Fatalf("load with invalid UTF-8: %d %s, want 400", rec.Code, rec.Body)
	}
}

// bomb is a gzip (or deflate) body of n zero bytes.
func bomb(t *testing.T, encoding string, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	if encoding == "gzip" {
		w = gzip.NewWriter(&b)
	} else {
		w = zlib.NewWriter(&b)
	}
	zero := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(zero))
		if _, err := w.Write(zero[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A small compressed body that expands beyond the limit is refused 413
// naming the limit, and what its decompression held was reserved from the
// server-wide budget (a decompression that would pass the budget is 503),
// which is whole again afterwards.
func TestDecompressedBodyCountsInTheBudget(t *testing.T) {
	for _, enc := range []string{"gzip", "deflate"} {
		body := bomb(t, enc, 8<<20)
		// Budget above the limit: the limit refuses it.
		ts, s := restServer(t, &fakeModels{}, Config{MaxRequestBytes: 1 << 20, MaxConcurrentRequestBytes: 4 << 20})
		resp := post(t, ts.URL+"/v2/models/m/infer", enc, body)
		if resp.code != 413 || !strings.Contains(resp.body, "decompressed request body is over the limit of 1048576 bytes (--max-request-bytes)") {
			t.Errorf("%s bomb of %d bytes: %d %s, want 413 naming the limit", enc, len(body), resp.code, resp.body)
		}
		waitBudget(t, s, 0)
		// Budget below the limit: the decompressed bytes are counted, so
		// the budget refuses it before the limit does.
		ts, s = restServer(t, &fakeModels{}, Config{MaxRequestBytes: 1 << 20, MaxConcurrentRequestBytes: 512 << 10})
		resp = post(t, ts.URL+"/v2/models/m/infer", enc, body)
		if resp.code != 503 || !strings.Contains(resp.body, "--max-concurrent-request-bytes") {
			t.Errorf("%s bomb with a 512 KiB budget: %d %s, want 503 naming the budget", enc, resp.code, resp.body)
		}
		waitBudget(t, s, 0)
	}
}

type answer struct {
	code int
	body string
}

func post(t *testing.T, url, encoding string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", encoding)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}
}
