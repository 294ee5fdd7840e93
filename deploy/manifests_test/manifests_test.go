package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// manifestDirs are the folders of YAML manifests, relative to the repository.
var manifestDirs = []string{"deploy/k8s", "deploy/kserve", "deploy/kserve-grpc"}

// kinds maps apiVersion/kind to the Go type a document must decode into.
var kinds = map[string]func() any{
	"v1/Namespace":                                  func() any { return &corev1.Namespace{} },
	"v1/Service":                                    func() any { return &corev1.Service{} },
	"v1/PersistentVolumeClaim":                      func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Secret":                                     func() any { return &corev1.Secret{} },
	"apps/v1/Deployment":                            func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler":        func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"monitoring.coreos.com/v1/PodMonitor":           func() any { return &PodMonitor{} },
	"serving.kserve.io/v1alpha1/ServingRuntime":     func() any { return &ServingRuntime{} },
	"serving.kserve.io/v1beta1/InferenceService":    func() any { return &InferenceService{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &Kustomization{} },
}

// decodeStrict decodes one YAML document into the type its apiVersion and
// kind name, refusing unknown fields, duplicate keys and wrongly typed
// values. Two passes, because each closes a hole of the other:
// sigs.k8s.io/yaml's UnmarshalStrict (duplicate YAML keys, unknown fields,
// but through encoding/json, which matches field names case-insensitively),
// then sigs.k8s.io/json's UnmarshalStrict, the decoder the API server uses,
// which is case-sensitive.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown apiVersion %q / kind %q", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, newObj()); err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	obj := newObj()
	strictErrs, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, err
	}
	if len(strictErrs) > 0 {
		return nil, errors.Join(strictErrs...)
	}
	if o, ok := obj.(metav1.Object); ok && o.GetName() == "" {
		return nil, fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	return obj, nil
}

// splitDocs splits a multi-document YAML file, dropping documents that hold
// only comments.
func splitDocs(b []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		empty := true
		for _, line := range strings.Split(string(doc), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") && l != "---" {
				empty = false
			}
		}
		if !empty {
			docs = append(docs, doc)
		}
	}
}

// bundle is every manifest, decoded.
type bundle struct {
	dep     *appsv1.Deployment
	svc     *corev1.Service
	pvc     *corev1.PersistentVolumeClaim
	secret  *corev1.Secret // secret.example.yaml
	ns      *corev1.Namespace
	hpa     *autoscalingv2.HorizontalPodAutoscaler
	pm      *PodMonitor
	sr      *ServingRuntime           // deploy/kserve: HTTP
	isvc    *InferenceService         // deploy/kserve
	grpcSR  *ServingRuntime           // deploy/kserve-grpc: gRPC
	grpcIS  *InferenceService         // deploy/kserve-grpc
	kust    map[string]*Kustomization // by folder
	files   map[string][]string       // YAML files by folder
	objects map[string]string         // "Kind/name" -> file, for duplicates
}

func loadBundle(t testing.TB) *bundle {
	t.Helper()
	root := repoRoot(t)
	b := &bundle{kust: map[string]*Kustomization{}, files: map[string][]string{}, objects: map[string]string{}}
	for _, dir := range manifestDirs {
		paths, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*"))
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(paths)
		for _, p := range paths {
			name := filepath.Base(p)
			switch filepath.Ext(name) {
			case ".yaml", ".yml":
			default:
				continue
			}
			b.files[dir] = append(b.files[dir], name)
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			docs, err := splitDocs(raw)
			if err != nil {
				t.Fatalf("%s/%s: %v", dir, name, err)
			}
			if len(docs) == 0 {
				t.Errorf("%s/%s holds no manifest", dir, name)
			}
			for i, doc := range docs {
				obj, err := decodeStrict(doc)
				if err != nil {
					t.Errorf("%s/%s, document %d: %v", dir, name, i+1, err)
					continue
				}
				where := dir + "/" + name
				if o, ok := obj.(metav1.Object); ok {
					key := fmt.Sprintf("%T/%s", obj, o.GetName())
					if prev, dup := b.objects[key]; dup {
						t.Errorf("%s is defined in %s and %s", key, prev, where)
					}
					b.objects[key] = where
				}
				switch o := obj.(type) {
				case *appsv1.Deployment:
					setOnce(t, &b.dep, o, where)
				case *corev1.Service:
					setOnce(t, &b.svc, o, where)
				case *corev1.PersistentVolumeClaim:
					setOnce(t, &b.pvc, o, where)
				case *corev1.Secret:
					setOnce(t, &b.secret, o, where)
				case *corev1.Namespace:
					setOnce(t, &b.ns, o, where)
				case *autoscalingv2.HorizontalPodAutoscaler:
					setOnce(t, &b.hpa, o, where)
				case *PodMonitor:
					setOnce(t, &b.pm, o, where)
				case *ServingRuntime:
					if dir == "deploy/kserve-grpc" {
						setOnce(t, &b.grpcSR, o, where)
					} else {
						setOnce(t, &b.sr, o, where)
					}
				case *InferenceService:
					if dir == "deploy/kserve-grpc" {
						setOnce(t, &b.grpcIS, o, where)
					} else {
						setOnce(t, &b.isvc, o, where)
					}
				case *Kustomization:
					if name != "kustomization.yaml" {
						t.Errorf("%s: a Kustomization must be called kustomization.yaml", where)
					}
					b.kust[dir] = o
				}
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for what, missing := range map[string]bool{
		"Deployment": b.dep == nil, "Service": b.svc == nil, "PersistentVolumeClaim": b.pvc == nil,
		"Secret (example)": b.secret == nil, "Namespace": b.ns == nil, "HorizontalPodAutoscaler": b.hpa == nil,
		"PodMonitor": b.pm == nil, "ServingRuntime": b.sr == nil, "InferenceService": b.isvc == nil,
		"ServingRuntime (gRPC)": b.grpcSR == nil, "InferenceService (gRPC)": b.grpcIS == nil,
	} {
		if missing {
			t.Errorf("no %s manifest", what)
		}
	}
	for _, dir := range manifestDirs {
		if b.kust[dir] == nil {
			t.Errorf("%s has no kustomization.yaml", dir)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return b
}

func setOnce[T any](t testing.TB, dst **T, v *T, where string) {
	t.Helper()
	if *dst != nil {
		t.Errorf("%s: a second %T; the checks expect one", where, v)
	}
	*dst = v
}

// ---------------------------------------------------------------------------
// Helpers over the decoded objects.

func (b *bundle) container() *corev1.Container {
	for i := range b.dep.Spec.Template.Spec.Containers {
		if b.dep.Spec.Template.Spec.Containers[i].Name == "fastinfer" {
			return &b.dep.Spec.Template.Spec.Containers[i]
		}
	}
	return nil
}

// resolvePort finds the container port a probe, Service or PodMonitor names.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (*corev1.ContainerPort, error) {
	for i, cp := range c.Ports {
		if (p.Type == intstr.String && p.StrVal != "" && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return &c.Ports[i], nil
		}
	}
	return nil, fmt.Errorf("container %s has no port %s (ports: %v)", c.Name, p.String(), c.Ports)
}

func checkHTTPProbe(t testing.TB, c *corev1.Container, what string, p *corev1.Probe, wantPath string) error {
	if p == nil {
		return fmt.Errorf("%s: no %s", c.Name, what)
	}
	if p.HTTPGet == nil {
		return fmt.Errorf("%s: %s is not an httpGet probe", c.Name, what)
	}
	if p.HTTPGet.Path != wantPath {
		return fmt.Errorf("%s: %s asks %s, want %s", c.Name, what, p.HTTPGet.Path, wantPath)
	}
	if !serverHasRoute(t, p.HTTPGet.Path) {
		return fmt.Errorf("%s: %s path %s is no server route", c.Name, what, p.HTTPGet.Path)
	}
	if _, err := resolvePort(c, p.HTTPGet.Port); err != nil {
		return fmt.Errorf("%s: %s: %v", c.Name, what, err)
	}
	return nil
}

// checkOneGPU wants nvidia.com/gpu: 1 as a limit (extended resources need
// one), and requests, if given, equal to it.
func checkOneGPU(what string, r corev1.ResourceRequirements) error {
	const gpu corev1.ResourceName = "nvidia.com/gpu"
	lim, ok := r.Limits[gpu]
	if !ok {
		return fmt.Errorf("%s: no %s limit", what, gpu)
	}
	if lim.Cmp(resource.MustParse("1")) != 0 {
		return fmt.Errorf("%s: %s limit %s, want 1", what, gpu, lim.String())
	}
	if req, ok := r.Requests[gpu]; ok && req.Cmp(lim) != 0 {
		return fmt.Errorf("%s: %s request %s differs from the limit %s", what, gpu, req.String(), lim.String())
	}
	return nil
}

// envValue is the literal value of an env var, and whether it is set.
func envValue(c *corev1.Container, name string) (*corev1.EnvVar, bool) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i], true
		}
	}
	return nil, false
}

// checkServeConfig checks a container's serve args and FASTINFER_* env
// against the real flags, and returns the effective flag values.
func checkServeConfig(t testing.TB, c *corev1.Container) (map[string]string, error) {
	if len(c.Command) > 0 {
		return nil, fmt.Errorf("%s: command %q replaces the image's ENTRYPOINT [fastinfer]; give args only", c.Name, c.Command)
	}
	vals, err := parseServeArgs(t, c.Args)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", c.Name, err)
	}
	for _, e := range c.Env {
		flag, ok := envFlag(e.Name)
		if !ok {
			continue
		}
		if _, known := serveFlags(t)[flag]; !known {
			return nil, fmt.Errorf("%s: env %s sets no `fastinfer serve` flag (--%s)", c.Name, e.Name, flag)
		}
		if e.ValueFrom != nil {
			continue
		}
		if err := checkFlagValue(t, flag, e.Value); err != nil {
			return nil, fmt.Errorf("%s: env %s: %v", c.Name, e.Name, err)
		}
		if _, onCmdLine := vals[flag]; !onCmdLine { // a flag on the command line wins
			vals[flag] = e.Value
		}
	}
	return vals, nil
}

var promDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

// deref prints a pointer's value, or <unset>.
func deref[T any](p *T) string {
	if p == nil {
		return "<unset>"
	}
	return fmt.Sprint(*p)
}

func imageName(image string) string {
	if i := strings.LastIndex(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// ---------------------------------------------------------------------------
// The cross-reference checks.

type bundleCheck struct {
	name  string
	check func(t testing.TB, b *bundle) error
	// breaks edit a freshly loaded bundle into one the check must reject.
	breaks []func(b *bundle)
}

var bundleChecks = []bundleCheck{
	{
		name: "the Service selects the Deployment's pods, and its http port reaches the container",
		check: func(t testing.TB, b *bundle) error {
			podLabels := labels.Set(b.dep.Spec.Template.Labels)
			sel, err := metav1.LabelSelectorAsSelector(b.dep.Spec.Selector)
			if err != nil || sel.Empty() || !sel.Matches(podLabels) {
				return fmt.Errorf("the Deployment's selector %v does not match its pod labels %v (%v)", b.dep.Spec.Selector, podLabels, err)
			}
			if len(b.svc.Spec.Selector) == 0 || !labels.SelectorFromSet(b.svc.Spec.Selector).Matches(podLabels) {
				return fmt.Errorf("Service selector %v does not match the pod labels %v", b.svc.Spec.Selector, podLabels)
			}
			c := b.container()
			if c == nil {
				return errors.New("the Deployment has no container named fastinfer")
			}
			for _, p := range b.svc.Spec.Ports {
				if p.Name != "http" {
					continue
				}
				if p.Port != 8080 {
					return fmt.Errorf("Service port http is %d, want 8080", p.Port)
				}
				cp, err := resolvePort(c, p.TargetPort)
				if err != nil {
					return fmt.Errorf("Service port http: %v", err)
				}
				if cp.Name != "http" {
					return fmt.Errorf("Service port http targets container port %q", cp.Name)
				}
				return nil
			}
			return errors.New("the Service has no port named http")
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.svc.Spec.Selector["app.kubernetes.io/name"] = "fastinfer-old" },
			func(b *bundle) { b.svc.Spec.Ports[0].TargetPort = intstr.FromString("web") },
			func(b *bundle) { b.svc.Spec.Ports[0].Name = "web" },
			func(b *bundle) { b.dep.Spec.Template.Labels["app.kubernetes.io/component"] = "api" },
		},
	},
	{
		name: "startup and readiness probes ask /v2/health/ready, liveness /v2/health/live, on a real port",
		check: func(t testing.TB, b *bundle) error {
			c := b.container()
			if c == nil {
				return errors.New("the Deployment has no container named fastinfer")
			}
			if err := checkHTTPProbe(t, c, "startupProbe", c.StartupProbe, "/v2/health/ready"); err != nil {
				return err
			}
			if err := checkHTTPProbe(t, c, "readinessProbe", c.ReadinessProbe, "/v2/health/ready"); err != nil {
				return err
			}
			if err := checkHTTPProbe(t, c, "livenessProbe", c.LivenessProbe, "/v2/health/live"); err != nil {
				return err
			}
			// The startup probe must allow a slow warm-up: a minute at least.
			if sp := c.StartupProbe; sp.PeriodSeconds*sp.FailureThreshold < 60 {
				return fmt.Errorf("startupProbe allows %ds for the warm-up", sp.PeriodSeconds*sp.FailureThreshold)
			}
			for _, sr := range b.sr.Spec.Containers {
				if sr.ReadinessProbe != nil {
					if err := checkHTTPProbe(t, &sr, "readinessProbe", sr.ReadinessProbe, "/v2/health/ready"); err != nil {
						return fmt.Errorf("ServingRuntime: %v", err)
					}
				}
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.container().StartupProbe = nil },
			func(b *bundle) { b.container().ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics") },
			func(b *bundle) { b.container().LivenessProbe.HTTPGet.Path = "/healthz" },
			func(b *bundle) { b.container().ReadinessProbe.HTTPGet.Path = "/v2/health/live" },
			func(b *bundle) { b.container().StartupProbe.FailureThreshold = 3 },
			func(b *bundle) { b.sr.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9000) },
		},
	},
	{
		name: "one GPU per pod: nvidia.com/gpu limit 1",
		check: func(t testing.TB, b *bundle) error {
			if err := checkOneGPU("Deployment", b.container().Resources); err != nil {
				return err
			}
			if b.isvc.Spec.Predictor.Model == nil {
				return errors.New("the InferenceService has no predictor.model")
			}
			return checkOneGPU("InferenceService", b.isvc.Spec.Predictor.Model.Resources)
		},
		breaks: []func(*bundle){
			func(b *bundle) { delete(b.container().Resources.Limits, "nvidia.com/gpu") },
			func(b *bundle) { b.container().Resources.Requests["nvidia.com/gpu"] = resource.MustParse("2") },
			func(b *bundle) { b.isvc.Spec.Predictor.Model.Resources.Limits = nil },
		},
	},
	{
		name: "the pods run as the image's non-root user, unprivileged",
		check: func(t testing.TB, b *bundle) error {
			uid, err := loadDockerfile(t).finalUID()
			if err != nil {
				return err
			}
			ps := b.dep.Spec.Template.Spec.SecurityContext
			if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
				return errors.New("pod securityContext.runAsNonRoot is not true")
			}
			if ps.RunAsUser == nil || strconv.FormatInt(*ps.RunAsUser, 10) != uid {
				return fmt.Errorf("pod runAsUser %s, the image's USER is %s", deref(ps.RunAsUser), uid)
			}
			for _, c := range slices.Concat(b.dep.Spec.Template.Spec.Containers, b.sr.Spec.Containers, b.grpcSR.Spec.Containers) {
				sc := c.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					return fmt.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
				}
				if sc.Privileged != nil && *sc.Privileged {
					return fmt.Errorf("container %s is privileged", c.Name)
				}
				if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
					return fmt.Errorf("container %s runs as root", c.Name)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
					return fmt.Errorf("container %s does not drop ALL capabilities", c.Name)
				}
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { *b.dep.Spec.Template.Spec.SecurityContext.RunAsNonRoot = false },
			func(b *bundle) { *b.dep.Spec.Template.Spec.SecurityContext.RunAsUser = 0 },
			func(b *bundle) { *b.container().SecurityContext.AllowPrivilegeEscalation = true },
			func(b *bundle) { b.sr.Spec.Containers[0].SecurityContext = nil },
			func(b *bundle) { b.grpcSR.Spec.Containers[0].SecurityContext.Capabilities = nil },
		},
	},
	{
		name: "the model repository is the PVC, mounted read-only where --models points",
		check: func(t testing.TB, b *bundle) error {
			c := b.container()
			vals, err := checkServeConfig(t, c)
			if err != nil {
				return err
			}
			models := vals["models"]
			for _, m := range c.VolumeMounts {
				if m.MountPath != models {
					continue
				}
				if !m.ReadOnly {
					return fmt.Errorf("%s is mounted read-write", models)
				}
				for _, v := range b.dep.Spec.Template.Spec.Volumes {
					if v.Name != m.Name {
						continue
					}
					if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != b.pvc.Name {
						return fmt.Errorf("volume %s is not the PersistentVolumeClaim %s", v.Name, b.pvc.Name)
					}
					return nil
				}
				return fmt.Errorf("volumeMount %s names no volume", m.Name)
			}
			return fmt.Errorf("nothing is mounted at --models %s", models)
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.dep.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "models" },
			func(b *bundle) { b.container().VolumeMounts[0].MountPath = "/data" },
			func(b *bundle) { b.container().Args[2] = "/mnt/models" },
			func(b *bundle) { b.container().VolumeMounts[0].ReadOnly = false },
		},
	},
	{
		name: "args and FASTINFER_* env are real serve flags; poll model control; admin token from the Secret",
		check: func(t testing.TB, b *bundle) error {
			c := b.container()
			vals, err := checkServeConfig(t, c)
			if err != nil {
				return err
			}
			if vals["model-control"] != "poll" {
				return fmt.Errorf("--model-control is %q, want poll", vals["model-control"])
			}
			e, ok := envValue(c, "FASTINFER_ADMIN_TOKEN")
			if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				return errors.New("FASTINFER_ADMIN_TOKEN does not come from a Secret")
			}
			if e.Value != "" {
				return errors.New("FASTINFER_ADMIN_TOKEN has a literal value")
			}
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != b.secret.Name {
				return fmt.Errorf("FASTINFER_ADMIN_TOKEN reads Secret %q, the example is %q", ref.Name, b.secret.Name)
			}
			_, inData := b.secret.Data[ref.Key]
			_, inString := b.secret.StringData[ref.Key]
			if !inData && !inString {
				return fmt.Errorf("the example Secret has no key %q", ref.Key)
			}
			if ref.Optional != nil && *ref.Optional {
				return errors.New("the admin token is optional: without it the repository endpoints are open")
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.container().Env[0].Name = "FASTINFER_MODEL_CONTRL" },
			func(b *bundle) { b.container().Env[0].Value = "explicit" },
			func(b *bundle) { b.container().Env[1].Value = "30 seconds" },
			func(b *bundle) { b.container().Args[1] = "--model" },
			func(b *bundle) {
				e, _ := envValue(b.container(), "FASTINFER_ADMIN_TOKEN")
				e.ValueFrom.SecretKeyRef.Key = "password"
			},
			func(b *bundle) {
				e, _ := envValue(b.container(), "FASTINFER_ADMIN_TOKEN")
				e.ValueFrom, e.Value = nil, "secret"
			},
			func(b *bundle) { b.container().Command = []string{"/usr/local/bin/fastinfer"} },
		},
	},
	{
		name: "--addr listens on the container port named http, 8080",
		check: func(t testing.TB, b *bundle) error {
			c := b.container()
			vals, err := checkServeConfig(t, c)
			if err != nil {
				return err
			}
			cp, err := resolvePort(c, intstr.FromString("http"))
			if err != nil {
				return err
			}
			if port := addrPort(vals["addr"]); port != strconv.Itoa(int(cp.ContainerPort)) || port != "8080" {
				return fmt.Errorf("--addr %q, container port http is %d", vals["addr"], cp.ContainerPort)
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.container().Ports[0].ContainerPort = 9090 },
			func(b *bundle) { b.container().Args[4] = ":9090" },
		},
	},
	{
		name: "the HPA scales the Deployment on the server's fastinfer_pending_rows, per pod",
		check: func(t testing.TB, b *bundle) error {
			ref := b.hpa.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != b.dep.Name {
				return fmt.Errorf("scaleTargetRef %+v is not the Deployment %s", ref, b.dep.Name)
			}
			if b.hpa.Spec.MinReplicas == nil || *b.hpa.Spec.MinReplicas < 1 || *b.hpa.Spec.MinReplicas > b.hpa.Spec.MaxReplicas {
				return fmt.Errorf("replicas %v..%d", b.hpa.Spec.MinReplicas, b.hpa.Spec.MaxReplicas)
			}
			for _, m := range b.hpa.Spec.Metrics {
				if m.Type != autoscalingv2.PodsMetricSourceType || m.Pods == nil || m.Pods.Metric.Name != "fastinfer_pending_rows" {
					continue
				}
				if !serverExportsMetric(t, m.Pods.Metric.Name) {
					return fmt.Errorf("the server exports no %s", m.Pods.Metric.Name)
				}
				if m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue == nil || m.Pods.Target.AverageValue.Sign() <= 0 {
					return fmt.Errorf("target %+v: want a positive AverageValue", m.Pods.Target)
				}
				return nil
			}
			return errors.New("no Pods metric fastinfer_pending_rows")
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.hpa.Spec.ScaleTargetRef.Name = "fastinfer-old" },
			func(b *bundle) { b.hpa.Spec.ScaleTargetRef.Kind = "StatefulSet" },
			func(b *bundle) { b.hpa.Spec.Metrics[0].Pods.Metric.Name = "fastinfer_pending_row" },
			func(b *bundle) { b.hpa.Spec.Metrics[0].Pods.Target.Type = autoscalingv2.UtilizationMetricType },
			func(b *bundle) { b.hpa.Spec.Metrics[0].Type = autoscalingv2.ResourceMetricSourceType },
		},
	},
	{
		name: "the PodMonitor selects the pods and scrapes /metrics on a named port",
		check: func(t testing.TB, b *bundle) error {
			sel, err := metav1.LabelSelectorAsSelector(&b.pm.Spec.Selector)
			if err != nil {
				return err
			}
			if sel.Empty() || !sel.Matches(labels.Set(b.dep.Spec.Template.Labels)) {
				return fmt.Errorf("PodMonitor selector %v does not match the pod labels %v", b.pm.Spec.Selector, b.dep.Spec.Template.Labels)
			}
			if len(b.pm.Spec.PodMetricsEndpoints) == 0 {
				return errors.New("no podMetricsEndpoints")
			}
			for _, ep := range b.pm.Spec.PodMetricsEndpoints {
				if ep.Port == nil {
					return errors.New("an endpoint without a port name")
				}
				if _, err := resolvePort(b.container(), intstr.FromString(*ep.Port)); err != nil {
					return err
				}
				if ep.Path != "/metrics" || !serverHasRoute(t, ep.Path) {
					return fmt.Errorf("endpoint path %q, want the server's /metrics", ep.Path)
				}
				for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
					if d != "" && !promDuration.MatchString(d) {
						return fmt.Errorf("%q is not a Prometheus duration", d)
					}
				}
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { *b.pm.Spec.PodMetricsEndpoints[0].Port = "metrics" },
			func(b *bundle) { b.pm.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other" },
			func(b *bundle) { b.pm.Spec.PodMetricsEndpoints[0].Path = "/v2/metrics" },
			func(b *bundle) { b.pm.Spec.PodMetricsEndpoints[0].Interval = "15 s" },
			func(b *bundle) { b.pm.Spec.Selector = metav1.LabelSelector{} },
		},
	},
	{
		name: "each kustomization lists every manifest of its folder but the examples",
		check: func(t testing.TB, b *bundle) error {
			for _, dir := range manifestDirs {
				var want []string
				for _, f := range b.files[dir] {
					if f == "kustomization.yaml" || strings.HasSuffix(f, ".example.yaml") {
						continue
					}
					want = append(want, f)
				}
				got := slices.Clone(b.kust[dir].Resources)
				sort.Strings(got)
				if !slices.Equal(got, want) {
					return fmt.Errorf("%s/kustomization.yaml lists %v, the folder has %v (examples are never listed)", dir, got, want)
				}
				if ns := b.kust[dir].Namespace; ns != b.ns.Name {
					return fmt.Errorf("%s/kustomization.yaml deploys to namespace %q, the Namespace is %q", dir, ns, b.ns.Name)
				}
			}
			if b.secret.Namespace != b.ns.Name {
				return fmt.Errorf("the example Secret is in namespace %q, the Deployment in %q", b.secret.Namespace, b.ns.Name)
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) {
				b.kust["deploy/k8s"].Resources = slices.DeleteFunc(b.kust["deploy/k8s"].Resources, func(s string) bool { return s == "hpa.yaml" })
			},
			func(b *bundle) {
				b.kust["deploy/k8s"].Resources = append(b.kust["deploy/k8s"].Resources, "secret.example.yaml")
			},
			func(b *bundle) {
				b.kust["deploy/kserve"].Resources = append(b.kust["deploy/kserve"].Resources, "missing.yaml")
			},
			func(b *bundle) { b.kust["deploy/kserve"].Namespace = "default" },
		},
	},
	{
		name: "the InferenceService runs the fastinfer ServingRuntime on the PVC, over the v2 protocol",
		check: func(t testing.TB, b *bundle) error {
			m := b.isvc.Spec.Predictor.Model
			if m == nil || m.Runtime == nil || *m.Runtime != b.sr.Name {
				return fmt.Errorf("the InferenceService's runtime is not the ServingRuntime %q", b.sr.Name)
			}
			if m.ModelFormat.Name != "onnx" {
				return fmt.Errorf("modelFormat %q, want onnx", m.ModelFormat.Name)
			}
			supported := false
			for _, f := range b.sr.Spec.SupportedModelFormats {
				if f.Name == m.ModelFormat.Name && (m.ModelFormat.Version == nil || (f.Version != nil && *f.Version == *m.ModelFormat.Version)) {
					supported = true
				}
			}
			if !supported {
				return fmt.Errorf("the ServingRuntime does not support model format %s version %s", m.ModelFormat.Name, deref(m.ModelFormat.Version))
			}
			if !slices.Equal(b.sr.Spec.ProtocolVersions, []string{"v2"}) {
				return fmt.Errorf("ServingRuntime protocolVersions %v, want [v2] (the Open Inference Protocol)", b.sr.Spec.ProtocolVersions)
			}
			if m.ProtocolVersion == nil || *m.ProtocolVersion != "v2" {
				return errors.New("the InferenceService does not ask protocolVersion v2")
			}
			if m.StorageURI == nil || !regexp.MustCompile(`^pvc://`+regexp.QuoteMeta(b.pvc.Name)+`(/.*)?$`).MatchString(*m.StorageURI) {
				return fmt.Errorf("storageUri %s is not on the PVC %s", deref(m.StorageURI), b.pvc.Name)
			}
			if len(b.sr.Spec.Containers) != 1 || b.sr.Spec.Containers[0].Name != "kserve-container" {
				return errors.New("the ServingRuntime must have one container, named kserve-container")
			}
			c := &b.sr.Spec.Containers[0]
			vals, err := checkServeConfig(t, c)
			if err != nil {
				return err
			}
			if vals["models"] != "/mnt/models" {
				return fmt.Errorf("--models %q; KServe mounts the storageUri at /mnt/models", vals["models"])
			}
			if len(c.Ports) == 0 || strconv.Itoa(int(c.Ports[0].ContainerPort)) != addrPort(vals["addr"]) || addrPort(vals["addr"]) != "8080" {
				return fmt.Errorf("--addr %q, container ports %v: KServe routes to 8080", vals["addr"], c.Ports)
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { *b.isvc.Spec.Predictor.Model.Runtime = "kserve-tritonserver" },
			func(b *bundle) { *b.isvc.Spec.Predictor.Model.StorageURI = "pvc://models" },
			func(b *bundle) { b.sr.Spec.ProtocolVersions = []string{"v1"} },
			func(b *bundle) { b.sr.Spec.Containers[0].Name = "fastinfer" },
			func(b *bundle) { b.sr.Spec.Containers[0].Args[2] = "/models" },
			func(b *bundle) { b.sr.Spec.SupportedModelFormats[0].Name = "pytorch" },
			func(b *bundle) { b.sr.Spec.Containers[0].Ports[0].ContainerPort = 9000 },
			func(b *bundle) { b.isvc.Spec.Predictor.Model.ProtocolVersion = nil },
		},
	},
	{
		name: "the images are the one Dockerfile.gpu builds, overridable through kustomize",
		check: func(t testing.TB, b *bundle) error {
			want := "fastinfer"
			for _, img := range []string{b.container().Image, b.sr.Spec.Containers[0].Image, b.grpcSR.Spec.Containers[0].Image} {
				if imageName(img) != want {
					return fmt.Errorf("image %q is not %s:<tag>", img, want)
				}
			}
			for _, dir := range manifestDirs {
				if !slices.ContainsFunc(b.kust[dir].Images, func(i KustomizeImage) bool { return i.Name == want }) {
					return fmt.Errorf("%s/kustomization.yaml has no images entry for %s", dir, want)
				}
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { b.container().Image = "fastinfr:gpu" },
			func(b *bundle) { b.kust["deploy/kserve"].Images = nil },
			func(b *bundle) { b.grpcSR.Spec.Containers[0].Image = "tritonserver:24.01" },
		},
	},
	{
		name: "the gRPC InferenceService runs fastinfer-grpc over grpc-v2, gRPC on the h2c port",
		check: func(t testing.TB, b *bundle) error {
			m := b.grpcIS.Spec.Predictor.Model
			if m == nil || m.Runtime == nil || *m.Runtime != b.grpcSR.Name || b.grpcSR.Name == b.sr.Name {
				return fmt.Errorf("the gRPC InferenceService's runtime is not the gRPC ServingRuntime %q (and that must not be the HTTP one's name)", b.grpcSR.Name)
			}
			if m.ProtocolVersion == nil || *m.ProtocolVersion != "grpc-v2" || !slices.Equal(b.grpcSR.Spec.ProtocolVersions, []string{"grpc-v2"}) {
				return fmt.Errorf("protocolVersion %s and runtime protocolVersions %v; want grpc-v2 for both", deref(m.ProtocolVersion), b.grpcSR.Spec.ProtocolVersions)
			}
			if m.StorageURI == nil || !regexp.MustCompile(`^pvc://`+regexp.QuoteMeta(b.pvc.Name)+`(/.*)?$`).MatchString(*m.StorageURI) {
				return fmt.Errorf("storageUri %s is not on the PVC %s", deref(m.StorageURI), b.pvc.Name)
			}
			if err := checkOneGPU("gRPC InferenceService", m.Resources); err != nil {
				return err
			}
			if len(b.grpcSR.Spec.Containers) != 1 || b.grpcSR.Spec.Containers[0].Name != "kserve-container" {
				return errors.New("the gRPC ServingRuntime must have one container, named kserve-container")
			}
			c := &b.grpcSR.Spec.Containers[0]
			vals, err := checkServeConfig(t, c)
			if err != nil {
				return err
			}
			if vals["models"] != "/mnt/models" {
				return fmt.Errorf("--models %q; KServe mounts the storageUri at /mnt/models", vals["models"])
			}
			// KServe routes one port; Knative speaks HTTP/2 cleartext only
			// to a port named h2c.
			if len(c.Ports) != 1 || c.Ports[0].Name != "h2c" || strconv.Itoa(int(c.Ports[0].ContainerPort)) != addrPort(vals["grpc-addr"]) {
				return fmt.Errorf("ports %v and --grpc-addr %q: want one port, named h2c, the gRPC one", c.Ports, vals["grpc-addr"])
			}
			p := c.ReadinessProbe
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/v2/health/ready" || p.HTTPGet.Port.String() != addrPort(vals["addr"]) || addrPort(vals["addr"]) == "" {
				return fmt.Errorf("readinessProbe %+v: want GET /v2/health/ready on the HTTP port of --addr %q", p, vals["addr"])
			}
			return nil
		},
		breaks: []func(*bundle){
			func(b *bundle) { *b.grpcIS.Spec.Predictor.Model.ProtocolVersion = "v2" },
			func(b *bundle) { b.grpcSR.Spec.ProtocolVersions = []string{"v2"} },
			func(b *bundle) { *b.grpcIS.Spec.Predictor.Model.Runtime = "fastinfer" },
			func(b *bundle) { b.grpcSR.Spec.Containers[0].Ports[0].Name = "grpc" },
			func(b *bundle) { b.grpcSR.Spec.Containers[0].Args[6] = ":9001" },
			func(b *bundle) { b.grpcSR.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9000) },
			func(b *bundle) { b.grpcSR.Spec.Containers[0].Args[6] = "" },
			func(b *bundle) { delete(b.grpcIS.Spec.Predictor.Model.Resources.Limits, "nvidia.com/gpu") },
		},
	},
}

func TestManifests(t *testing.T) {
	b := loadBundle(t)
	for _, c := range bundleChecks {
		t.Run(c.name, func(t *testing.T) {
			if err := c.check(t, b); err != nil {
				t.Error(err)
			}
			if len(c.breaks) == 0 {
				t.Fatal("no broken variant to prove the check can fail")
			}
			for i, br := range c.breaks {
				bad := loadBundle(t)
				br(bad)
				if err := c.check(t, bad); err == nil {
					t.Errorf("broken variant %d passed the check", i)
				} else {
					t.Logf("broken variant %d rejected: %v", i, err)
				}
			}
		})
	}
}

// TestStrictDecoding proves the decoder refuses what a lenient one would
// quietly accept or drop.
func TestStrictDecoding(t *testing.T) {
	const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: fastinfer
spec:
  replicas: 1
  selector:
    matchLabels: {app: fastinfer}
  template:
    metadata:
      labels: {app: fastinfer}
    spec:
      containers:
        - name: fastinfer
          image: fastinfer:gpu
          ports:
            - containerPort: 8080
`
	if _, err := decodeStrict([]byte(deployment)); err != nil {
		t.Fatalf("the well-formed base document fails: %v", err)
	}
	for _, tc := range []struct {
		name, old, new string
		base           string
	}{
		{name: "replicas as a word", old: "replicas: 1", new: `replicas: "two"`},
		{name: "misspelled containers", old: "      containers:", new: "      contianers:"},
		{name: "field in the wrong case (encoding/json would take it)", old: "containerPort: 8080", new: "containerport: 8080"},
		{name: "duplicate key", old: "  replicas: 1\n", new: "  replicas: 1\n  replicas: 2\n"},
		{name: "unknown apiVersion", old: "apiVersion: apps/v1", new: "apiVersion: apps/v1beta1"},
		{name: "unknown kind", old: "kind: Deployment", new: "kind: Deploymnet"},
		{name: "no name", old: "  name: fastinfer\nspec", new: "  labels: {}\nspec"},
		{name: "port out of int32", old: "containerPort: 8080", new: "containerPort: 80808080808"},
		{
			name: "HPA v2beta1 field in autoscaling/v2",
			base: "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\nspec:\n  maxReplicas: 2\n  scaleTargetRef: {kind: Deployment, name: x}\n  metrics:\n    - type: Pods\n      pods:\n        metricName: fastinfer_pending_rows\n",
		},
		{
			name: "bad quantity",
			base: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: x}\nspec:\n  resources:\n    requests: {storage: twenty-gigs}\n",
		},
		{
			name: "PodMonitor podMetricEndpoints (sic)",
			base: "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  podMetricEndpoints: [{port: http}]\n",
		},
		{
			name: "ServingRuntime protocolVersion (singular, an InferenceService field)",
			base: "apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata: {name: x}\nspec:\n  protocolVersion: v2\n  containers: [{name: kserve-container}]\n",
		},
		{
			name: "InferenceService storageURI (wrong case)",
			base: "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\nspec:\n  predictor:\n    model:\n      modelFormat: {name: onnx}\n      storageURI: pvc://fastinfer-models\n",
		},
		{
			name: "InferenceService container field typo under model",
			base: "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\nspec:\n  predictor:\n    model:\n      modelFormat: {name: onnx}\n      resource: {limits: {nvidia.com/gpu: 1}}\n",
		},
		{
			name: "Kustomization resource (singular)",
			base: "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [deployment.yaml]\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.base
			if doc == "" {
				doc = mustReplace(t, deployment, tc.old, tc.new, 1)
			}
			if _, err := decodeStrict([]byte(doc)); err == nil {
				t.Errorf("decoded without error:\n%s", doc)
			} else {
				t.Logf("rejected: %v", err)
			}
		})
	}
}

func TestSplitDocs(t *testing.T) {
	docs, err := splitDocs([]byte("# only a comment\n---\na: 1\n---\n# x\n---\nb: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2: %q", len(docs), docs)
	}
}
