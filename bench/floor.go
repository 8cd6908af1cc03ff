package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"google.golang.org/grpc"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// The floor server is this program, in a process of its own, answering
// every HTTP request with an empty 200 after reading its body, and every
// gRPC ModelInfer with an empty response: a server that does no work. Timed
// against it, a request costs what the machine's loopback, scheduler and
// Go's HTTP and gRPC stacks cost and nothing more, which no server can beat
// on the same machine; vigil's figures are reported next to it.

// runFloorServer is the child's side: listen, print the HTTP and gRPC
// addresses on one line, serve until stdin closes.
func runFloorServer(stdin io.Reader, stdout io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})}
	gsrv := grpc.NewServer(grpc.MaxRecvMsgSize(1 << 30))
	inferencepb.RegisterGRPCInferenceServiceServer(gsrv, floorInfer{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		_ = srv.Close()
		gsrv.Stop()
	}()
	if _, err := fmt.Fprintln(stdout, ln.Addr().String(), gln.Addr().String()); err != nil {
		return err
	}
	gerr := make(chan error, 1)
	go func() { gerr <- gsrv.Serve(gln) }()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return <-gerr
}

// floorInfer answers ModelInfer with an empty response.
type floorInfer struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
}

func (floorInfer) ModelInfer(context.Context, *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
	return &inferencepb.ModelInferResponse{}, nil
}

// floor is a running floor server.
type floor struct {
	http string // base URL
	grpc string // host:port
	pid  int
	stop func() error
}

// startFloorServer starts the floor server in a process of its own.
func startFloorServer(ctx context.Context) (*floor, error) {
	cmd, stdin, stdout, err := startSelf(ctx, "-floor-server")
	if err != nil {
		return nil, err
	}
	f := &floor{pid: cmd.Process.Pid, stop: func() error {
		stdin.Close()
		return cmd.Wait()
	}}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addrs := strings.Fields(line)
	if err != nil || len(addrs) != 2 {
		_ = f.stop()
		return nil, fmt.Errorf("floor server: no addresses (%q): %v", line, err)
	}
	f.http, f.grpc = "http://"+addrs[0], addrs[1]
	return f, nil
}
