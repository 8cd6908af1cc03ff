package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// The readiness figure under load is taken by a separate process, as the
// kubelet probes from outside the pod's processes: a prober goroutine inside
// the load generator would measure the load generator's own scheduling too.

// runProber is the child's side: GET url every interval until stdin
// closes, then print each latency in nanoseconds, one per line. It keeps its
// connection, as the idle baseline does, so that the two compare.
func runProber(url string, every time.Duration, stdin io.Reader, stdout io.Writer) error {
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(stop)
	}()
	c := &http.Client{Timeout: 10 * time.Second}
	t := time.NewTicker(every)
	defer t.Stop()
	var out []time.Duration
	for n := 0; n < 100000; n++ {
		select {
		case <-stop:
			w := bufio.NewWriter(stdout)
			for _, d := range out {
				fmt.Fprintln(w, int64(d))
			}
			return w.Flush()
		case <-t.C:
		}
		t0 := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		out = append(out, time.Since(t0))
	}
	return fmt.Errorf("prober ran too long")
}

// externalProbe starts this program as a prober of url and returns the
// function that stops it and collects its figures.
func externalProbe(ctx context.Context, url string, every time.Duration) (func() (dist, error), error) {
	cmd, stdin, stdout, err := startSelf(ctx, "-probe-url", url, "-probe-every", every.String())
	if err != nil {
		return nil, err
	}
	return func() (dist, error) {
		stdin.Close()
		var ds []time.Duration
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err == nil {
				ds = append(ds, time.Duration(n))
			}
		}
		if err := cmd.Wait(); err != nil {
			return dist{}, fmt.Errorf("prober: %w", err)
		}
		return summarize(ds), nil
	}, nil
}

// startSelf starts this program again with args, in a process of its own:
// it answers on stdout and stops when stdin is closed.
func startSelf(ctx context.Context, args ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, stdin, stdout, nil
}
