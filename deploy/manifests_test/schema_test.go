package manifests

// Strict, hand-written schemas for the custom resources the manifests use:
// KServe's ServingRuntime and InferenceService, the Prometheus Operator's
// PodMonitor and Kustomize's Kustomization. Pulling in their Go modules
// would bring controller-runtime, Knative and a second set of Kubernetes
// libraries; these structs instead copy the upstream JSON field names (and
// reuse k8s.io/api's types where upstream does), restricted to the fields
// the manifests may use. A field not listed here fails the strict decode,
// as a typo would: add it here, spelled as upstream spells it, when a
// manifest starts to need it.
//
// Sources: KServe pkg/apis/serving/v1alpha1/servingruntime_types.go and
// v1beta1/{inference_service,predictor,predictor_model,component,podspec}.go;
// prometheus-operator pkg/apis/monitoring/v1/podmonitor_types.go;
// kustomize api/types/kustomization.go.

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ---------------------------------------------------------------------------
// serving.kserve.io/v1alpha1 ServingRuntime

type ServingRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ServingRuntimeSpec `json:"spec"`
}

type ServingRuntimeSpec struct {
	SupportedModelFormats []SupportedModelFormat `json:"supportedModelFormats,omitempty"`
	MultiModel            *bool                  `json:"multiModel,omitempty"`
	Disabled              *bool                  `json:"disabled,omitempty"`
	// v1, v2, grpc-v1 or grpc-v2.
	ProtocolVersions      []string `json:"protocolVersions,omitempty"`
	ServingRuntimePodSpec `json:",inline"`
	HTTPDataEndpoint      *string        `json:"httpDataEndpoint,omitempty"`
	GrpcDataEndpoint      *string        `json:"grpcDataEndpoint,omitempty"`
	StorageHelper         *StorageHelper `json:"storageHelper,omitempty"`
}

type SupportedModelFormat struct {
	Name       string  `json:"name"`
	Version    *string `json:"version,omitempty"`
	AutoSelect *bool   `json:"autoSelect,omitempty"`
	Priority   *int32  `json:"priority,omitempty"`
}

type ServingRuntimePodSpec struct {
	Containers       []corev1.Container            `json:"containers"`
	Volumes          []corev1.Volume               `json:"volumes,omitempty"`
	NodeSelector     map[string]string             `json:"nodeSelector,omitempty"`
	Affinity         *corev1.Affinity              `json:"affinity,omitempty"`
	Tolerations      []corev1.Toleration           `json:"tolerations,omitempty"`
	Labels           map[string]string             `json:"labels,omitempty"`
	Annotations      map[string]string             `json:"annotations,omitempty"`
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

type StorageHelper struct {
	Disabled bool `json:"disabled,omitempty"`
}

// ---------------------------------------------------------------------------
// serving.kserve.io/v1beta1 InferenceService

type InferenceService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              InferenceServiceSpec `json:"spec"`
}

type InferenceServiceSpec struct {
	Predictor PredictorSpec `json:"predictor"`
}

type PredictorSpec struct {
	// The one predictor implementation these manifests use.
	Model                  *ModelSpec `json:"model,omitempty"`
	PodSpec                `json:",inline"`
	ComponentExtensionSpec `json:",inline"`
}

type ModelSpec struct {
	ModelFormat            ModelFormat `json:"modelFormat"`
	Runtime                *string     `json:"runtime,omitempty"`
	PredictorExtensionSpec `json:",inline"`
}

type ModelFormat struct {
	Name    string  `json:"name"`
	Version *string `json:"version,omitempty"`
}

type PredictorExtensionSpec struct {
	StorageURI      *string `json:"storageUri,omitempty"`
	RuntimeVersion  *string `json:"runtimeVersion,omitempty"`
	ProtocolVersion *string `json:"protocolVersion,omitempty"`
	// Overrides of the runtime's kserve-container (resources, env, args...).
	corev1.Container `json:",inline"`
}

// PodSpec is KServe's copy of corev1.PodSpec (containers optional), cut down.
type PodSpec struct {
	NodeSelector       map[string]string             `json:"nodeSelector,omitempty"`
	ServiceAccountName string                        `json:"serviceAccountName,omitempty"`
	SecurityContext    *corev1.PodSecurityContext    `json:"securityContext,omitempty"`
	ImagePullSecrets   []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	Affinity           *corev1.Affinity              `json:"affinity,omitempty"`
	Tolerations        []corev1.Toleration           `json:"tolerations,omitempty"`
	PriorityClassName  string                        `json:"priorityClassName,omitempty"`
}

type ComponentExtensionSpec struct {
	MinReplicas          *int              `json:"minReplicas,omitempty"`
	MaxReplicas          int               `json:"maxReplicas,omitempty"`
	ScaleTarget          *int              `json:"scaleTarget,omitempty"`
	ScaleMetric          *string           `json:"scaleMetric,omitempty"`
	ContainerConcurrency *int64            `json:"containerConcurrency,omitempty"`
	TimeoutSeconds       *int64            `json:"timeout,omitempty"`
	CanaryTrafficPercent *int64            `json:"canaryTrafficPercent,omitempty"`
	Labels               map[string]string `json:"labels,omitempty"`
	Annotations          map[string]string `json:"annotations,omitempty"`
}

// ---------------------------------------------------------------------------
// monitoring.coreos.com/v1 PodMonitor

type PodMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodMonitorSpec `json:"spec"`
}

type PodMonitorSpec struct {
	JobLabel            string               `json:"jobLabel,omitempty"`
	PodTargetLabels     []string             `json:"podTargetLabels,omitempty"`
	PodMetricsEndpoints []PodMetricsEndpoint `json:"podMetricsEndpoints"`
	Selector            metav1.LabelSelector `json:"selector"`
	NamespaceSelector   *NamespaceSelector   `json:"namespaceSelector,omitempty"`
	SampleLimit         *uint64              `json:"sampleLimit,omitempty"`
}

type PodMetricsEndpoint struct {
	Port          *string `json:"port,omitempty"`
	PortNumber    *int32  `json:"portNumber,omitempty"`
	Path          string  `json:"path,omitempty"`
	Scheme        string  `json:"scheme,omitempty"`
	Interval      string  `json:"interval,omitempty"`
	ScrapeTimeout string  `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool    `json:"honorLabels,omitempty"`
}

type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

// ---------------------------------------------------------------------------
// kustomize.config.k8s.io/v1beta1 Kustomization

type Kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Namespace       string            `json:"namespace,omitempty"`
	Resources       []string          `json:"resources,omitempty"`
	Images          []KustomizeImage  `json:"images,omitempty"`
	CommonLabels    map[string]string `json:"commonLabels,omitempty"`
}

type KustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}
