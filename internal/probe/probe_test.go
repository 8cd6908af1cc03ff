package probe

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Generous limits for answers that do come, so a loaded machine under -race
// cannot turn a pass into a timeout; short ones where a timeout is the point.
const (
	slow  = "10s"
	short = 150 * time.Millisecond
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// healthMux serves vigil-style health endpoints from a table of
// path → (status, body).
type answer struct {
	code int
	body string
}

func healthServer(t *testing.T, answers map[string]answer) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "*/*" {
			http.Error(w, "probe sent Accept "+r.Header.Get("Accept"), http.StatusNotAcceptable)
			return
		}
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if a.code == http.StatusMovedPermanently {
			http.Redirect(w, r, "/elsewhere", a.code)
			return
		}
		w.WriteHeader(a.code)
		fmt.Fprint(w, a.body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

const verboseFailure = `[+]ping ok
[+]watchdog ok
[+]started ok
[+]draining ok
[-]model/add_sub/1 failed: model add_sub version 1 has 0 routable instances, needs 1; instance add_sub_0 is RESTARTING: process exited: signal: killed
[-]models failed: no model is ready
readyz check failed
`

func TestHTTP(t *testing.T) {
	addr := healthServer(t, map[string]answer{
		"/livez":                               {200, "ok"},
		"/readyz":                              {503, verboseFailure},
		"/startupz":                            {503, "[-]startup failed: loading 1/3: add_sub\nstartupz check failed\n"},
		"/v2/models/add_sub/ready":             {200, `{"name":"add_sub","version":"1","ready":true}`},
		"/v2/models/add_sub/versions/2/ready":  {503, `{"name":"add_sub","version":"2","ready":false,"reason":"model add_sub version 2 is LOADING"}`},
		"/v2/models/missing/ready":             {404, `{"error":"unknown model: missing"}`},
		"/v2/models/teapot/ready":              {418, "short and stout\n"},
		"/v2/models/plain/ready":               {503, ""},
		"/v2/models/redirect/ready":            {301, ""},
		"/v2/models/internal/ready":            {500, "boom"},
		"/v2/models/apiserver-style/ready":     {500, "[+]a ok\n[-]b failed: reason withheld\n"},
		"/v2/models/sp ace/ready":              {200, ""},
		"/v2/models/json-probe/ready":          {503, `{"probe":"readyz","ok":false,"checks":[{"name":"ping","ok":true},{"name":"model/x/1","ok":false,"reason":"model x version 1 is LOADING"}]}`},
		"/v2/models/add_sub/versions/1/ready":  {200, ""},
		"/v2/models/add_sub/versions/77/ready": {404, ""},
	})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"live ok", []string{"live"}, ExitHealthy, "live: ok"},
		{"ready first failed line", []string{"--target", "ready"}, ExitUnhealthy,
			"ready: unhealthy: model/add_sub/1 failed: model add_sub version 1 has 0 routable instances, needs 1; instance add_sub_0 is RESTARTING: process exited: signal: killed"},
		{"startup loading", []string{"startup"}, ExitUnhealthy, "startup: unhealthy: startup failed: loading 1/3: add_sub"},
		{"model ok", []string{"model", "--model", "add_sub"}, ExitHealthy, "model/add_sub: ok"},
		{"model positional", []string{"model", "add_sub"}, ExitHealthy, "model/add_sub: ok"},
		{"model version ok", []string{"model", "add_sub", "--version", "1"}, ExitHealthy, "model/add_sub/1: ok"},
		{"model version not ready", []string{"--version", "2", "model", "add_sub"}, ExitUnhealthy,
			"model/add_sub/2: unhealthy: model add_sub version 2 is LOADING"},
		{"model unknown", []string{"model", "missing"}, ExitUnhealthy, "model/missing: unhealthy: unknown model: missing"},
		{"version unknown", []string{"model", "add_sub", "--version", "77"}, ExitUnhealthy,
			"model/add_sub/77: unhealthy: the server does not know model/add_sub/77"},
		{"503 without body", []string{"model", "plain"}, ExitUnhealthy, "model/plain: unhealthy: HTTP 503 Service Unavailable"},
		{"apiserver-style 500", []string{"model", "apiserver-style"}, ExitUnhealthy, "model/apiserver-style: unhealthy: b failed: reason withheld"},
		{"plain 500 is no answer", []string{"model", "internal"}, ExitUnknown,
			"model/internal: could not ask " + addr + ": unexpected HTTP 500 from /v2/models/internal/ready: boom"},
		{"teapot", []string{"model", "teapot"}, ExitUnknown,
			"model/teapot: could not ask " + addr + ": unexpected HTTP 418 from /v2/models/teapot/ready: short and stout"},
		{"redirect is no answer", []string{"model", "redirect"}, ExitUnknown,
			"model/redirect: could not ask " + addr + `: unexpected HTTP 301 from /v2/models/redirect/ready: <a href="/elsewhere">Moved Permanently</a>.`},
		{"escaped model name", []string{"model", "sp ace"}, ExitHealthy, "model/sp ace: ok"},
		{"json probe body", []string{"model", "json-probe"}, ExitUnhealthy, "model/json-probe: unhealthy: model/x/1 failed: model x version 1 is LOADING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--addr", addr, "--timeout", slow, "--connect-timeout", slow}, tt.args...)
			code, out, errOut := run(t, args...)
			if code != tt.wantCode || out != tt.wantOut+"\n" {
				t.Errorf("Run(%q) = %d, %q (stderr %q); want %d, %q", tt.args, code, out, errOut, tt.wantCode, tt.wantOut)
			}
		})
	}
}

func TestHTTPNotVigil(t *testing.T) {
	// A server that has none of the health endpoints cannot be asked.
	addr := healthServer(t, nil)
	code, out, _ := run(t, "ready", "--addr", addr, "--timeout", slow)
	want := "ready: could not ask " + addr + ": unexpected HTTP 404 from /readyz: 404 page not found\n"
	if code != ExitUnknown || out != want {
		t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, want)
	}
}

func TestHTTPNoAnswer(t *testing.T) {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hold the request until the test ends
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // runs before srv.Close
	addr := srv.Listener.Addr().String()

	code, out, _ := run(t, "ready", "--addr", addr, "--timeout", short.String())
	want := fmt.Sprintf("ready: could not ask %s: no answer within %s\n", addr, short)
	if code != ExitUnknown || out != want {
		t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, want)
	}
}

func TestHTTPSlowBody(t *testing.T) {
	// Headers arrive, the body never finishes: still no answer.
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	addr := srv.Listener.Addr().String()

	code, out, _ := run(t, "live", "--addr", addr, "--timeout", short.String(), "--connect-timeout", short.String())
	if code != ExitUnknown || !strings.HasPrefix(out, "live: could not ask "+addr+": reading the answer: ") {
		t.Errorf("got %d, %q; want %d and a read failure", code, out, ExitUnknown)
	}
}

// silentListener accepts TCP connections in the kernel but never calls
// Accept, so the client connects and then hears nothing.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// refusedAddr is an address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestHTTPSilentListener(t *testing.T) {
	addr := silentListener(t)
	code, out, _ := run(t, "ready", "--addr", addr, "--timeout", short.String(), "--connect-timeout", slow)
	want := fmt.Sprintf("ready: could not ask %s: no answer within %s\n", addr, short)
	if code != ExitUnknown || out != want {
		t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, want)
	}
}

func TestConnectionRefused(t *testing.T) {
	addr := refusedAddr(t)
	for _, proto := range []string{"http", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			code, out, _ := run(t, "ready", "--protocol", proto, "--addr", addr, "--connect-timeout", slow, "--timeout", slow)
			want := "ready: could not ask " + addr + ": connection refused\n"
			if code != ExitUnknown || out != want {
				t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, want)
			}
		})
	}
}

// blackhole is a dialer that never connects: the connect timeout must fire.
func blackhole(ctx context.Context, _, _ string) (net.Conn, error) {
	<-ctx.Done()
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
}

func TestConnectTimeout(t *testing.T) {
	for _, proto := range []Protocol{ProtocolHTTP, ProtocolGRPC} {
		t.Run(string(proto), func(t *testing.T) {
			res, err := Check(t.Context(), Config{
				Target: TargetLive, Protocol: proto, Addr: "127.0.0.1:9",
				ConnectTimeout: short, Timeout: 10 * time.Second, Dial: blackhole,
			})
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("live: could not ask 127.0.0.1:9: no connection within %s", short)
			if res.Outcome != Unknown || res.String() != want {
				t.Errorf("got %v %q; want %q", res.Outcome, res.String(), want)
			}
		})
	}
}

func TestInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, err := Check(ctx, Config{Target: TargetReady, Addr: silentListener(t), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Unknown || !strings.Contains(res.Detail, "canceled") {
		t.Errorf("got %v %q; want could not ask, canceled", res.Outcome, res.Detail)
	}
}

// grpcServer serves grpc.health.v1 with the given statuses; withHealth false
// serves no health service at all.
func grpcServer(t *testing.T, withHealth bool, statuses map[string]healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	if withHealth {
		hs := health.NewServer()
		for svc, st := range statuses {
			hs.SetServingStatus(svc, st)
		}
		healthpb.RegisterHealthServer(srv, hs)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func TestGRPC(t *testing.T) {
	addr := grpcServer(t, true, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"liveness":      healthpb.HealthCheckResponse_SERVING,
		"readiness":     healthpb.HealthCheckResponse_NOT_SERVING,
		"startup":       healthpb.HealthCheckResponse_SERVING,
		"model/add_sub": healthpb.HealthCheckResponse_SERVING,
		"model/broken":  healthpb.HealthCheckResponse_NOT_SERVING,
		"model/odd":     healthpb.HealthCheckResponse_UNKNOWN,
	})
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"live"}, ExitHealthy, "live: ok"},
		{[]string{"ready"}, ExitUnhealthy, `ready: unhealthy: service "readiness" is NOT_SERVING`},
		{[]string{"--target=startup"}, ExitHealthy, "startup: ok"},
		{[]string{"model", "add_sub"}, ExitHealthy, "model/add_sub: ok"},
		{[]string{"model", "--model", "broken"}, ExitUnhealthy, `model/broken: unhealthy: service "model/broken" is NOT_SERVING`},
		{[]string{"model", "odd"}, ExitUnhealthy, `model/odd: unhealthy: service "model/odd" is UNKNOWN`},
		{[]string{"model", "missing"}, ExitUnhealthy, `model/missing: unhealthy: the server does not know model "missing"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append(tt.args, "--protocol", "grpc", "--addr", addr, "--timeout", slow, "--connect-timeout", slow)
			code, out, errOut := run(t, args...)
			if code != tt.wantCode || out != tt.wantOut+"\n" {
				t.Errorf("Run(%q) = %d, %q (stderr %q); want %d, %q", tt.args, code, out, errOut, tt.wantCode, tt.wantOut)
			}
		})
	}
}

func TestGRPCNotVigil(t *testing.T) {
	withoutServices := grpcServer(t, true, nil)
	withoutHealth := grpcServer(t, false, nil)
	httpOnly := healthServer(t, map[string]answer{"/readyz": {200, "ok"}})
	tests := []struct {
		name, addr, want string
	}{
		{"no readiness service", withoutServices, `the server has no health service "readiness"`},
		{"no health service", withoutHealth, "the server does not implement grpc.health.v1"},
		// An HTTP/1 server fails the HTTP/2 handshake.
		{"not grpc", httpOnly, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := run(t, "ready", "--protocol", "grpc", "--addr", tt.addr, "--timeout", "2s", "--connect-timeout", "2s")
			prefix := "ready: could not ask " + tt.addr + ": "
			if code != ExitUnknown || !strings.HasPrefix(out, prefix+tt.want) || strings.Count(out, "\n") != 1 {
				t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, prefix+tt.want)
			}
		})
	}
}

func TestGRPCSilentListener(t *testing.T) {
	// The TCP connection opens but the HTTP/2 handshake never completes: the
	// gRPC connection is not established within the connect timeout.
	addr := silentListener(t)
	code, out, _ := run(t, "live", "--protocol", "grpc", "--addr", addr, "--connect-timeout", short.String(), "--timeout", slow)
	want := fmt.Sprintf("live: could not ask %s: no connection within %s\n", addr, short)
	if code != ExitUnknown || out != want {
		t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, want)
	}
}

func TestGRPCNoAnswer(t *testing.T) {
	// A health service whose Check blocks until the test ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, blockingHealth{done: done})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	t.Cleanup(func() { close(done) })

	addr := ln.Addr().String()
	code, out, _ := run(t, "ready", "--protocol", "grpc", "--addr", addr, "--connect-timeout", slow, "--timeout", short.String())
	want := fmt.Sprintf("ready: could not ask %s: no answer within %s\n", addr, short)
	if code != ExitUnknown || out != want {
		t.Errorf("got %d, %q; want %d, %q", code, out, ExitUnknown, want)
	}
}

type blockingHealth struct {
	healthpb.UnimplementedHealthServer
	done chan struct{}
}

func (b blockingHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	select {
	case <-b.done:
	case <-ctx.Done():
	}
	return nil, ctx.Err()
}

func TestGRPCDefaultPort(t *testing.T) {
	r, err := resolve(Config{Target: TargetLive, Protocol: ProtocolGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if r.Addr != "127.0.0.1:8001" {
		t.Errorf("grpc default addr = %q, want 127.0.0.1:8001", r.Addr)
	}
}

func TestAddr(t *testing.T) {
	tests := []struct {
		in   string
		p    Protocol
		want string
	}{
		{"", ProtocolHTTP, "127.0.0.1:8000"},
		{"", ProtocolGRPC, "127.0.0.1:8001"},
		{":9000", ProtocolHTTP, "127.0.0.1:9000"},
		{"localhost", ProtocolGRPC, "localhost:8001"},
		{"10.0.0.1:80", ProtocolGRPC, "10.0.0.1:80"},
		{"[::1]:8000", ProtocolHTTP, "[::1]:8000"},
		{"::1", ProtocolHTTP, "[::1]:8000"},
	}
	for _, tt := range tests {
		got, err := normalizeAddr(tt.in, tt.p)
		if err != nil || got != tt.want {
			t.Errorf("normalizeAddr(%q, %s) = %q, %v; want %q", tt.in, tt.p, got, err, tt.want)
		}
	}
	for _, bad := range []string{"http://x:80", "host:"} {
		if got, err := normalizeAddr(bad, ProtocolHTTP); err == nil {
			t.Errorf("normalizeAddr(%q) = %q, want an error", bad, got)
		}
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no target", nil, "missing target"},
		{"unknown target", []string{"healthz"}, `unknown target "healthz"`},
		{"unknown flag", []string{"--bogus", "ready"}, "flag provided but not defined: -bogus"},
		{"bad protocol", []string{"ready", "--protocol", "tcp"}, `unknown protocol "tcp"`},
		{"model without name", []string{"model"}, "needs --model NAME"},
		{"model flag on ready", []string{"ready", "--model", "x"}, "only to the model target"},
		{"two targets", []string{"--target", "live", "ready"}, "target given twice"},
		{"two models", []string{"model", "a", "--model", "b"}, "model given twice"},
		{"extra argument", []string{"live", "extra"}, "unexpected arguments"},
		{"bad version", []string{"model", "m", "--version", "01"}, "not a positive integer"},
		{"grpc version", []string{"model", "m", "--version", "1", "--protocol", "grpc"}, "not supported with --protocol grpc"},
		{"slash in model", []string{"model", "a/b"}, "must not contain '/'"},
		{"zero timeout", []string{"ready", "--timeout", "0s"}, "must be positive"},
		{"bad duration", []string{"ready", "--timeout", "soon"}, "invalid value"},
		{"bad addr", []string{"ready", "--addr", "http://x"}, "invalid --addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, tt.args...)
			if code != ExitUsage || out != "" || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("Run(%q) = %d, stdout %q, stderr %q; want %d and stderr containing %q", tt.args, code, out, errOut, ExitUsage, tt.wantErr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, out, errOut := run(t, "-h")
	if code != ExitHealthy || out != "" || !strings.Contains(errOut, "usage: vigil probe") {
		t.Errorf("-h = %d, %q, %q", code, out, errOut)
	}
}

func TestDoubleDash(t *testing.T) {
	addr := healthServer(t, map[string]answer{"/v2/models/-x/ready": {200, ""}})
	code, out, errOut := run(t, "--addr", addr, "--", "model", "-x")
	if code != ExitHealthy || out != "model/-x: ok\n" {
		t.Errorf("got %d, %q, %q", code, out, errOut)
	}
}
