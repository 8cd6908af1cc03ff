package manifest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/repository"
)

// Exit codes of `vigil manifests`.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usageText = `usage: vigil manifests [flags]

Writes Kubernetes manifests for a vigil model repository to stdout: a
Deployment and a Service (with --kserve, a KServe ServingRuntime and
InferenceService), with startup, readiness and liveness probes, preStop and
terminationGracePeriodSeconds derived from the models' health policies.
docs/kubernetes.md explains every rule.

Flags:
`

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// quantityFlag is a Kubernetes resource quantity flag.
type quantityFlag struct{ q *resource.Quantity }

func (f quantityFlag) String() string {
	if f.q == nil {
		return ""
	}
	return f.q.String()
}

func (f quantityFlag) Set(v string) error {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return fmt.Errorf("invalid quantity %q", v)
	}
	*f.q = q
	return nil
}

// Run is `vigil manifests`. args excludes the subcommand name.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := DefaultOptions()
	o.CPUPerInstance = resource.MustParse("500m")
	o.MemoryPerInstance = resource.MustParse("512Mi")

	fs := flag.NewFlagSet("vigil manifests", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var (
		repo, healthConfig, probeProto, prestop string
		healthSet                               stringList
	)
	fs.StringVar(&repo, "model-repository", "", "model repository to read the models and their health.yaml from")
	fs.StringVar(&healthConfig, "health-config", "", "server-wide health policy defaults (YAML); shipped as a ConfigMap")
	fs.Var(&healthSet, "health-default", "one server health policy default as key=value (repeatable)")
	fs.BoolVar(&o.KServe, "kserve", false, "generate a KServe ServingRuntime and InferenceService instead of a Deployment and Service")
	fs.StringVar(&probeProto, "probe", string(ProbeHTTP), "probe kind: http (httpGet), grpc (grpc.health.v1) or exec (vigil probe)")
	fs.StringVar(&o.Image, "image", o.Image, "vigil container image (vigil must be on its PATH)")
	fs.StringVar(&o.Name, "name", o.Name, "name of the generated objects")
	fs.StringVar(&o.Namespace, "namespace", "", "namespace of the generated objects (default: none written)")
	fs.IntVar(&o.HTTPPort, "http-port", o.HTTPPort, "vigil's HTTP port")
	fs.IntVar(&o.GRPCPort, "grpc-port", o.GRPCPort, "vigil's gRPC port")
	fs.DurationVar(&o.DrainDelay, "drain-delay", o.DrainDelay, "preStop sleep, and vigil's --drain-delay after SIGTERM")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "vigil's --shutdown-timeout for in-flight requests")
	fs.DurationVar(&o.FinalizeTimeout, "finalize-timeout", o.FinalizeTimeout, "vigil's --finalize-timeout for each finalize()")
	replicas := fs.Int("replicas", int(o.Replicas), "replicas (KServe: minReplicas)")
	fs.DurationVar(&o.StartupBudget, "startup-budget", 0, "how long start-up may take (default: derived from --load-time and the model count)")
	fs.DurationVar(&o.LoadTime, "load-time", o.LoadTime, "worst load time of one model, for the derived start-up budget")
	fs.StringVar(&o.ModelsPVC, "models-pvc", "", "PersistentVolumeClaim holding the model repository (default: an emptyDir placeholder)")
	fs.StringVar(&o.StorageURI, "storage-uri", "", "KServe storageUri of the model repository (default: pvc://<name>-models)")
	fs.Var(quantityFlag{&o.CPUPerInstance}, "cpu-per-instance", "CPU request per model instance")
	fs.Var(quantityFlag{&o.MemoryPerInstance}, "memory-per-instance", "memory request per model instance")
	fs.StringVar(&prestop, "prestop", "sleep", "preStop hook: sleep (native sleep action, Kubernetes ≥ 1.30) or exec (runs sleep in the image)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "vigil manifests: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments: %q", fs.Args())
	}
	if *replicas < 0 || *replicas > 1<<20 {
		return usageErr("--replicas %d is out of range", *replicas)
	}
	o.Replicas = int32(*replicas)
	o.ProbeProtocol = ProbeProtocol(probeProto)
	switch prestop {
	case "sleep":
	case "exec":
		o.PreStopExec = true
	default:
		return usageErr("--prestop must be sleep or exec, not %q", prestop)
	}
	if o.DrainDelay < 0 || o.ShutdownTimeout < 0 || o.StartupBudget < 0 {
		return usageErr("durations must not be negative")
	}
	if o.FinalizeTimeout <= 0 || o.LoadTime <= 0 {
		return usageErr("--finalize-timeout and --load-time must be positive")
	}

	base, err := modelconfig.ServerPolicy(healthConfig, healthSet)
	if err != nil {
		fmt.Fprintln(stderr, "vigil manifests:", err)
		return exitError
	}
	o.Defaults = &base
	o.HealthDefaults = healthSet
	if healthConfig != "" {
		if o.HealthConfig, err = os.ReadFile(healthConfig); err != nil {
			fmt.Fprintln(stderr, "vigil manifests:", err)
			return exitError
		}
	}

	var models []ModelInfo
	if repo == "" {
		fmt.Fprintln(stderr, "vigil manifests: no --model-repository: probes derived from the server health policy alone")
	} else if models, err = LoadModels(ctx, repo, base); err != nil {
		fmt.Fprintln(stderr, "vigil manifests:", err)
		return exitError
	}

	docs, err := Generate(models, o)
	if err != nil {
		return usageErr("%v", err)
	}
	if err := Write(stdout, docs); err != nil {
		fmt.Fprintln(stderr, "vigil manifests:", err)
		return exitError
	}
	return exitOK
}

// LoadModels reads every model of the repository repoDir with its effective
// health policy (defaults overlaid with its health.yaml) and instance count.
func LoadModels(ctx context.Context, repoDir string, defaults health.Policy) ([]ModelInfo, error) {
	names, err := repository.Scan(repoDir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no models in %s (a model is a directory with a config.pbtxt)", repoDir)
	}
	models := make([]ModelInfo, 0, len(names))
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Partial: no Python runs here, so inputs and outputs that
		// auto-complete would add are not checked.
		m, err := modelconfig.LoadWith(ctx, repoDir, name, defaults, modelconfig.Options{Partial: true})
		if err != nil {
			return nil, err
		}
		models = append(models, ModelInfo{Name: m.Name, Policy: m.Policy, Instances: len(m.InstanceNames())})
	}
	return models, nil
}
