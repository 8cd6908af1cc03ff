// Command vigil is a model inference server for Triton-style Python model
// repositories whose health reporting tells the truth.
//
//	vigil serve --model-repository DIR   serve models over HTTP and gRPC
//	vigil probe ready                    exec probe for Kubernetes and scripts
//	vigil manifests --model-repository DIR   Kubernetes manifests
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigilhq/vigil/internal/manifest"
	"github.com/vigilhq/vigil/internal/probe"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		reexecWithSysmonSetting(os.Stderr) // sysmon.go
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serveMain(args[1:], stderr)
	case "probe":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return probe.Run(ctx, args[1:], stdout, stderr)
	case "probe-responder":
		return responderMain(args[1:], stderr)
	case "manifests":
		return manifest.Run(context.Background(), args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "vigil", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "vigil: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: vigil <command> [flags]

commands:
  serve       serve a model repository over HTTP and gRPC
  probe       ask a running server whether it is live, ready, started, or a model is ready
  manifests   print Kubernetes (and KServe) manifests for a model repository
  version     print the version

Run 'vigil <command> -h' for the command's flags.
`)
}
