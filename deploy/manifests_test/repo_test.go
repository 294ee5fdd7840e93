// Package manifests checks the container image recipe (Dockerfile.gpu,
// .dockerignore) and the deployment manifests (deploy/k8s, deploy/kserve)
// without Docker or a cluster: the Dockerfile is parsed with BuildKit's own
// parser, every manifest is decoded strictly into its Kubernetes (or
// KServe / Prometheus Operator / Kustomize) type, and the pieces are checked
// against each other and against the repository they deploy: the serve
// flags in cmd/fastinfer, the routes and metrics the server exports,
// scripts/deps.sh and the Makefile.
//
// Each check runs once on the real files, where it must pass, and once on
// each of a few deliberately broken copies, where it must fail, so that no
// check can silently stop checking.
package manifests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the folder of fastinfer's go.mod, found upwards from the test's
// working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && regexp.MustCompile(`(?m)^module fastinfer$`).Match(b) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod of module fastinfer above the working directory")
		}
		dir = parent
	}
}

func readRepoFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustReplace replaces old with new in s, n times (-1: all), and fails the
// test when old is not there: a mutation that no longer applies means the
// file changed under the test, which must then be updated.
func mustReplace(t testing.TB, s, old, new string, n int) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("mutation does not apply: %q not found", old)
	}
	return strings.Replace(s, old, new, n)
}

// goCmd runs the go command in the repository root.
func goCmd(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// ---------------------------------------------------------------------------
// What the repository says: serve flags, routes, metrics, deps.sh, Makefile.

// serveFlag is one flag of `fastinfer serve`, parsed from
// cmd/fastinfer/serve.go (fs.StringVar(&c.models, "models", ...)).
type serveFlag struct {
	name, kind string // kind: String, Int, Int64, Duration, Bool, Float64
}

var (
	serveFlagsOnce sync.Once
	serveFlagsMap  map[string]serveFlag
)

func serveFlags(t testing.TB) map[string]serveFlag {
	t.Helper()
	serveFlagsOnce.Do(func() {
		src := readRepoFile(t, "cmd/fastinfer/serve.go")
		re := regexp.MustCompile(`fs\.(String|Int|Int64|Duration|Bool|Float64|Uint|Uint64)Var\(\s*&c\.\w+\s*,\s*"([a-z0-9-]+)"`)
		serveFlagsMap = map[string]serveFlag{}
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			serveFlagsMap[m[2]] = serveFlag{name: m[2], kind: m[1]}
		}
	})
	if len(serveFlagsMap) < 5 {
		t.Fatalf("found only %d serve flags in cmd/fastinfer/serve.go: has the flag declaration style changed?", len(serveFlagsMap))
	}
	return serveFlagsMap
}

// envFlag maps FASTINFER_MAX_QUEUE_SIZE to max-queue-size (the rule of
// cmd/fastinfer/flags.go).
func envFlag(env string) (string, bool) {
	const prefix = "FASTINFER_"
	if !strings.HasPrefix(env, prefix) {
		return "", false
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, prefix)), "_", "-"), true
}

// checkFlagValue says whether v is a valid value for the flag.
func checkFlagValue(t testing.TB, name, v string) error {
	f, ok := serveFlags(t)[name]
	if !ok {
		return fmt.Errorf("--%s is not a `fastinfer serve` flag", name)
	}
	switch f.kind {
	case "Duration":
		if _, err := time.ParseDuration(v); err != nil {
			return fmt.Errorf("--%s=%q: %v", name, v, err)
		}
	case "Int", "Int64", "Uint", "Uint64":
		if !regexp.MustCompile(`^-?[0-9]+$`).MatchString(v) {
			return fmt.Errorf("--%s=%q is not an integer", name, v)
		}
	case "Bool":
		switch v {
		case "true", "false", "1", "0":
		default:
			return fmt.Errorf("--%s=%q is not a boolean", name, v)
		}
	}
	switch name {
	case "model-control":
		if v != "none" && v != "explicit" && v != "poll" {
			return fmt.Errorf("--model-control=%q: want none, explicit or poll", v)
		}
	case "provider":
		if v != "auto" && v != "cuda" && v != "cpu" {
			return fmt.Errorf("--provider=%q: want auto, cuda or cpu", v)
		}
	}
	return nil
}

// parseServeArgs checks `serve --flag value ...` and returns the flag values.
func parseServeArgs(t testing.TB, args []string) (map[string]string, error) {
	if len(args) == 0 || args[0] != "serve" {
		return nil, fmt.Errorf("args %q do not start with serve", args)
	}
	vals := map[string]string{}
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("unexpected argument %q in %q", a, args)
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f, ok := serveFlags(t)[name]
		if !ok {
			return nil, fmt.Errorf("--%s is not a `fastinfer serve` flag", name)
		}
		if !hasVal && f.kind != "Bool" {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("--%s has no value", name)
			}
			i++
			val = args[i]
		}
		if err := checkFlagValue(t, name, val); err != nil {
			return nil, err
		}
		vals[name] = val
	}
	return vals, nil
}

// addrPort is the port of a --addr value (":8080", "0.0.0.0:8080").
func addrPort(addr string) string {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return ""
	}
	return addr[i+1:]
}

// serverSource is the text of every non-test Go file of the server and the
// batcher: what the routes and metric names are checked against.
func serverSource(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, dir := range []string{"server", "batching"} {
		files, err := filepath.Glob(filepath.Join(repoRoot(t), dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(src)
		}
	}
	return b.String()
}

// serverHasRoute says whether the server source spells the path as a string.
func serverHasRoute(t testing.TB, path string) bool {
	return strings.Contains(serverSource(t), `"`+path+`"`)
}

// serverExportsMetric says whether a metric of that name is registered.
func serverExportsMetric(t testing.TB, name string) bool {
	return regexp.MustCompile(`Name:\s*"` + regexp.QuoteMeta(name) + `"`).MatchString(serverSource(t))
}

// depsScript is what scripts/deps.sh declares.
type depsScript struct {
	aptPackages []string // the top-level APT_PACKAGES
	ortVersion  string   // ORT_VERSION
	ortLibs     []string // every library fetch_pkg extracts into $ORT_CACHE
	steps       []string // the step names of its case statement
}

func parseDeps(t testing.TB) depsScript {
	t.Helper()
	src := readRepoFile(t, "scripts/deps.sh")
	var d depsScript
	m := regexp.MustCompile(`(?m)^APT_PACKAGES=\(([^)]*)\)`).FindStringSubmatch(src)
	if m == nil {
		t.Fatal("scripts/deps.sh: no top-level APT_PACKAGES=(...)")
	}
	for _, line := range strings.Split(m[1], "\n") {
		line, _, _ = strings.Cut(line, "#")
		d.aptPackages = append(d.aptPackages, strings.Fields(line)...)
	}
	if m := regexp.MustCompile(`(?m)^ORT_VERSION=([0-9.]+)$`).FindStringSubmatch(src); m != nil {
		d.ortVersion = m[1]
	} else {
		t.Fatal("scripts/deps.sh: no ORT_VERSION=")
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*fetch_pkg\s+"\$\w+"\s+"\$\w+"\s+"\$ORT_CACHE"\s+(.+)$`).FindAllStringSubmatch(src, -1) {
		d.ortLibs = append(d.ortLibs, strings.Fields(m[1])...)
	}
	if len(d.ortLibs) == 0 {
		t.Fatal("scripts/deps.sh: no fetch_pkg ... \"$ORT_CACHE\" lines")
	}
	for _, m := range regexp.MustCompile(`(?m)^([a-z-]+)\)`).FindAllStringSubmatch(src, -1) {
		d.steps = append(d.steps, m[1])
	}
	sort.Strings(d.steps)
	return d
}

// makeGoTags is the Makefile's GOTAGS default.
func makeGoTags(t testing.TB) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^GOTAGS\s*\?=\s*(\S+)`).FindStringSubmatch(readRepoFile(t, "Makefile"))
	if m == nil {
		t.Fatal("Makefile: no GOTAGS ?=")
	}
	return m[1]
}

// goModGoVersion is go.mod's go directive, major.minor.
func goModGoVersion(t testing.TB) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go ([0-9]+\.[0-9]+)`).FindStringSubmatch(readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod: no go directive")
	}
	return m[1]
}

func TestRepositoryFacts(t *testing.T) {
	// The facts the other tests lean on must be found at all.
	for _, f := range []string{"models", "addr", "model-control", "poll-interval", "admin-token", "provider"} {
		if _, ok := serveFlags(t)[f]; !ok {
			t.Errorf("serve flag --%s not found in cmd/fastinfer/serve.go", f)
		}
	}
	for _, r := range []string{"/v2/health/ready", "/v2/health/live", "/metrics"} {
		if !serverHasRoute(t, r) {
			t.Errorf("route %s not found in the server source", r)
		}
	}
	if !serverExportsMetric(t, "fastinfer_pending_rows") {
		t.Error("metric fastinfer_pending_rows not found in the server source")
	}
	d := parseDeps(t)
	if len(d.aptPackages) == 0 || d.ortVersion == "" {
		t.Errorf("scripts/deps.sh parsed to %+v", d)
	}
	for _, s := range []string{"ort", "ort-gpu"} {
		if i := sort.SearchStrings(d.steps, s); i == len(d.steps) || d.steps[i] != s {
			t.Errorf("scripts/deps.sh has no %s step (steps: %v)", s, d.steps)
		}
	}
	if v, ok := envFlag("FASTINFER_MAX_QUEUE_SIZE"); !ok || v != "max-queue-size" {
		t.Errorf("envFlag(FASTINFER_MAX_QUEUE_SIZE) = %q, %v", v, ok)
	}
}
