package manifest

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vigilhq/vigil/internal/health"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// The KServe resources as KServe's own Go types spell them
// (kserve/kserve pkg/apis/serving/v1alpha1/servingruntime_types.go and
// v1beta1/predictor.go, predictor_model.go, component.go): written
// independently of kserve.go so that strict decoding checks vigil's field
// names and types against KServe's, not against themselves.
type kserveServingRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		SupportedModelFormats []struct {
			Name       string  `json:"name"`
			Version    *string `json:"version,omitempty"`
			AutoSelect *bool   `json:"autoSelect,omitempty"`
			Priority   *int32  `json:"priority,omitempty"`
		} `json:"supportedModelFormats,omitempty"`
		MultiModel       *bool               `json:"multiModel,omitempty"`
		Disabled         *bool               `json:"disabled,omitempty"`
		ProtocolVersions []string            `json:"protocolVersions,omitempty"`
		Containers       []corev1.Container  `json:"containers"`
		Volumes          []corev1.Volume     `json:"volumes,omitempty"`
		NodeSelector     map[string]string   `json:"nodeSelector,omitempty"`
		Tolerations      []corev1.Toleration `json:"tolerations,omitempty"`
		Labels           map[string]string   `json:"labels,omitempty"`
		Annotations      map[string]string   `json:"annotations,omitempty"`
		GrpcDataEndpoint *string             `json:"grpcDataEndpoint,omitempty"`
		HTTPDataEndpoint *string             `json:"httpDataEndpoint,omitempty"`
	} `json:"spec"`
}

type kserveInferenceService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Predictor struct {
			Model *struct {
				ModelFormat struct {
					Name    string  `json:"name"`
					Version *string `json:"version,omitempty"`
				} `json:"modelFormat"`
				Runtime          *string `json:"runtime,omitempty"`
				StorageURI       *string `json:"storageUri,omitempty"`
				RuntimeVersion   *string `json:"runtimeVersion,omitempty"`
				ProtocolVersion  *string `json:"protocolVersion,omitempty"`
				corev1.Container `json:",inline"`
			} `json:"model,omitempty"`
			corev1.PodSpec `json:",inline"`
			MinReplicas    *int32 `json:"minReplicas,omitempty"`
			MaxReplicas    int32  `json:"maxReplicas,omitempty"`
		} `json:"predictor"`
	} `json:"spec"`
}

// decoded is a generated stream decoded strictly into the API types.
type decoded struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	configMap  *corev1.ConfigMap
	runtime    *kserveServingRuntime
	isvc       *kserveInferenceService
	kinds      []string
}

// decodeStrict splits a YAML stream and decodes every document strictly:
// an unknown field, a wrong type or a duplicate key fails the test.
func decodeStrict(t *testing.T, stream []byte) decoded {
	t.Helper()
	var d decoded
	for i, doc := range strings.Split(string(stream), "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i+1, err)
		}
		var into any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			d.deployment = &appsv1.Deployment{}
			into = d.deployment
		case "v1 Service":
			d.service = &corev1.Service{}
			into = d.service
		case "v1 ConfigMap":
			d.configMap = &corev1.ConfigMap{}
			into = d.configMap
		case "serving.kserve.io/v1alpha1 ServingRuntime":
			d.runtime = &kserveServingRuntime{}
			into = d.runtime
		case "serving.kserve.io/v1beta1 InferenceService":
			d.isvc = &kserveInferenceService{}
			into = d.isvc
		default:
			t.Fatalf("document %d: unexpected apiVersion/kind %q %q", i+1, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("document %d (%s): strict decoding: %v\n%s", i+1, tm.Kind, err, doc)
		}
		d.kinds = append(d.kinds, tm.Kind)
	}
	return d
}

func TestDecodeStrictRejects(t *testing.T) {
	// The strict decoder itself must catch what a typo would produce.
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nspec:\n  portz: []\n",
		"wrong type":    "apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: \"eighty\"}]\n",
		"duplicate key": "apiVersion: v1\nkind: Service\nmetadata: {name: a, name: b}\n",
	} {
		if err := yaml.UnmarshalStrict([]byte(doc), &corev1.Service{}); err == nil {
			t.Errorf("%s: strict decoding accepted %q", name, doc)
		}
	}
}

func generate(t *testing.T, models []ModelInfo, o Options) (decoded, []byte) {
	t.Helper()
	docs, err := Generate(models, o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, docs); err != nil {
		t.Fatal(err)
	}
	return decodeStrict(t, buf.Bytes()), buf.Bytes()
}

func policy(edit func(*health.Policy)) health.Policy {
	p := health.DefaultPolicy()
	if edit != nil {
		edit(&p)
	}
	return p
}

func TestDerive(t *testing.T) {
	stopAfter := func(d time.Duration) health.Policy {
		return policy(func(p *health.Policy) { p.StopTrafficThreshold = d; p.RestartThreshold = max(d, p.RestartThreshold) })
	}
	tests := []struct {
		name   string
		models []ModelInfo
		edit   func(*Options)
		// want: startup failureThreshold, readiness period, liveness
		// period and failureThreshold, preStop, grace, instances.
		startupFT, readyPeriod, livePeriod, liveFT int32
		preStop, grace                             int64
		instances                                  int
	}{
		{
			name:      "defaults",
			models:    []ModelInfo{{Name: "m", Policy: policy(nil), Instances: 1}},
			startupFT: 61, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 5 + 5 + 30 + 5 + 10, instances: 1,
		},
		{
			name:      "no models: server defaults",
			startupFT: 61, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 1,
		},
		{
			name: "fast stop-traffic wins over slow",
			models: []ModelInfo{
				{Name: "slow", Policy: stopAfter(60 * time.Second), Instances: 2},
				{Name: "fast", Policy: stopAfter(0), Instances: 3},
			},
			startupFT: 61, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 5,
		},
		{
			name:      "stop-traffic 3s",
			models:    []ModelInfo{{Name: "m", Policy: stopAfter(3500 * time.Millisecond), Instances: 1}},
			startupFT: 61, readyPeriod: 3, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 1,
		},
		{
			name:      "slow stop-traffic caps the period at 5s",
			models:    []ModelInfo{{Name: "m", Policy: stopAfter(30 * time.Second), Instances: 1}},
			startupFT: 61, readyPeriod: 5, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 1,
		},
		{
			name: "slow load",
			models: []ModelInfo{
				{Name: "big", Policy: policy(nil), Instances: 1, LoadTime: 20 * time.Minute},
				{Name: "small", Policy: policy(nil), Instances: 1, LoadTime: 10 * time.Second},
			},
			startupFT: 20*60/5 + 1, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 2,
		},
		{
			name: "five models load in two waves",
			models: []ModelInfo{
				{Name: "a", Policy: policy(nil), Instances: 1}, {Name: "b", Policy: policy(nil), Instances: 1},
				{Name: "c", Policy: policy(nil), Instances: 1}, {Name: "d", Policy: policy(nil), Instances: 1},
				{Name: "e", Policy: policy(nil), Instances: 1},
			},
			edit:      func(o *Options) { o.LoadTime = time.Minute },
			startupFT: 2*60/5 + 1, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 5,
		},
		{
			name:      "explicit startup budget, rounded up",
			models:    []ModelInfo{{Name: "m", Policy: policy(nil), Instances: 1, LoadTime: time.Hour}},
			edit:      func(o *Options) { o.StartupBudget = 92 * time.Second },
			startupFT: 19 + 1, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 5, grace: 55, instances: 1,
		},
		{
			name:      "no drain delay: no preStop",
			models:    []ModelInfo{{Name: "m", Policy: policy(nil), Instances: 1}},
			edit:      func(o *Options) { o.DrainDelay = 0 },
			startupFT: 61, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 0, grace: 30 + 5 + 10, instances: 1,
		},
		{
			name:   "long drain and shutdown",
			models: []ModelInfo{{Name: "m", Policy: policy(nil), Instances: 1}},
			edit: func(o *Options) {
				o.DrainDelay, o.ShutdownTimeout, o.FinalizeTimeout = 12500*time.Millisecond, 2*time.Minute, 20*time.Second
			},
			startupFT: 61, readyPeriod: 2, livePeriod: 10, liveFT: 3,
			preStop: 13, grace: 13 + 13 + 120 + 20 + 10, instances: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			if tt.edit != nil {
				tt.edit(&o)
			}
			p, err := Derive(tt.models, o)
			if err != nil {
				t.Fatal(err)
			}
			got := []int64{int64(p.Startup.FailureThreshold), int64(p.Readiness.PeriodSeconds), int64(p.Liveness.PeriodSeconds), int64(p.Liveness.FailureThreshold), p.PreStopSeconds, p.GracePeriodSeconds, int64(p.Instances)}
			want := []int64{int64(tt.startupFT), int64(tt.readyPeriod), int64(tt.livePeriod), int64(tt.liveFT), tt.preStop, tt.grace, int64(tt.instances)}
			if !slices.Equal(got, want) {
				t.Errorf("startupFT, readyPeriod, livePeriod, liveFT, preStop, grace, instances = %v, want %v", got, want)
			}
			checkInvariants(t, p, o)

			// The same numbers reach the strictly decoded Deployment.
			d, _ := generate(t, tt.models, o)
			c := d.deployment.Spec.Template.Spec.Containers[0]
			if c.StartupProbe.FailureThreshold != tt.startupFT || c.ReadinessProbe.PeriodSeconds != tt.readyPeriod ||
				c.LivenessProbe.PeriodSeconds != tt.livePeriod || c.LivenessProbe.FailureThreshold != tt.liveFT {
				t.Errorf("probes in the Deployment differ from the plan: %+v %+v %+v", c.StartupProbe, c.ReadinessProbe, c.LivenessProbe)
			}
			if got := *d.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; got != tt.grace {
				t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, tt.grace)
			}
			switch {
			case tt.preStop == 0 && c.Lifecycle != nil:
				t.Errorf("lifecycle = %+v, want none", c.Lifecycle)
			case tt.preStop > 0 && (c.Lifecycle == nil || c.Lifecycle.PreStop.Sleep.Seconds != tt.preStop):
				t.Errorf("lifecycle = %+v, want preStop sleep %d", c.Lifecycle, tt.preStop)
			}
		})
	}
}

// checkInvariants checks the rules docs/kubernetes.md promises.
func checkInvariants(t *testing.T, p Plan, o Options) {
	t.Helper()
	// Startup: the last allowed failure comes (F-1)×period after start.
	if covered := time.Duration(p.Startup.FailureThreshold-1) * time.Duration(p.Startup.PeriodSeconds) * time.Second; covered < p.StartupBudget {
		t.Errorf("startup probe covers %s, less than the budget %s", covered, p.StartupBudget)
	}
	// Readiness: within the smallest stop-traffic threshold, never below 2s.
	if w := p.Readiness.Window(); w > max(p.StopTraffic, 2*time.Second) || w > 5*time.Second {
		t.Errorf("readiness window %s exceeds max(stop-traffic %s, 2s) or 5s", w, p.StopTraffic)
	}
	if p.Readiness.FailureThreshold != 1 || p.Readiness.SuccessThreshold != 1 {
		t.Errorf("readiness thresholds %+v, want 1/1", p.Readiness)
	}
	// Liveness: more tolerant than readiness.
	if p.Liveness.FailureThreshold < 3*p.Readiness.FailureThreshold || p.Liveness.Window() < 3*p.Readiness.Window() {
		t.Errorf("liveness %+v is not 3× as tolerant as readiness %+v", p.Liveness, p.Readiness)
	}
	// Kubernetes: liveness and startup successThreshold must be 1.
	if p.Liveness.SuccessThreshold != 1 || p.Startup.SuccessThreshold != 1 {
		t.Errorf("liveness/startup successThreshold must be 1")
	}
	// Grace covers preStop, drain delay, shutdown timeout and finalize.
	need := time.Duration(p.PreStopSeconds)*time.Second + o.DrainDelay + o.ShutdownTimeout + o.FinalizeTimeout
	if grace := time.Duration(p.GracePeriodSeconds) * time.Second; grace < need+graceMargin {
		t.Errorf("grace %s < preStop+drain+shutdown+finalize %s + margin", grace, need)
	}
}

func TestProbeKinds(t *testing.T) {
	models := []ModelInfo{{Name: "m", Policy: policy(nil), Instances: 2}}
	t.Run("http", func(t *testing.T) {
		d, _ := generate(t, models, DefaultOptions())
		c := d.deployment.Spec.Template.Spec.Containers[0]
		for _, pr := range []struct {
			p    *corev1.Probe
			path string
		}{{c.StartupProbe, "/startupz"}, {c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/livez"}} {
			if pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || pr.p.HTTPGet.Port.IntValue() != 8000 || pr.p.TimeoutSeconds != 1 {
				t.Errorf("probe %+v, want httpGet %s on 8000 with timeout 1", pr.p, pr.path)
			}
		}
	})
	t.Run("grpc", func(t *testing.T) {
		o := DefaultOptions()
		o.ProbeProtocol = ProbeGRPC
		o.GRPCPort = 9001
		d, _ := generate(t, models, o)
		c := d.deployment.Spec.Template.Spec.Containers[0]
		for _, pr := range []struct {
			p   *corev1.Probe
			svc string
		}{{c.StartupProbe, "startup"}, {c.ReadinessProbe, "readiness"}, {c.LivenessProbe, "liveness"}} {
			if pr.p.GRPC == nil || pr.p.GRPC.Port != 9001 || pr.p.GRPC.Service == nil || *pr.p.GRPC.Service != pr.svc || pr.p.HTTPGet != nil {
				t.Errorf("probe %+v, want grpc service %q on 9001", pr.p, pr.svc)
			}
		}
		if d.service.Spec.Ports[1].Port != 9001 || *d.service.Spec.Ports[1].AppProtocol != "kubernetes.io/h2c" {
			t.Errorf("grpc service port %+v", d.service.Spec.Ports[1])
		}
	})
	t.Run("exec", func(t *testing.T) {
		o := DefaultOptions()
		o.ProbeProtocol = ProbeExec
		d, _ := generate(t, models, o)
		c := d.deployment.Spec.Template.Spec.Containers[0]
		for _, pr := range []struct {
			p      *corev1.Probe
			target string
		}{{c.StartupProbe, "startup"}, {c.ReadinessProbe, "ready"}, {c.LivenessProbe, "live"}} {
			want := []string{"vigil", "probe", pr.target}
			if pr.p.Exec == nil || !slices.Equal(pr.p.Exec.Command, want) || pr.p.TimeoutSeconds != 3 {
				t.Errorf("probe %+v, want exec %q with timeout 3", pr.p, want)
			}
		}
		o.HTTPPort = 9000
		d, _ = generate(t, models, o)
		want := []string{"vigil", "probe", "ready", "--addr", "127.0.0.1:9000"}
		if got := d.deployment.Spec.Template.Spec.Containers[0].ReadinessProbe.Exec.Command; !slices.Equal(got, want) {
			t.Errorf("exec on port 9000 = %q, want %q", got, want)
		}
	})
}

func TestDeploymentShape(t *testing.T) {
	o := DefaultOptions()
	o.Name, o.Namespace, o.Image, o.Replicas = "fraud", "ml", "registry.example/vigil:1.2", 3
	o.ModelsPVC = "fraud-models"
	o.HealthConfig = []byte("restart_threshold_seconds: 60\n")
	o.HealthDefaults = []string{"execute_timeout_seconds=30"}
	models := []ModelInfo{{Name: "b", Policy: policy(nil), Instances: 2}, {Name: "a", Policy: policy(nil), Instances: 1}}
	d, _ := generate(t, models, o)
	if want := []string{"ConfigMap", "Deployment", "Service"}; !slices.Equal(d.kinds, want) {
		t.Fatalf("kinds %q, want %q", d.kinds, want)
	}
	dep := d.deployment
	if dep.Name != "fraud" || dep.Namespace != "ml" || *dep.Spec.Replicas != 3 {
		t.Errorf("deployment meta %s/%s replicas %d", dep.Namespace, dep.Name, *dep.Spec.Replicas)
	}
	sel := dep.Spec.Selector.MatchLabels
	for k, v := range sel {
		if dep.Spec.Template.Labels[k] != v || d.service.Spec.Selector[k] != v {
			t.Errorf("selector label %s=%s is not on the pod template and the service", k, v)
		}
	}
	c := dep.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"serve", "--model-repository", "/models", "--http-port", "8000", "--grpc-port", "8001",
		"--drain-delay", "5s", "--shutdown-timeout", "30s", "--finalize-timeout", "5s",
		"--health-config", "/etc/vigil/health.yaml", "--health-default", "execute_timeout_seconds=30"}
	if !slices.Equal(c.Command, []string{"vigil"}) || !slices.Equal(c.Args, wantArgs) || c.Image != o.Image {
		t.Errorf("command %q args %q image %q; want args %q", c.Command, c.Args, c.Image, wantArgs)
	}
	// 250m + 3 instances × 500m; 256Mi + 3 × 512Mi.
	if cpu, mem := c.Resources.Requests.Cpu().String(), c.Resources.Requests.Memory().String(); cpu != "1750m" || mem != "1792Mi" {
		t.Errorf("requests cpu %s memory %s, want 1750m 1792Mi", cpu, mem)
	}
	vols := dep.Spec.Template.Spec.Volumes
	if len(vols) != 2 || vols[0].PersistentVolumeClaim == nil || vols[0].PersistentVolumeClaim.ClaimName != "fraud-models" ||
		vols[1].ConfigMap == nil || vols[1].ConfigMap.Name != d.configMap.Name {
		t.Errorf("volumes %+v", vols)
	}
	if d.configMap.Data["health.yaml"] != string(o.HealthConfig) || d.configMap.Namespace != "ml" {
		t.Errorf("configmap %+v", d.configMap)
	}
	if dep.Spec.Template.Annotations["checksum/health-config"] == "" || dep.Spec.Template.Annotations["vigil/models"] != "a,b" {
		t.Errorf("pod annotations %v", dep.Spec.Template.Annotations)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru.MaxUnavailable.IntValue() != 0 || ru.MaxSurge.IntValue() != 1 {
		t.Errorf("rolling update %+v, want maxUnavailable 0, maxSurge 1", ru)
	}
	ports := d.service.Spec.Ports
	if len(ports) != 2 || ports[0].Name != "http" || ports[0].Port != 8000 || ports[0].TargetPort.String() != "http" ||
		ports[1].Name != "grpc" || ports[1].Port != 8001 {
		t.Errorf("service ports %+v", ports)
	}
}

func TestPreStopExec(t *testing.T) {
	o := DefaultOptions()
	o.PreStopExec = true
	d, _ := generate(t, nil, o)
	h := d.deployment.Spec.Template.Spec.Containers[0].Lifecycle.PreStop
	if h.Sleep != nil || h.Exec == nil || !slices.Equal(h.Exec.Command, []string{"sleep", "5"}) {
		t.Errorf("preStop %+v, want exec sleep 5", h)
	}
}

func TestKServe(t *testing.T) {
	o := DefaultOptions()
	o.KServe, o.StorageURI, o.Replicas, o.Namespace = true, "s3://bucket/models", 2, "ml"
	o.HealthConfig = []byte("period_seconds: 5\n")
	models := []ModelInfo{{Name: "m", Policy: policy(func(p *health.Policy) { p.StopTrafficThreshold = 4 * time.Second }), Instances: 2}}
	d, out := generate(t, models, o)
	if want := []string{"ConfigMap", "ServingRuntime", "InferenceService"}; !slices.Equal(d.kinds, want) {
		t.Fatalf("kinds %q, want %q", d.kinds, want)
	}
	if d.deployment != nil || d.service != nil {
		t.Error("KServe output must not carry its own Deployment or Service: KServe creates them")
	}
	rt := d.runtime
	if len(rt.Spec.SupportedModelFormats) != 1 || rt.Spec.SupportedModelFormats[0].Name != "vigil" || !*rt.Spec.SupportedModelFormats[0].AutoSelect {
		t.Errorf("supportedModelFormats %+v", rt.Spec.SupportedModelFormats)
	}
	if !slices.Equal(rt.Spec.ProtocolVersions, []string{"v2", "grpc-v2"}) {
		t.Errorf("protocolVersions %q", rt.Spec.ProtocolVersions)
	}
	c := rt.Spec.Containers[0]
	if c.Name != "kserve-container" || !slices.Contains(c.Args, "/mnt/models") {
		t.Errorf("container %s args %q", c.Name, c.Args)
	}
	if c.ReadinessProbe.PeriodSeconds != 4 || c.StartupProbe.HTTPGet.Path != "/startupz" || c.Lifecycle.PreStop.Sleep.Seconds != 5 {
		t.Errorf("probes/lifecycle not derived: %+v %+v", c.ReadinessProbe, c.Lifecycle)
	}
	if len(rt.Spec.Volumes) != 1 || rt.Spec.Volumes[0].ConfigMap.Name != "vigil-health" {
		t.Errorf("runtime volumes %+v", rt.Spec.Volumes)
	}
	p := d.isvc.Spec.Predictor
	if p.Model == nil || p.Model.ModelFormat.Name != "vigil" || *p.Model.Runtime != rt.Name || *p.Model.StorageURI != "s3://bucket/models" {
		t.Fatalf("predictor model %+v", p.Model)
	}
	// A runtime listing only v2 protocols is chosen only for a v2 model:
	// KServe's default protocolVersion is v1.
	if *p.Model.ProtocolVersion != "v2" {
		t.Errorf("protocolVersion %q, want v2", *p.Model.ProtocolVersion)
	}
	if *p.MinReplicas != 2 || *p.TerminationGracePeriodSeconds != 55 {
		t.Errorf("minReplicas %d grace %d", *p.MinReplicas, *p.TerminationGracePeriodSeconds)
	}
	if d.isvc.Annotations["serving.kserve.io/deploymentMode"] != "RawDeployment" || d.isvc.Namespace != "ml" {
		t.Errorf("isvc meta %+v", d.isvc.ObjectMeta)
	}
	if !bytes.Contains(out, []byte("# storageUri must point at the model repository")) {
		t.Error("the InferenceService has no comment about storageUri")
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"bad name", func(o *Options) { o.Name = "My_Server" }, "DNS label"},
		{"long name", func(o *Options) { o.Name = strings.Repeat("a", 60) }, "DNS label"},
		{"bad namespace", func(o *Options) { o.Namespace = "ML" }, "namespace"},
		{"same ports", func(o *Options) { o.GRPCPort = 8000 }, "both 8000"},
		{"port range", func(o *Options) { o.HTTPPort = 70000 }, "out of range"},
		{"probe", func(o *Options) { o.ProbeProtocol = "tcp" }, "want http, grpc or exec"},
		{"negative drain", func(o *Options) { o.DrainDelay = -time.Second }, "negative"},
		{"negative replicas", func(o *Options) { o.Replicas = -1 }, "negative"},
		{"pvc with kserve", func(o *Options) { o.KServe, o.ModelsPVC = true, "x" }, "does not apply to KServe"},
		{"storage uri without kserve", func(o *Options) { o.StorageURI = "s3://x" }, "only to KServe"},
		{"health default", func(o *Options) { o.HealthDefaults = []string{"novalue"} }, "key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.edit(&o)
			if _, err := Generate(nil, o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Generate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := Generate([]ModelInfo{{Name: "m", Instances: -1}}, DefaultOptions()); err == nil {
		t.Error("a negative instance count was accepted")
	}
}

func TestZeroOptions(t *testing.T) {
	// A zero Options is usable: names, ports and probes take the defaults.
	d, _ := generate(t, nil, Options{})
	c := d.deployment.Spec.Template.Spec.Containers[0]
	if d.deployment.Name != "vigil" || c.Ports[0].ContainerPort != 8000 || c.ReadinessProbe.HTTPGet == nil || *d.deployment.Spec.Replicas != 1 {
		t.Errorf("zero options gave %+v", d.deployment)
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"default", []string{"--model-repository", "testdata/repo"}},
		{"health-config", []string{"--model-repository", "testdata/repo", "--health-config", "testdata/health-config.yaml",
			"--models-pvc", "models", "--namespace", "ml", "--replicas", "3", "--image", "registry.example/vigil:0.1.0"}},
		{"grpc", []string{"--model-repository", "testdata/repo", "--probe", "grpc", "--drain-delay", "0s"}},
		{"exec", []string{"--model-repository", "testdata/repo", "--probe", "exec", "--http-port", "9000", "--prestop", "exec",
			"--startup-budget", "2m", "--health-default", "execute_timeout_seconds=30"}},
		{"kserve", []string{"--model-repository", "testdata/repo", "--kserve", "--storage-uri", "s3://models-bucket/repo",
			"--load-time", "10m", "--cpu-per-instance", "1", "--memory-per-instance", "1Gi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Run(t.Context(), tt.args, &out, &errOut); code != 0 {
				t.Fatalf("Run(%q) = %d: %s", tt.args, code, errOut.String())
			}
			decodeStrict(t, out.Bytes())
			golden := filepath.Join("testdata", "golden", tt.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s (run with -update after checking):\n%s", golden, out.String())
			}
		})
	}
}

func TestRunRepository(t *testing.T) {
	// testdata/repo: add_sub (2 instances, stop-traffic 4s) and identity
	// (1 instance, default policy: stop-traffic 0).
	var out, errOut bytes.Buffer
	if code := Run(t.Context(), []string{"--model-repository", "testdata/repo"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	d := decodeStrict(t, out.Bytes())
	c := d.deployment.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe.PeriodSeconds != 2 {
		t.Errorf("readiness period %d, want 2 (identity stops traffic at once)", c.ReadinessProbe.PeriodSeconds)
	}
	if cpu := c.Resources.Requests.Cpu().String(); cpu != "1750m" {
		t.Errorf("cpu request %s, want 1750m for 3 instances", cpu)
	}

	// With server defaults of 10s stop-traffic, add_sub's 4s is the smallest.
	out.Reset()
	if code := Run(t.Context(), []string{"--model-repository", "testdata/repo", "--health-config", "testdata/health-config.yaml"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	d = decodeStrict(t, out.Bytes())
	if p := d.deployment.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds; p != 4 {
		t.Errorf("readiness period %d, want 4", p)
	}
	out.Reset()
	if code := Run(t.Context(), []string{"--model-repository", "testdata/repo", "--health-default", "stop_traffic_threshold_seconds=30"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	d = decodeStrict(t, out.Bytes())
	if p := d.deployment.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds; p != 4 {
		t.Errorf("readiness period %d, want 4 (add_sub's own 4s beats the 30s default)", p)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined"},
		{"extra args", []string{"x"}, 2, "unexpected arguments"},
		{"bad probe", []string{"--probe", "tcp"}, 2, "want http, grpc or exec"},
		{"bad prestop", []string{"--prestop", "wait"}, 2, "--prestop"},
		{"bad quantity", []string{"--cpu-per-instance", "lots"}, 2, "invalid quantity"},
		{"negative replicas", []string{"--replicas", "-1"}, 2, "out of range"},
		{"missing repository", []string{"--model-repository", "testdata/nope"}, 1, "cannot read model repository"},
		{"empty repository", []string{"--model-repository", "testdata/repo/add_sub/1"}, 1, "no models"},
		{"missing health config", []string{"--health-config", "testdata/nope.yaml"}, 1, "cannot read health policy"},
		{"bad health default", []string{"--health-default", "nokey"}, 1, "want key=value"},
		{"unknown health key", []string{"--health-default", "period=3"}, 1, "period"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(t.Context(), tt.args, &out, &errOut)
			if code != tt.code || out.Len() != 0 || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("Run(%q) = %d, stdout %q, stderr %q; want %d and %q", tt.args, code, out.String(), errOut.String(), tt.code, tt.want)
			}
		})
	}
}

func TestRunWithoutRepository(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Run(t.Context(), nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "no --model-repository") {
		t.Errorf("stderr %q does not warn about the missing repository", errOut.String())
	}
	decodeStrict(t, out.Bytes())
}
