// Package probe asks a running vigil server one health question — live,
// ready, startup or one model's readiness — over HTTP or gRPC, and turns the
// answer into an exit code and one line of text. It backs `vigil probe`, which
// Kubernetes runs as an exec probe and scripts run by hand.
//
// The package separates "the server answered no" (unhealthy) from "the server
// could not be asked" (connect refused, timeout, wrong kind of server), the
// same split the kubelet's probers make between a failure and an error.
package probe

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// Exit codes of `vigil probe`.
const (
	ExitHealthy   = 0 // the server answered yes
	ExitUnhealthy = 1 // the server answered no
	ExitUnknown   = 2 // the server could not be asked, or answered nonsense
	ExitUsage     = 3 // bad command line
)

// Target is the question a probe asks.
type Target string

// The targets.
const (
	TargetLive    Target = "live"
	TargetReady   Target = "ready"
	TargetStartup Target = "startup"
	TargetModel   Target = "model"
)

// Protocol is the transport a probe uses.
type Protocol string

// The protocols.
const (
	ProtocolHTTP Protocol = "http"
	ProtocolGRPC Protocol = "grpc"
)

// Default ports of `vigil serve`.
const (
	DefaultHTTPPort = 8000
	DefaultGRPCPort = 8001
)

// Outcome classifies a probe's result.
type Outcome int

// The outcomes, in exit-code order.
const (
	Healthy   Outcome = iota // the server answered yes
	Unhealthy                // the server answered no
	Unknown                  // the server could not be asked
)

// String names the outcome as it appears in the probe's output line.
func (o Outcome) String() string {
	switch o {
	case Healthy:
		return "ok"
	case Unhealthy:
		return "unhealthy"
	default:
		return "could not ask"
	}
}

// ExitCode is the process exit code for the outcome.
func (o Outcome) ExitCode() int {
	switch o {
	case Healthy:
		return ExitHealthy
	case Unhealthy:
		return ExitUnhealthy
	default:
		return ExitUnknown
	}
}

// Config says what to ask and where. The zero values of Protocol, Addr and
// the timeouts take the defaults of `vigil probe`.
type Config struct {
	Target  Target
	Model   string // required for TargetModel
	Version string // optional model version (HTTP only)

	Protocol Protocol // default ProtocolHTTP
	// Addr is host:port; a missing host means 127.0.0.1. Empty means
	// 127.0.0.1 with the protocol's default port.
	Addr string

	// ConnectTimeout limits establishing the connection; Timeout limits the
	// request once connected. Both default to one second.
	ConnectTimeout time.Duration
	Timeout        time.Duration

	// Dial opens the TCP connection; nil means a net.Dialer. Tests inject
	// dialers that never connect.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Result is a probe's answer.
type Result struct {
	Outcome Outcome
	// Label names what was asked: "live", "ready", "startup",
	// "model/<name>" or "model/<name>/<version>".
	Label string
	// Addr is the address that was asked.
	Addr string
	// Detail says why, for Unhealthy and Unknown.
	Detail string
}

// String renders the result as the probe's single output line, e.g.
// "ready: ok", "ready: unhealthy: model/add_sub/1 failed: …" or
// "ready: could not ask 127.0.0.1:8000: connection refused".
func (r Result) String() string {
	switch r.Outcome {
	case Healthy:
		return r.Label + ": ok"
	case Unhealthy:
		return fmt.Sprintf("%s: unhealthy: %s", r.Label, r.Detail)
	default:
		return fmt.Sprintf("%s: could not ask %s: %s", r.Label, r.Addr, r.Detail)
	}
}

// resolved is a validated Config with every default filled in.
type resolved struct {
	Config
	label string
}

// resolve validates c and fills in its defaults.
func resolve(c Config) (resolved, error) {
	switch c.Protocol {
	case "":
		c.Protocol = ProtocolHTTP
	case ProtocolHTTP, ProtocolGRPC:
	default:
		return resolved{}, fmt.Errorf("unknown protocol %q (want http or grpc)", c.Protocol)
	}
	label := string(c.Target)
	switch c.Target {
	case TargetLive, TargetReady, TargetStartup:
		if c.Model != "" || c.Version != "" {
			return resolved{}, fmt.Errorf("--model and --version apply only to the model target, not %q", c.Target)
		}
	case TargetModel:
		if c.Model == "" {
			return resolved{}, fmt.Errorf("the model target needs --model NAME")
		}
		if strings.Contains(c.Model, "/") {
			return resolved{}, fmt.Errorf("model name %q must not contain '/'", c.Model)
		}
		label = "model/" + c.Model
		if c.Version != "" {
			if !isVersion(c.Version) {
				return resolved{}, fmt.Errorf("model version %q is not a positive integer", c.Version)
			}
			if c.Protocol == ProtocolGRPC {
				// grpc.health.v1 services are per model ("model/<name>");
				// there is no per-version service to ask.
				return resolved{}, fmt.Errorf("--version is not supported with --protocol grpc (the gRPC health service is per model)")
			}
			label += "/" + c.Version
		}
	case "":
		return resolved{}, fmt.Errorf("missing target (live, ready, startup or model)")
	default:
		return resolved{}, fmt.Errorf("unknown target %q (want live, ready, startup or model)", c.Target)
	}
	addr, err := normalizeAddr(c.Addr, c.Protocol)
	if err != nil {
		return resolved{}, err
	}
	c.Addr = addr
	if c.ConnectTimeout < 0 || c.Timeout < 0 {
		return resolved{}, fmt.Errorf("timeouts must not be negative")
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.Dial == nil {
		d := &net.Dialer{}
		c.Dial = d.DialContext
	}
	return resolved{Config: c, label: label}, nil
}

// normalizeAddr turns "", ":8000", "host" or "host:port" into host:port.
func normalizeAddr(addr string, p Protocol) (string, error) {
	port := fmt.Sprint(DefaultHTTPPort)
	if p == ProtocolGRPC {
		port = fmt.Sprint(DefaultGRPCPort)
	}
	if addr == "" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if strings.Contains(addr, "/") {
		return "", fmt.Errorf("invalid --addr %q: want host:port", addr)
	}
	host, prt, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the whole string is a host.
		host, prt = strings.Trim(addr, "[]"), port
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if prt == "" {
		return "", fmt.Errorf("invalid --addr %q: empty port", addr)
	}
	return net.JoinHostPort(host, prt), nil
}

func isVersion(s string) bool {
	if s == "" || s[0] == '0' {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Check asks the server the question c describes. A configuration error is
// returned as an error; every answer, including "could not ask", is a Result.
func Check(ctx context.Context, c Config) (Result, error) {
	r, err := resolve(c)
	if err != nil {
		return Result{}, err
	}
	if r.Protocol == ProtocolGRPC {
		return checkGRPC(ctx, r), nil
	}
	return checkHTTP(ctx, r), nil
}

// oneLine folds s to a single trimmed line of bounded length.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const limit = 400
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}
