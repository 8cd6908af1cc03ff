package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigilhq/vigil/internal/health"
)

// ProbeProtocol is how the kubelet asks vigil.
type ProbeProtocol string

// The probe protocols.
const (
	ProbeHTTP ProbeProtocol = "http" // httpGet /livez, /readyz, /startupz
	ProbeGRPC ProbeProtocol = "grpc" // grpc.health.v1 services liveness, readiness, startup
	ProbeExec ProbeProtocol = "exec" // vigil probe live|ready|startup
)

// Options shape the generated manifests. Start from DefaultOptions: in a
// zero Options, zero drain delay and shutdown timeout mean none.
type Options struct {
	// Name names every object (and is the app.kubernetes.io/instance label).
	Name string
	// Image is the vigil container image; it must have vigil on PATH.
	Image string
	// Namespace, if set, is written into every object.
	Namespace string

	HTTPPort, GRPCPort int
	ProbeProtocol      ProbeProtocol
	// KServe generates a ServingRuntime and an InferenceService instead of
	// a Deployment and a Service.
	KServe bool

	// DrainDelay is both the preStop sleep and vigil's --drain-delay.
	DrainDelay time.Duration
	// ShutdownTimeout is vigil's --shutdown-timeout.
	ShutdownTimeout time.Duration
	// FinalizeTimeout is vigil's --finalize-timeout; 0 means 5 s.
	FinalizeTimeout time.Duration

	// Replicas of the Deployment (KServe: minReplicas); 0 means 1.
	Replicas int32

	// StartupBudget, if set, is how long start-up may take; otherwise it is
	// derived from the models' load times.
	StartupBudget time.Duration
	// LoadTime is the worst load time assumed for a model whose own is not
	// known; 0 means 5 minutes.
	LoadTime time.Duration
	// Defaults is the server health policy, used when there are no models;
	// nil means health.DefaultPolicy().
	Defaults *health.Policy

	// HealthConfig is the --health-config file's content; when set it is
	// shipped as a ConfigMap and passed to vigil serve.
	HealthConfig []byte
	// HealthDefaults are --health-default key=value settings, passed on.
	HealthDefaults []string

	// ModelsPVC names a PersistentVolumeClaim holding the model repository;
	// empty means an emptyDir placeholder. Not used with KServe.
	ModelsPVC string
	// StorageURI is the InferenceService's storageUri (KServe); empty means
	// the placeholder pvc://<name>-models.
	StorageURI string

	// CPUPerInstance and MemoryPerInstance size the resource requests; zero
	// values mean 500m and 512Mi.
	CPUPerInstance    resource.Quantity
	MemoryPerInstance resource.Quantity

	// PreStopExec runs `sleep` in the container for the preStop hook
	// instead of the kubelet's native sleep action (Kubernetes < 1.30).
	PreStopExec bool
}

// DefaultOptions are the defaults of `vigil manifests`.
func DefaultOptions() Options {
	return Options{
		Name:            "vigil",
		Image:           "vigil:latest",
		HTTPPort:        8000,
		GRPCPort:        8001,
		ProbeProtocol:   ProbeHTTP,
		DrainDelay:      5 * time.Second,
		ShutdownTimeout: 30 * time.Second,
		FinalizeTimeout: 5 * time.Second,
		Replicas:        1,
		LoadTime:        defaultLoadTime,
	}
}

// Fixed paths and names inside the pod.
const (
	modelsMount       = "/models"
	kserveModelsMount = "/mnt/models" // where KServe's storage initializer puts storageUri
	healthConfigDir   = "/etc/vigil"
	healthConfigFile  = "health.yaml"
	containerName     = "vigil"
	kserveContainer   = "kserve-container" // the name KServe expects
	modelFormat       = "vigil"
)

var dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// withDefaults validates o and fills the fields whose zero value is never
// meant literally.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.Name == "" {
		o.Name = d.Name
	}
	if len(o.Name) > 63-len("-health") || !dnsLabel.MatchString(o.Name) {
		return o, fmt.Errorf("name %q must be a DNS label: lower-case letters, digits and '-', starting with a letter, at most %d characters", o.Name, 63-len("-health"))
	}
	if o.Namespace != "" && (len(o.Namespace) > 63 || !dnsLabel.MatchString(o.Namespace)) {
		return o, fmt.Errorf("namespace %q must be a DNS label", o.Namespace)
	}
	if o.Image == "" {
		o.Image = d.Image
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = d.HTTPPort
	}
	if o.GRPCPort == 0 {
		o.GRPCPort = d.GRPCPort
	}
	for _, p := range []int{o.HTTPPort, o.GRPCPort} {
		if p < 1 || p > 65535 {
			return o, fmt.Errorf("port %d is out of range 1-65535", p)
		}
	}
	if o.HTTPPort == o.GRPCPort {
		return o, fmt.Errorf("the HTTP and gRPC ports are both %d", o.HTTPPort)
	}
	switch o.ProbeProtocol {
	case "":
		o.ProbeProtocol = d.ProbeProtocol
	case ProbeHTTP, ProbeGRPC, ProbeExec:
	default:
		return o, fmt.Errorf("probe protocol %q: want http, grpc or exec", o.ProbeProtocol)
	}
	for name, v := range map[string]time.Duration{
		"drain delay": o.DrainDelay, "shutdown timeout": o.ShutdownTimeout, "finalize timeout": o.FinalizeTimeout,
		"startup budget": o.StartupBudget, "load time": o.LoadTime,
	} {
		if v < 0 {
			return o, fmt.Errorf("%s %s is negative", name, v)
		}
	}
	if o.FinalizeTimeout == 0 {
		o.FinalizeTimeout = d.FinalizeTimeout
	}
	if o.LoadTime == 0 {
		o.LoadTime = d.LoadTime
	}
	switch {
	case o.Replicas < 0:
		return o, fmt.Errorf("replicas %d is negative", o.Replicas)
	case o.Replicas == 0:
		o.Replicas = d.Replicas
	}
	if o.Defaults == nil {
		p := health.DefaultPolicy()
		o.Defaults = &p
	}
	if o.CPUPerInstance.IsZero() {
		o.CPUPerInstance = resource.MustParse("500m")
	}
	if o.MemoryPerInstance.IsZero() {
		o.MemoryPerInstance = resource.MustParse("512Mi")
	}
	if o.CPUPerInstance.Sign() < 0 || o.MemoryPerInstance.Sign() < 0 {
		return o, fmt.Errorf("per-instance resources must not be negative")
	}
	for _, kv := range o.HealthDefaults {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return o, fmt.Errorf("health default %q: want key=value", kv)
		}
	}
	if o.KServe && o.ModelsPVC != "" {
		return o, fmt.Errorf("a models PVC does not apply to KServe: KServe mounts the storageUri at %s", kserveModelsMount)
	}
	if !o.KServe && o.StorageURI != "" {
		return o, fmt.Errorf("a storage URI applies only to KServe")
	}
	if o.StorageURI == "" {
		o.StorageURI = "pvc://" + o.Name + "-models"
	}
	return o, nil
}

// Document is one YAML document of the output: a Kubernetes object and the
// comment lines written above it.
type Document struct {
	Comment []string
	Object  any
}

// Generate builds the manifests for models: a Deployment and a Service (and
// a ConfigMap for the health configuration), or with o.KServe a
// ServingRuntime and an InferenceService. Models are taken in name order.
func Generate(models []ModelInfo, o Options) ([]Document, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	models = sortedModels(models)
	plan, err := derive(models, o)
	if err != nil {
		return nil, err
	}
	var docs []Document
	if len(o.HealthConfig) > 0 {
		docs = append(docs, Document{
			Comment: []string{"Server-wide health policy defaults (--health-config), mounted at " + healthConfigDir + "/" + healthConfigFile + "."},
			Object:  healthConfigMap(o),
		})
	}
	if o.KServe {
		return append(docs, kserveDocs(models, o, plan)...), nil
	}
	comment := append([]string{summary(fmt.Sprintf("Deployment %q", o.Name), models, plan)}, planComment(plan)...)
	if o.ModelsPVC == "" {
		comment = append(comment,
			"The models volume is an emptyDir placeholder: replace it with a volume that holds",
			"the model repository (a PersistentVolumeClaim: --models-pvc, or an init container that fetches it).")
	}
	docs = append(docs,
		Document{Comment: comment, Object: deployment(models, o, plan)},
		Document{Object: service(o)},
	)
	return docs, nil
}

// summary is the first comment line of the main document.
func summary(what string, models []ModelInfo, p Plan) string {
	if len(models) == 0 {
		return what + ": no models read; probes derived from the server health policy:"
	}
	return fmt.Sprintf("%s: %d model(s), %d instance(s); probes derived from their health policies:", what, len(models), p.Instances)
}

// planComment explains the derived numbers in the output itself.
func planComment(p Plan) []string {
	least, most := p.Liveness.Reaction()
	return []string{
		fmt.Sprintf("  startup:   every %ds, up to %d failures: covers a %s start-up budget", p.Startup.PeriodSeconds, p.Startup.FailureThreshold, p.StartupBudget),
		fmt.Sprintf("  readiness: every %ds, %d failure(s): out of endpoints within %s of vigil (smallest stop_traffic_threshold %s)", p.Readiness.PeriodSeconds, p.Readiness.FailureThreshold, p.Readiness.Window(), p.StopTraffic),
		fmt.Sprintf("  liveness:  every %ds, %d failures: restarted after %d failed probes in a row (%s–%s of failed liveness)",
			p.Liveness.PeriodSeconds, p.Liveness.FailureThreshold, p.Liveness.FailureThreshold, least, most),
		fmt.Sprintf("  drain:     preStop sleep %ds, terminationGracePeriodSeconds %d", p.PreStopSeconds, p.GracePeriodSeconds),
	}
}

func labels(o Options) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "vigil",
		"app.kubernetes.io/instance":   o.Name,
		"app.kubernetes.io/component":  "inference-server",
		"app.kubernetes.io/managed-by": "vigil-manifests",
	}
}

func selector(o Options) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":     "vigil",
		"app.kubernetes.io/instance": o.Name,
	}
}

func objectMeta(name string, o Options) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: labels(o)}
}

func healthConfigMap(o Options) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(o.Name+"-health", o),
		Data:       map[string]string{healthConfigFile: string(o.HealthConfig)},
	}
}

// serveArgs are the container's arguments after the "vigil" command.
func serveArgs(o Options, repo string) []string {
	args := []string{
		"serve",
		"--model-repository", repo,
		"--http-port", strconv.Itoa(o.HTTPPort),
		"--grpc-port", strconv.Itoa(o.GRPCPort),
		"--drain-delay", o.DrainDelay.String(),
		"--shutdown-timeout", o.ShutdownTimeout.String(),
		"--finalize-timeout", o.FinalizeTimeout.String(),
	}
	if len(o.HealthConfig) > 0 {
		args = append(args, "--health-config", healthConfigDir+"/"+healthConfigFile)
	}
	for _, kv := range o.HealthDefaults {
		args = append(args, "--health-default", kv)
	}
	return args
}

// container is the vigil container; repo is where the model repository is
// mounted.
func container(name, repo string, o Options, p Plan) corev1.Container {
	c := corev1.Container{
		Name:    name,
		Image:   o.Image,
		Command: []string{"vigil"},
		Args:    serveArgs(o, repo),
		Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: int32(o.HTTPPort), Protocol: corev1.ProtocolTCP},
			{Name: "grpc", ContainerPort: int32(o.GRPCPort), Protocol: corev1.ProtocolTCP},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    cpuRequest(p.Instances, o.CPUPerInstance),
				corev1.ResourceMemory: memoryRequest(p.Instances, o.MemoryPerInstance),
			},
		},
		StartupProbe:   probe(o, "startup", p.Startup),
		ReadinessProbe: probe(o, "ready", p.Readiness),
		LivenessProbe:  probe(o, "live", p.Liveness),
	}
	if p.PreStopSeconds > 0 {
		h := &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: p.PreStopSeconds}}
		if o.PreStopExec {
			h = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", strconv.FormatInt(p.PreStopSeconds, 10)}}}
		}
		c.Lifecycle = &corev1.Lifecycle{PreStop: h}
	}
	if len(o.HealthConfig) > 0 {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "health-config", MountPath: healthConfigDir, ReadOnly: true})
	}
	return c
}

// Server-side overhead added to the per-instance requests.
var (
	baseCPU    = resource.MustParse("250m")
	baseMemory = resource.MustParse("256Mi")
)

func cpuRequest(instances int, per resource.Quantity) resource.Quantity {
	return *resource.NewMilliQuantity(baseCPU.MilliValue()+int64(instances)*per.MilliValue(), resource.DecimalSI)
}

func memoryRequest(instances int, per resource.Quantity) resource.Quantity {
	return *resource.NewQuantity(baseMemory.Value()+int64(instances)*per.Value(), resource.BinarySI)
}

// probe builds one probe. target is the `vigil probe` target: live, ready
// or startup.
func probe(o Options, target string, t Timing) *corev1.Probe {
	pr := &corev1.Probe{
		PeriodSeconds:    t.PeriodSeconds,
		TimeoutSeconds:   t.TimeoutSeconds,
		FailureThreshold: t.FailureThreshold,
		SuccessThreshold: t.SuccessThreshold,
	}
	switch o.ProbeProtocol {
	case ProbeGRPC:
		svc := map[string]string{"live": "liveness", "ready": "readiness", "startup": "startup"}[target]
		pr.GRPC = &corev1.GRPCAction{Port: int32(o.GRPCPort), Service: &svc}
	case ProbeExec:
		cmd := []string{"vigil", "probe", target}
		if o.HTTPPort != 8000 {
			cmd = append(cmd, "--addr", "127.0.0.1:"+strconv.Itoa(o.HTTPPort))
		}
		pr.Exec = &corev1.ExecAction{Command: cmd}
	default:
		path := map[string]string{"live": "/livez", "ready": "/readyz", "startup": "/startupz"}[target]
		pr.HTTPGet = &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(int32(o.HTTPPort)), Scheme: corev1.URISchemeHTTP}
	}
	return pr
}

func deployment(models []ModelInfo, o Options, p Plan) *appsv1.Deployment {
	c := container(containerName, modelsMount, o, p)
	models0 := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	readOnly := false
	if o.ModelsPVC != "" {
		models0 = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: o.ModelsPVC, ReadOnly: true}}
		readOnly = true
	}
	c.VolumeMounts = append([]corev1.VolumeMount{{Name: "models", MountPath: modelsMount, ReadOnly: readOnly}}, c.VolumeMounts...)
	volumes := []corev1.Volume{{Name: "models", VolumeSource: models0}}
	annotations := map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(o.HTTPPort),
		"prometheus.io/path":   "/metrics",
	}
	if len(o.HealthConfig) > 0 {
		volumes = append(volumes, corev1.Volume{Name: "health-config", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: o.Name + "-health"}},
		}})
		// A changed policy rolls the pods, which read it only at start.
		sum := sha256.Sum256(o.HealthConfig)
		annotations["checksum/health-config"] = hex.EncodeToString(sum[:])
	}
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.Name
	}
	if len(names) > 0 {
		annotations["vigil/models"] = strings.Join(names, ",")
	}
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	replicas := o.Replicas
	grace := p.GracePeriodSeconds
	tmplMeta := metav1.ObjectMeta{Labels: labels(o), Annotations: annotations}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(o.Name, o),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector(o)},
			// Keep serving capacity during a rollout: a new pod must be
			// ready before an old one is stopped.
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: tmplMeta,
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers:                    []corev1.Container{c},
					Volumes:                       volumes,
				},
			},
		},
	}
}

func service(o Options) *corev1.Service {
	h2c := "kubernetes.io/h2c"
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(o.Name, o),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector(o),
			Ports: []corev1.ServicePort{
				{Name: "http", Port: int32(o.HTTPPort), TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
				{Name: "grpc", Port: int32(o.GRPCPort), TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP, AppProtocol: &h2c},
			},
		},
	}
}
