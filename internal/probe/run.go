package probe

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

const usageText = `usage: vigil probe [flags] live|ready|startup|model [MODEL]

Asks a running vigil server one health question and exits
  0 healthy, 1 unhealthy (the server answered no),
  2 could not ask (no connection, timeout, unexpected answer), 3 usage error.
It prints one line saying why, e.g. "ready: ok".

Flags:
`

// Run is `vigil probe`. args excludes the subcommand name. It writes one
// line to stdout (usage errors go to stderr) and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var (
		target   = fs.String("target", "", "what to ask: live, ready, startup or model (or give it as the first argument)")
		model    = fs.String("model", "", "model name, for the model target")
		version  = fs.String("version", "", "model version, for the model target (HTTP only; default: the server's choice)")
		protocol = fs.String("protocol", string(ProtocolHTTP), "http or grpc")
		addr     = fs.String("addr", "", fmt.Sprintf("server host:port (default 127.0.0.1:%d for http, 127.0.0.1:%d for grpc)", DefaultHTTPPort, DefaultGRPCPort))
		connTO   = fs.Duration("connect-timeout", time.Second, "limit on establishing the connection")
		timeout  = fs.Duration("timeout", time.Second, "limit on the answer once connected")
	)

	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return ExitHealthy
	}
	if err != nil {
		// The flag package has already printed the error and the usage.
		return ExitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "vigil probe: "+format+"\n", a...)
		fmt.Fprintln(stderr, `run "vigil probe -h" for usage`)
		return ExitUsage
	}

	if len(pos) > 0 {
		if *target != "" && *target != pos[0] {
			return usageErr("target given twice: --target %s and %s", *target, pos[0])
		}
		*target = pos[0]
		pos = pos[1:]
	}
	if len(pos) > 0 && Target(*target) == TargetModel {
		if *model != "" && *model != pos[0] {
			return usageErr("model given twice: --model %s and %s", *model, pos[0])
		}
		*model = pos[0]
		pos = pos[1:]
	}
	if len(pos) > 0 {
		return usageErr("unexpected arguments: %q", pos)
	}
	if *connTO <= 0 || *timeout <= 0 {
		return usageErr("--connect-timeout and --timeout must be positive")
	}

	res, err := Check(ctx, Config{
		Target:         Target(*target),
		Model:          *model,
		Version:        *version,
		Protocol:       Protocol(*protocol),
		Addr:           *addr,
		ConnectTimeout: *connTO,
		Timeout:        *timeout,
	})
	if err != nil {
		return usageErr("%v", err)
	}
	fmt.Fprintln(stdout, res.String())
	return res.Outcome.ExitCode()
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("vigil probe ready --protocol grpc"), which the flag
// package alone stops at. Everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse consumed a "--" if the arguments before rest end in one.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
