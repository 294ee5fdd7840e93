package manifests

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// loadIgnore reads a .dockerignore the way the Docker CLI and BuildKit do.
func loadIgnore(src string) (*patternmatcher.PatternMatcher, error) {
	pats, err := ignorefile.ReadAll(strings.NewReader(src))
	if err != nil {
		return nil, err
	}
	return patternmatcher.New(pats)
}

// ignored says whether the context path rel (slash-separated) is left out.
func ignored(pm *patternmatcher.PatternMatcher, rel string) bool {
	m, err := pm.MatchesOrParentMatches(path.Clean(rel))
	return err == nil && m
}

var (
	buildInputsOnce sync.Once
	buildInputsList []string
	buildInputsErr  error
)

// buildInputs are the repository files `go build -tags $(GOTAGS)
// ./cmd/fastinfer` reads, as go list reports them (sources of every package
// of this module it builds, and their embedded files), plus go.mod, go.sum
// and scripts/deps.sh.
func buildInputs(t testing.TB) []string {
	t.Helper()
	buildInputsOnce.Do(func() {
		const tmpl = `{{if and .Module .Module.Main}}{{.Dir}}{{"\t"}}` +
			`{{join .GoFiles " "}} {{join .CgoFiles " "}} {{join .CFiles " "}} {{join .CXXFiles " "}} ` +
			`{{join .HFiles " "}} {{join .SFiles " "}} {{join .SysoFiles " "}} {{join .EmbedFiles " "}}{{"\n"}}{{end}}`
		out, err := goCmd(t, "list", "-tags", makeGoTags(t), "-deps", "-f", tmpl, "./cmd/fastinfer")
		if err != nil {
			buildInputsErr = err
			return
		}
		root := repoRoot(t)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			dir, files, ok := strings.Cut(line, "\t")
			if !ok {
				continue
			}
			for _, f := range strings.Fields(files) {
				rel, err := filepath.Rel(root, filepath.Join(dir, f))
				if err != nil {
					buildInputsErr = err
					return
				}
				buildInputsList = append(buildInputsList, filepath.ToSlash(rel))
			}
		}
		buildInputsList = append(buildInputsList, "go.mod", "go.sum", "scripts/deps.sh")
	})
	if buildInputsErr != nil {
		t.Fatalf("listing the build's files: %v", buildInputsErr)
	}
	return buildInputsList
}

// mustDrop are context paths that must never reach the Docker daemon: this
// machine's caches and build outputs, and the generated benchmark weights.
var mustDrop = []string{
	".git/HEAD",
	".cache/onnxruntime/1.29.0/libonnxruntime_providers_cuda.so",
	".cache/train/fashion-resnet.ckpt",
	"bin/fastinfer",
	"data.test",
	"train/train.test",
	"models/resnet50/1/model.onnx",
	"models/resnet34/1/model.onnx",
	"models/resnet18/1/model.onnx",
}

func removeLine(line string) func(t testing.TB, src string) string {
	return func(t testing.TB, src string) string {
		return mustReplace(t, "\n"+src, "\n"+line+"\n", "\n", 1)[1:]
	}
}

func appendLine(line string) func(t testing.TB, src string) string {
	return func(t testing.TB, src string) string { return src + line + "\n" }
}

var dockerignoreChecks = []struct {
	name   string
	check  func(t testing.TB, pm *patternmatcher.PatternMatcher) error
	breaks []func(t testing.TB, src string) string
}{
	{
		name: "keeps every file the build reads",
		check: func(t testing.TB, pm *patternmatcher.PatternMatcher) error {
			inputs := buildInputs(t)
			if len(inputs) < 20 {
				return fmt.Errorf("go list reported only %d build inputs: %v", len(inputs), inputs)
			}
			for _, f := range inputs {
				if ignored(pm, f) {
					return fmt.Errorf("%s is read by the build but excluded", f)
				}
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			appendLine("models/resnet*"), // also matches models/resnet, a Go package
			appendLine("server/web"),     // embedded by server/web.go
			appendLine("**/*.go"),
			appendLine("go.sum"),
			appendLine("scripts"),
		},
	},
	{
		name: "drops caches, build outputs and model weights",
		check: func(t testing.TB, pm *patternmatcher.PatternMatcher) error {
			for _, f := range mustDrop {
				if !ignored(pm, f) {
					return fmt.Errorf("%s would be sent to the daemon", f)
				}
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			removeLine(".cache"),
			removeLine("bin"),
			removeLine(".git"),
			removeLine("models/resnet50"),
			appendLine("!bin/fastinfer"),
		},
	},
}

func TestDockerignore(t *testing.T) {
	src := readRepoFile(t, ".dockerignore")
	for _, c := range dockerignoreChecks {
		t.Run(c.name, func(t *testing.T) {
			pm, err := loadIgnore(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.check(t, pm); err != nil {
				t.Errorf(".dockerignore: %v", err)
			}
			for i, br := range c.breaks {
				pm, err := loadIgnore(br(t, src))
				if err != nil {
					t.Fatalf("broken variant %d: %v", i, err)
				}
				if err := c.check(t, pm); err == nil {
					t.Errorf("broken variant %d passed the check", i)
				} else {
					t.Logf("broken variant %d rejected: %v", i, err)
				}
			}
		})
	}
}
