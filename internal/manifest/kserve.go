package manifest

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The KServe resources vigil generates. KServe's Go types live in its own
// module; these carry only the fields vigil sets, with KServe's JSON names
// (serving.kserve.io/v1alpha1 ServingRuntime, v1beta1 InferenceService).

// ServingRuntime is a serving.kserve.io/v1alpha1 ServingRuntime.
type ServingRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ServingRuntimeSpec `json:"spec"`
}

// ServingRuntimeSpec is the part of KServe's ServingRuntimeSpec vigil uses.
type ServingRuntimeSpec struct {
	SupportedModelFormats []SupportedModelFormat `json:"supportedModelFormats,omitempty"`
	MultiModel            *bool                  `json:"multiModel,omitempty"`
	// ProtocolVersions: "v1", "v2", "grpc-v1", "grpc-v2".
	ProtocolVersions []string           `json:"protocolVersions,omitempty"`
	Containers       []corev1.Container `json:"containers"`
	Volumes          []corev1.Volume    `json:"volumes,omitempty"`
}

// SupportedModelFormat is a model format a runtime serves.
type SupportedModelFormat struct {
	Name       string  `json:"name"`
	Version    *string `json:"version,omitempty"`
	AutoSelect *bool   `json:"autoSelect,omitempty"`
	Priority   *int32  `json:"priority,omitempty"`
}

// InferenceService is a serving.kserve.io/v1beta1 InferenceService.
type InferenceService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              InferenceServiceSpec `json:"spec"`
}

// InferenceServiceSpec holds the predictor.
type InferenceServiceSpec struct {
	Predictor PredictorSpec `json:"predictor"`
}

// PredictorSpec is the part of KServe's PredictorSpec vigil uses: the
// model, and the inlined pod and component-extension fields.
type PredictorSpec struct {
	Model                         *ModelSpec `json:"model,omitempty"`
	MinReplicas                   *int32     `json:"minReplicas,omitempty"`
	TerminationGracePeriodSeconds *int64     `json:"terminationGracePeriodSeconds,omitempty"`
}

// ModelSpec names the model format, the runtime and where the model is.
type ModelSpec struct {
	ModelFormat     ModelFormat `json:"modelFormat"`
	Runtime         *string     `json:"runtime,omitempty"`
	StorageURI      *string     `json:"storageUri,omitempty"`
	ProtocolVersion *string     `json:"protocolVersion,omitempty"`
}

// ModelFormat is the format of an InferenceService's model.
type ModelFormat struct {
	Name    string  `json:"name"`
	Version *string `json:"version,omitempty"`
}

// deploymentModeAnnotation selects KServe's plain-Deployment mode. Knative
// (serverless) mode rejects lifecycle hooks on the model container, and the
// preStop drain is part of what vigil's manifests get right. KServe ≥ 0.15
// calls the mode "Standard" and still accepts "RawDeployment".
const deploymentModeAnnotation = "serving.kserve.io/deploymentMode"

func kserveDocs(models []ModelInfo, o Options, p Plan) []Document {
	c := container(kserveContainer, kserveModelsMount, o, p)
	version, yes, prio := "1", true, int32(1)
	rt := &ServingRuntime{
		TypeMeta:   metav1.TypeMeta{APIVersion: "serving.kserve.io/v1alpha1", Kind: "ServingRuntime"},
		ObjectMeta: objectMeta(o.Name, o),
		Spec: ServingRuntimeSpec{
			SupportedModelFormats: []SupportedModelFormat{{Name: modelFormat, Version: &version, AutoSelect: &yes, Priority: &prio}},
			ProtocolVersions:      []string{"v2", "grpc-v2"},
			Containers:            []corev1.Container{c},
		},
	}
	if len(o.HealthConfig) > 0 {
		rt.Spec.Volumes = []corev1.Volume{{Name: "health-config", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: o.Name + "-health"}},
		}}}
	}

	runtime, uri, protocol := o.Name, o.StorageURI, "v2"
	replicas, grace := o.Replicas, p.GracePeriodSeconds
	isvcMeta := objectMeta(o.Name, o)
	isvcMeta.Annotations = map[string]string{deploymentModeAnnotation: "RawDeployment"}
	isvc := &InferenceService{
		TypeMeta:   metav1.TypeMeta{APIVersion: "serving.kserve.io/v1beta1", Kind: "InferenceService"},
		ObjectMeta: isvcMeta,
		Spec: InferenceServiceSpec{Predictor: PredictorSpec{
			Model: &ModelSpec{
				ModelFormat:     ModelFormat{Name: modelFormat, Version: &version},
				Runtime:         &runtime,
				StorageURI:      &uri,
				ProtocolVersion: &protocol,
			},
			MinReplicas:                   &replicas,
			TerminationGracePeriodSeconds: &grace,
		}},
	}

	rtComment := append([]string{summary(fmt.Sprintf("KServe ServingRuntime %q", o.Name), models, p)}, planComment(p)...)
	isvcComment := []string{
		"storageUri must point at the model repository (the directory that holds <model>/config.pbtxt);",
		"KServe downloads it to " + kserveModelsMount + ". RawDeployment mode keeps the preStop drain hook.",
	}
	return []Document{{Comment: rtComment, Object: rt}, {Comment: isvcComment, Object: isvc}}
}
