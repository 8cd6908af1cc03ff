package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/vigilhq/vigil/internal/responder"
)

// responderMain is `vigil probe-responder`, which `vigil serve
// --probe-port` starts (internal/responder): descriptor 3 carries the
// server's health snapshots, descriptor 4 is the probe port's listener.
func responderMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil probe-responder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg responder.ChildConfig
	var logFormat string
	var rtPriority int
	fs.DurationVar(&cfg.StaleAfter, "stale-after", 0, "fail the ping check once no snapshot has come for this long")
	fs.BoolVar(&cfg.HideReasons, "health-hide-reasons", false, "withhold failure reasons")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&rtPriority, "rt-priority", 0, "run every thread under SCHED_FIFO at this priority (0 = the normal scheduler)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	logger, err := newLogger(stderr, logFormat, "info")
	if err != nil || cfg.StaleAfter <= 0 {
		fmt.Fprintln(stderr, "vigil probe-responder: is started by vigil serve --probe-port, with --stale-after")
		return 2
	}
	if rtPriority != 0 {
		if err := responder.SetRealtime(rtPriority); err != nil {
			logger.Error("probe responder: cannot run under SCHED_FIFO", "err", err)
			return 1
		}
	}
	lis, err := net.FileListener(os.NewFile(4, "probe-listener"))
	if err != nil {
		logger.Error("probe responder: no listener on descriptor 4", "err", err)
		return 1
	}
	if err := responder.Serve(os.NewFile(3, "health-stream"), lis, cfg); err != nil {
		logger.Error("probe responder stopped", "err", err)
		return 1
	}
	return 0
}
