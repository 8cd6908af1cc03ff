package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
)

// The floor server is this program, in a process of its own, answering
// every HTTP request with an empty 200 after reading its body: an HTTP
// server that does no work. Timed against it, a request costs what the
// machine's loopback, scheduler and Go's HTTP stack cost and nothing more,
// which no server can beat on the same machine; vigil's figures are
// reported next to it.

// runFloorServer is the child's side: listen, print the address, serve
// until stdin closes.
func runFloorServer(stdin io.Reader, stdout io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})}
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		_ = srv.Close()
	}()
	if _, err := fmt.Fprintln(stdout, ln.Addr().String()); err != nil {
		return err
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// startFloorServer starts the floor server and returns its base URL and
// the function that stops it.
func startFloorServer(ctx context.Context) (string, func() error, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-floor-server")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() error {
		stdin.Close()
		return cmd.Wait()
	}
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = stop()
		return "", nil, fmt.Errorf("floor server: %w", err)
	}
	return "http://" + strings.TrimSpace(addr), stop, nil
}
