package manifests

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/command"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// wantCUDAMajor is the CUDA major the ONNX Runtime CUDA provider that
// scripts/deps.sh installs (com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9)
// was built for: it links libcudart.so.13. The runtime image must carry the
// same major. TestCUDAProviderMajor re-reads it from the library where
// `make gpu-deps` has installed it.
const wantCUDAMajor = 13

// aptExceptions are APT_PACKAGES of scripts/deps.sh that the image build
// does not need. Each must also be named in Dockerfile.gpu (its comment
// says why it is left out).
var aptExceptions = map[string]string{
	"chromium":              "runs the web page's browser test only",
	"dataset-fashion-mnist": "training data only",
	"prometheus":            "metrics tests only",
	"postgresql":            "the prediction-log tests start their own server",
	"curl":                  "the README examples' test only",
	"python3":               "the README examples' test only",
	"python3-grpcio":        "the gRPC client test only",
	"python3-protobuf":      "the gRPC client test only",
}

// opencvSoVersion is the soname suffix of OpenCV 4.6 (libopencv_core.so.406),
// the release of both Debian 12 and Ubuntu 24.04; the runtime packages are
// named libopencv-<module>406t64 on Ubuntu 24.04.
const opencvSoVersion = "406"

// ---------------------------------------------------------------------------
// A Dockerfile as BuildKit parses it, split into stages.

type dfStage struct {
	index int
	base  string // the FROM image
	name  string // the AS name, lower case
	cmds  []*parser.Node
}

type dockerfile struct {
	src     string
	stages  []*dfStage
	unknown []string // instructions BuildKit's parser does not know: it skips them silently
}

func parseDockerfile(src string) (*dockerfile, error) {
	res, err := parser.Parse(strings.NewReader(src))
	if err != nil {
		return nil, err
	}
	d := &dockerfile{src: src}
	var cur *dfStage
	for _, n := range res.AST.Children {
		cmd := strings.ToLower(n.Value)
		if _, ok := command.Commands[cmd]; !ok {
			d.unknown = append(d.unknown, fmt.Sprintf("line %d: %s", n.StartLine, n.Original))
			continue
		}
		if cmd == command.From {
			a := nodeArgs(n)
			st := &dfStage{index: len(d.stages)}
			switch {
			case len(a) == 1:
				st.base = a[0]
			case len(a) == 3 && strings.EqualFold(a[1], "as"):
				st.base, st.name = a[0], strings.ToLower(a[2])
			default:
				return nil, fmt.Errorf("line %d: malformed FROM %q", n.StartLine, n.Original)
			}
			d.stages = append(d.stages, st)
			cur = st
			continue
		}
		if cur == nil {
			if cmd == command.Arg {
				continue // a global ARG
			}
			return nil, fmt.Errorf("line %d: %s before the first FROM", n.StartLine, n.Value)
		}
		cur.cmds = append(cur.cmds, n)
	}
	if len(d.stages) == 0 {
		return nil, errors.New("no FROM")
	}
	return d, nil
}

func nodeArgs(n *parser.Node) []string {
	var a []string
	for x := n.Next; x != nil; x = x.Next {
		a = append(a, x.Value)
	}
	return a
}

func (s *dfStage) find(cmd string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.cmds {
		if strings.EqualFold(n.Value, cmd) {
			out = append(out, n)
		}
	}
	return out
}

func (d *dockerfile) final() *dfStage { return d.stages[len(d.stages)-1] }

// stage resolves a --from= reference: a stage name or index; nil for an image.
func (d *dockerfile) stage(ref string) *dfStage {
	for _, s := range d.stages {
		if strings.EqualFold(s.name, ref) || fmt.Sprint(s.index) == ref {
			return s
		}
	}
	return nil
}

func flagValue(n *parser.Node, name string) (string, bool) {
	for _, f := range n.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// runText is a RUN's command line (shell or exec form) with its heredocs.
func runText(n *parser.Node) string {
	s := strings.Join(nodeArgs(n), " ")
	for _, h := range n.Heredocs {
		s += "\n" + h.Content
	}
	return s
}

// copyArgs splits a COPY/ADD into sources and destination.
func copyArgs(n *parser.Node) (srcs []string, dest string) {
	a := nodeArgs(n)
	if len(a) < 2 {
		return nil, ""
	}
	return a[:len(a)-1], a[len(a)-1]
}

// workdirBefore is the WORKDIR in force at instruction n of the stage.
func (s *dfStage) workdirBefore(n *parser.Node) string {
	wd := "/"
	for _, c := range s.cmds {
		if c == n {
			break
		}
		if strings.EqualFold(c.Value, command.Workdir) {
			if a := nodeArgs(c); len(a) == 1 {
				if path.IsAbs(a[0]) {
					wd = a[0]
				} else {
					wd = path.Join(wd, a[0])
				}
			}
		}
	}
	return wd
}

func absIn(wd, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(wd, p)
}

// env is every ENV of the stage (later ones win).
func (s *dfStage) env() map[string]string {
	m := map[string]string{}
	for _, n := range s.find(command.Env) {
		// key -> value -> separator, repeated.
		for x := n.Next; x != nil && x.Next != nil; {
			m[x.Value] = strings.Trim(x.Next.Value, `"'`)
			if x.Next.Next == nil {
				break
			}
			x = x.Next.Next.Next
		}
	}
	return m
}

var shellSplit = regexp.MustCompile(`&&|\|\||;|\|`)

// aptInstalls lists the packages that `apt-get install` lines of the stage
// name (version pins dropped).
func (s *dfStage) aptInstalls() []string {
	var pkgs []string
	for _, n := range s.find(command.Run) {
		for _, seg := range shellSplit.Split(runText(n), -1) {
			f := strings.Fields(seg)
			i := slices.IndexFunc(f, func(w string) bool { return w == "apt-get" || w == "apt" })
			if i < 0 {
				continue
			}
			j := slices.Index(f[i:], "install")
			if j < 0 {
				continue
			}
			for _, w := range f[i+j+1:] {
				if strings.HasPrefix(w, "-") || w == `\` {
					continue
				}
				name, _, _ := strings.Cut(w, "=")
				pkgs = append(pkgs, name)
			}
		}
	}
	return pkgs
}

// exec form args, or nil for the shell form.
func execArgs(n *parser.Node) []string {
	if n.Attributes["json"] {
		return nodeArgs(n)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The stages by role.

// binaryCopy is the final stage's COPY of the fastinfer binary.
func (d *dockerfile) binaryCopy() (*parser.Node, *dfStage, string, error) {
	for _, n := range d.final().find(command.Copy) {
		from, ok := flagValue(n, "from")
		if !ok {
			continue
		}
		srcs, _ := copyArgs(n)
		for _, s := range srcs {
			if path.Base(s) == "fastinfer" {
				st := d.stage(from)
				if st == nil {
					return nil, nil, "", fmt.Errorf("the binary is copied from %q, which is no stage", from)
				}
				return n, st, s, nil
			}
		}
	}
	return nil, nil, "", errors.New("the final stage copies no fastinfer binary from a build stage")
}

func (d *dockerfile) buildStage() (*dfStage, error) {
	_, st, _, err := d.binaryCopy()
	return st, err
}

// goImage is the image the build stage's Go toolchain comes from.
func (d *dockerfile) goImage() (string, error) {
	b, err := d.buildStage()
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(b.base, "golang:") {
		return b.base, nil
	}
	for _, n := range b.find(command.Copy) {
		from, ok := flagValue(n, "from")
		srcs, dest := copyArgs(n)
		if !ok || !slices.Contains(srcs, "/usr/local/go") {
			continue
		}
		// The copied toolchain must be the go on the build stage's PATH.
		if bin := path.Join(absIn(b.workdirBefore(n), dest), "bin"); !slices.Contains(strings.Split(b.env()["PATH"], ":"), bin) {
			return "", fmt.Errorf("the Go toolchain is copied to %s, but %s is not on the build stage's PATH", dest, bin)
		}
		if st := d.stage(from); st != nil {
			return st.base, nil
		}
		return from, nil
	}
	return "", fmt.Errorf("the build stage (%s) neither is a golang image nor copies /usr/local/go from one", b.base)
}

var cudaImage = regexp.MustCompile(`^(?:[a-z0-9.-]+(?::[0-9]+)?/)?nvidia/cuda:([0-9]+)\.([0-9]+)(?:\.([0-9]+))?-(cudnn[0-9]*-)?runtime-(ubuntu[0-9]+\.[0-9]+)$`)

// distro names the OS release of an image, as far as its name tells.
func distro(image string) string {
	if m := cudaImage.FindStringSubmatch(image); m != nil {
		return m[5]
	}
	if m := regexp.MustCompile(`^(?:docker\.io/)?(?:library/)?ubuntu:([0-9]+\.[0-9]+)$`).FindStringSubmatch(image); m != nil {
		return "ubuntu" + m[1]
	}
	switch {
	case strings.HasSuffix(image, "-bookworm"), image == "debian:bookworm", image == "debian:12",
		strings.HasPrefix(image, "debian:bookworm-"), strings.HasPrefix(image, "debian:12-"):
		return "debian12"
	case strings.HasSuffix(image, "-trixie"), image == "debian:trixie", image == "debian:13":
		return "debian13"
	}
	return "unknown (" + image + ")"
}

// finalUID is the numeric uid of the final stage's last USER.
func (d *dockerfile) finalUID() (string, error) {
	us := d.final().find(command.User)
	if len(us) == 0 {
		return "", errors.New("the final stage sets no USER: the server would run as root")
	}
	a := nodeArgs(us[len(us)-1])
	if len(a) != 1 {
		return "", fmt.Errorf("malformed USER %q", us[len(us)-1].Original)
	}
	user, _, _ := strings.Cut(a[0], ":")
	if user == "" || user == "root" || strings.TrimLeft(user, "0") == "" {
		return "", fmt.Errorf("USER %s is root", a[0])
	}
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(user) {
		return "", fmt.Errorf("USER %s: use a numeric uid, which Kubernetes' runAsNonRoot can verify", a[0])
	}
	return user, nil
}

// serveCmd is the final stage's CMD, checked as `fastinfer serve` args.
func (d *dockerfile) serveCmd(t testing.TB) (map[string]string, error) {
	cs := d.final().find(command.Cmd)
	if len(cs) == 0 {
		return nil, errors.New("the final stage has no CMD")
	}
	args := execArgs(cs[len(cs)-1])
	if args == nil {
		return nil, errors.New("CMD is in shell form: use the exec (JSON) form")
	}
	return parseServeArgs(t, args)
}

func (s *dfStage) exposed() []string {
	var ports []string
	for _, n := range s.find(command.Expose) {
		for _, p := range nodeArgs(n) {
			p, _, _ = strings.Cut(p, "/")
			ports = append(ports, p)
		}
	}
	return ports
}

// ---------------------------------------------------------------------------
// Facts from outside the Dockerfile.

var (
	gocvOnce    sync.Once
	gocvMods    []string
	gocvModsErr error
)

// gocvModules are the OpenCV modules the gocv package compiles in: one per
// .cpp file at the module root (asyncarray, svd and version belong to core).
// Every one is a DT_NEEDED entry of the binary, whatever fastinfer calls.
func gocvModules(t testing.TB) []string {
	t.Helper()
	gocvOnce.Do(func() {
		dir, err := goCmd(t, "list", "-m", "-f", "{{.Dir}}", "gocv.io/x/gocv")
		dir = strings.TrimSpace(dir)
		if err != nil || dir == "" {
			gocvModsErr = fmt.Errorf("gocv module folder not found (%v)", err)
			return
		}
		files, err := filepath.Glob(filepath.Join(dir, "*.cpp"))
		if err != nil || len(files) == 0 {
			gocvModsErr = fmt.Errorf("no .cpp files in %s (%v)", dir, err)
			return
		}
		seen := map[string]bool{}
		for _, f := range files {
			m := strings.TrimSuffix(filepath.Base(f), ".cpp")
			switch m {
			case "asyncarray", "svd", "version":
				m = "core"
			}
			if !seen[m] {
				seen[m] = true
				gocvMods = append(gocvMods, m)
			}
		}
		sort.Strings(gocvMods)
	})
	if gocvModsErr != nil {
		// The list for gocv v0.31.0, read from its module folder.
		t.Logf("%v; using the list for gocv v0.31.0", gocvModsErr)
		return []string{"calib3d", "core", "dnn", "features2d", "highgui", "imgcodecs", "imgproc", "objdetect", "photo", "video", "videoio"}
	}
	return gocvMods
}

func loadDockerfile(t testing.TB) *dockerfile {
	t.Helper()
	d, err := parseDockerfile(readRepoFile(t, "Dockerfile.gpu"))
	if err != nil {
		t.Fatalf("Dockerfile.gpu: %v", err)
	}
	return d
}

// ---------------------------------------------------------------------------
// The checks.

type dfCheck struct {
	name  string
	check func(t testing.TB, d *dockerfile) error
	// breaks are edits of Dockerfile.gpu that this check must reject.
	breaks []func(t testing.TB, src string) string
}

func replaceOnce(old, new string) func(t testing.TB, src string) string {
	return func(t testing.TB, src string) string { return mustReplace(t, src, old, new, 1) }
}

func replaceAll(old, new string) func(t testing.TB, src string) string {
	return func(t testing.TB, src string) string { return mustReplace(t, src, old, new, -1) }
}

var dockerfileChecks = []dfCheck{
	{
		name: "every instruction is one BuildKit knows",
		check: func(t testing.TB, d *dockerfile) error {
			if len(d.unknown) > 0 {
				return fmt.Errorf("unknown instructions, which BuildKit would skip: %q", d.unknown)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{replaceOnce("\nUSER 10001:10001", "\nUSR 10001:10001")},
	},
	{
		name: "multi-stage: the final stage copies its binary from a build stage",
		check: func(t testing.TB, d *dockerfile) error {
			if len(d.stages) < 2 {
				return fmt.Errorf("%d stage(s); want a build stage and a runtime stage", len(d.stages))
			}
			_, err := d.buildStage()
			return err
		},
		breaks: []func(testing.TB, string) string{
			func(t testing.TB, src string) string { return src[strings.LastIndex(src, "\nFROM ")+1:] },
		},
	},
	{
		name: "the runtime base is a CUDA 13 cuDNN runtime image",
		check: func(t testing.TB, d *dockerfile) error {
			base := d.final().base
			m := cudaImage.FindStringSubmatch(base)
			if m == nil {
				return fmt.Errorf("final base %q is not an nvidia/cuda:<version>-cudnn-runtime-ubuntu<release> image", base)
			}
			if m[1] != fmt.Sprint(wantCUDAMajor) {
				return fmt.Errorf("final base %q is CUDA %s; the ONNX Runtime CUDA provider needs CUDA %d", base, m[1], wantCUDAMajor)
			}
			if m[4] == "" {
				return fmt.Errorf("final base %q has no cuDNN, which the CUDA provider loads", base)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("nvidia/cuda:13.0.1-cudnn-runtime", "nvidia/cuda:12.8.1-cudnn-runtime"),
			replaceOnce("nvidia/cuda:13.0.1-cudnn-runtime", "nvidia/cuda:13.0.1-runtime"),
			replaceOnce("FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS runtime", "FROM ubuntu:24.04 AS runtime"),
		},
	},
	{
		name: "the build stage runs the runtime's OS release (glibc, OpenCV sonames)",
		check: func(t testing.TB, d *dockerfile) error {
			b, err := d.buildStage()
			if err != nil {
				return err
			}
			if bd, rd := distro(b.base), distro(d.final().base); bd != rd {
				return fmt.Errorf("build stage on %s (%s), runtime on %s (%s): the binary links that release's OpenCV and glibc", bd, b.base, rd, d.final().base)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("FROM ubuntu:24.04 AS build", "FROM ubuntu:22.04 AS build"),
			replaceOnce("FROM ubuntu:24.04 AS build", "FROM golang:1.26-bookworm AS build"),
		},
	},
	{
		name: "the Go toolchain is go.mod's Go release",
		check: func(t testing.TB, d *dockerfile) error {
			img, err := d.goImage()
			if err != nil {
				return err
			}
			m := regexp.MustCompile(`^(?:docker\.io/)?(?:library/)?golang:([0-9]+\.[0-9]+)(?:\.[0-9]+)?(?:-[a-z0-9]+)?$`).FindStringSubmatch(img)
			if m == nil {
				return fmt.Errorf("Go toolchain image %q is not golang:<major.minor>[-variant]", img)
			}
			if want := goModGoVersion(t); m[1] != want {
				return fmt.Errorf("Go toolchain %s, go.mod says go %s", m[1], want)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("FROM golang:1.26-bookworm AS go", "FROM golang:1.25-bookworm AS go"),
			replaceOnce("COPY --from=go /usr/local/go /usr/local/go", "COPY --from=go /usr/local/go /opt/go"),
		},
	},
	{
		name: "the server runs as a numeric non-root user",
		check: func(t testing.TB, d *dockerfile) error {
			_, err := d.finalUID()
			return err
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("USER 10001:10001", "USER root"),
			replaceOnce("USER 10001:10001", "USER 0:0"),
			replaceOnce("USER 10001:10001", "USER fastinfer"),
			replaceOnce("USER 10001:10001\n", ""),
		},
	},
	{
		name: "HEALTHCHECK asks /v2/health/ready with a tool the image has",
		check: func(t testing.TB, d *dockerfile) error {
			hs := d.final().find(command.Healthcheck)
			if len(hs) != 1 {
				return fmt.Errorf("%d HEALTHCHECK instructions in the final stage, want 1", len(hs))
			}
			a := nodeArgs(hs[0])
			if len(a) < 2 || !strings.EqualFold(a[0], "CMD") {
				return fmt.Errorf("HEALTHCHECK %q has no CMD", hs[0].Original)
			}
			text := strings.Join(a[1:], " ")
			// Every URL asked (over HTTP, then HTTPS for a server with TLS).
			urls := regexp.MustCompile(`https?://[^/\s:]+:([0-9]+)(/\S*)`).FindAllStringSubmatch(text, -1)
			if len(urls) == 0 {
				return fmt.Errorf("HEALTHCHECK %q does not ask http://HOST:PORT/v2/health/ready", text)
			}
			for _, m := range urls {
				if m[2] != "/v2/health/ready" {
					return fmt.Errorf("HEALTHCHECK asks %s, want /v2/health/ready", m[0])
				}
				if !serverHasRoute(t, m[2]) {
					return fmt.Errorf("the server has no route %s", m[2])
				}
				if !slices.Contains(d.final().exposed(), m[1]) {
					return fmt.Errorf("HEALTHCHECK port %s is not EXPOSEd", m[1])
				}
			}
			tool := strings.Fields(text)[0]
			if !slices.Contains(d.final().aptInstalls(), tool) {
				return fmt.Errorf("HEALTHCHECK runs %s, which the final stage does not install", tool)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("127.0.0.1:8080/v2/health/ready", "127.0.0.1:8080/v2/health/live"),
			replaceOnce("ca-certificates curl libopenblas0", "ca-certificates libopenblas0"),
			replaceOnce("127.0.0.1:8080/v2/health/ready", "127.0.0.1:9090/v2/health/ready"),
			replaceOnce("https://127.0.0.1:8080/v2/health/ready", "https://127.0.0.1:8080/v2/health/live"),
		},
	},
	{
		name: "EXPOSE 8080 and 8001, the ports of CMD's --addr and --grpc-addr",
		check: func(t testing.TB, d *dockerfile) error {
			vals, err := d.serveCmd(t)
			if err != nil {
				return err
			}
			ports := d.final().exposed()
			if !slices.Contains(ports, "8080") {
				return fmt.Errorf("EXPOSE %v lacks 8080", ports)
			}
			if p := addrPort(vals["addr"]); !slices.Contains(ports, p) {
				return fmt.Errorf("CMD listens on --addr %q, EXPOSE says %v", vals["addr"], ports)
			}
			g, ok := vals["grpc-addr"]
			if !ok {
				g = ":8001" // serve's default
			}
			if p := addrPort(g); g != "" && !slices.Contains(ports, p) {
				return fmt.Errorf("CMD serves gRPC on %q, EXPOSE says %v", g, ports)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("EXPOSE 8080", "EXPOSE 9090"),
			replaceOnce(`"--addr", ":8080"`, `"--addr", ":9000"`),
			replaceOnce("EXPOSE 8080 8001", "EXPOSE 8080"),
			replaceOnce(`"--grpc-addr", ":8001"`, `"--grpc-addr", ":9001"`),
		},
	},
	{
		name: `ENTRYPOINT ["fastinfer"], CMD serves the /models volume`,
		check: func(t testing.TB, d *dockerfile) error {
			es := d.final().find(command.Entrypoint)
			if len(es) == 0 {
				return errors.New("no ENTRYPOINT")
			}
			if a := execArgs(es[len(es)-1]); !slices.Equal(a, []string{"fastinfer"}) {
				return fmt.Errorf(`ENTRYPOINT %q, want ["fastinfer"] in exec form`, es[len(es)-1].Original)
			}
			n, _, _, err := d.binaryCopy()
			if err != nil {
				return err
			}
			if _, dest := copyArgs(n); dest != "/usr/local/bin/fastinfer" && path.Clean(dest) != "/usr/local/bin" {
				return fmt.Errorf("the binary goes to %s, not /usr/local/bin (on PATH)", dest)
			}
			vals, err := d.serveCmd(t)
			if err != nil {
				return err
			}
			var vols []string
			for _, v := range d.final().find(command.Volume) {
				vols = append(vols, nodeArgs(v)...)
			}
			if !slices.Contains(vols, vals["models"]) {
				return fmt.Errorf("CMD serves --models %q, VOLUME is %v", vals["models"], vols)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("VOLUME /models", "VOLUME /data"),
			replaceOnce(`ENTRYPOINT ["fastinfer"]`, `ENTRYPOINT fastinfer`),
			replaceOnce(`"--models", "/models"`, `"--model-dir", "/models"`),
			replaceOnce(`CMD ["serve", "--models", "/models", "--addr", ":8080", "--grpc-addr", ":8001"]`, `CMD serve --models /models`),
		},
	},
	{
		name: "every COPY/ADD source is in the build context",
		check: func(t testing.TB, d *dockerfile) error {
			pm, err := loadIgnore(readRepoFile(t, ".dockerignore"))
			if err != nil {
				return err
			}
			root := repoRoot(t)
			for _, s := range d.stages {
				for _, n := range s.cmds {
					if !strings.EqualFold(n.Value, command.Copy) && !strings.EqualFold(n.Value, command.Add) {
						continue
					}
					if _, ok := flagValue(n, "from"); ok {
						continue
					}
					srcs, _ := copyArgs(n)
					for _, src := range srcs {
						if strings.Contains(src, "://") {
							return fmt.Errorf("line %d: ADD of a URL (%s): fetch through scripts/", n.StartLine, src)
						}
						rel := path.Clean(strings.TrimPrefix(src, "/"))
						if rel == "." {
							continue
						}
						matches, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(rel)))
						if len(matches) == 0 {
							return fmt.Errorf("line %d: %s is not in the repository", n.StartLine, src)
						}
						if ignored(pm, rel) {
							return fmt.Errorf("line %d: %s is excluded by .dockerignore", n.StartLine, src)
						}
					}
				}
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("COPY scripts/deps.sh scripts/deps.sh", "COPY scripts/dep.sh scripts/deps.sh"),
			replaceOnce("COPY go.mod go.sum ./", "COPY go.mod go.sum docs/web.png ./"),
		},
	},
	{
		name: "the build stage installs scripts/deps.sh's APT_PACKAGES (documented exceptions aside)",
		check: func(t testing.TB, d *dockerfile) error {
			b, err := d.buildStage()
			if err != nil {
				return err
			}
			have := b.aptInstalls()
			for _, p := range parseDeps(t).aptPackages {
				if why, ok := aptExceptions[p]; ok {
					if !strings.Contains(d.src, p) {
						return fmt.Errorf("%s (%s) is left out without a word in Dockerfile.gpu", p, why)
					}
					continue
				}
				if !slices.Contains(have, p) {
					return fmt.Errorf("the build stage does not install %s (scripts/deps.sh APT_PACKAGES); it installs %v", p, have)
				}
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("libopencv-dev libjpeg-dev pkg-config libopenblas-dev \\", "libopencv-dev libjpeg-dev pkg-config \\"),
			replaceOnce("libopencv-dev libjpeg-dev pkg-config", "libopencv-dev pkg-config"),
			replaceOnce("chromium (the web", "a browser (the web"),
		},
	},
	{
		name: "ONNX Runtime comes from scripts/deps.sh, not from a download of its own",
		check: func(t testing.TB, d *dockerfile) error {
			b, err := d.buildStage()
			if err != nil {
				return err
			}
			steps := parseDeps(t).steps
			copied, invoked := false, map[string]bool{}
			for _, n := range b.cmds {
				switch strings.ToLower(n.Value) {
				case command.Copy:
					if _, ok := flagValue(n, "from"); ok {
						continue
					}
					srcs, _ := copyArgs(n)
					if slices.Contains(srcs, "scripts/deps.sh") || slices.Contains(srcs, ".") || slices.Contains(srcs, "scripts") {
						copied = true
					}
				case command.Run:
					for _, m := range regexp.MustCompile(`(?:^|[\s/])scripts/deps\.sh\s+([a-z-]+)`).FindAllStringSubmatch(runText(n), -1) {
						if !copied {
							return fmt.Errorf("line %d runs scripts/deps.sh before copying it", n.StartLine)
						}
						if !slices.Contains(steps, m[1]) {
							return fmt.Errorf("scripts/deps.sh has no step %q", m[1])
						}
						invoked[m[1]] = true
					}
				}
			}
			if !invoked["ort-gpu"] {
				return fmt.Errorf("the build stage does not run `scripts/deps.sh ort-gpu` (steps run: %v)", invoked)
			}
			download := regexp.MustCompile(`(?i)\b(npm\s+(pack|install|i)|curl|wget|pip3?\s+install)\b`)
			ort := regexp.MustCompile(`(?i)onnxruntime|asus4|sha512-`)
			for _, s := range d.stages {
				for _, n := range s.find(command.Run) {
					if txt := runText(n); download.MatchString(txt) && ort.MatchString(txt) {
						return fmt.Errorf("line %d fetches ONNX Runtime by itself: %q", n.StartLine, txt)
					}
				}
				for _, n := range s.find(command.Add) {
					if srcs, _ := copyArgs(n); ort.MatchString(strings.Join(srcs, " ")) {
						return fmt.Errorf("line %d ADDs ONNX Runtime by itself", n.StartLine)
					}
				}
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("RUN bash scripts/deps.sh ort && bash scripts/deps.sh ort-gpu",
				"RUN npm pack com.github.asus4.onnxruntime@0.4.9 && tar -xzf *.tgz"),
			replaceOnce("RUN bash scripts/deps.sh ort && bash scripts/deps.sh ort-gpu",
				`RUN bash scripts/deps.sh ort && curl -fsSLO "$ORT_MIRROR/onnxruntime-gpu-1.29.0.tgz"`),
			replaceOnce("bash scripts/deps.sh ort-gpu", "bash scripts/deps.sh gpu"),
		},
	},
	{
		name: "the runtime gets deps.sh's ONNX Runtime libraries, in ONNXRUNTIME_LIB's folder",
		check: func(t testing.TB, d *dockerfile) error {
			deps := parseDeps(t)
			b, err := d.buildStage()
			if err != nil {
				return err
			}
			// Where deps.sh put them: $ORT_CACHE, else <its folder>/../.cache/onnxruntime/<version>.
			cache := b.env()["ORT_CACHE"]
			if cache == "" {
				for _, n := range b.find(command.Copy) {
					srcs, dest := copyArgs(n)
					if _, ok := flagValue(n, "from"); ok || len(srcs) != 1 || cache != "" {
						continue
					}
					var script string
					switch srcs[0] {
					case "scripts/deps.sh":
						script = absIn(b.workdirBefore(n), dest)
						if strings.HasSuffix(dest, "/") {
							script = path.Join(script, "deps.sh")
						}
					case ".":
						script = path.Join(absIn(b.workdirBefore(n), dest), "scripts/deps.sh")
					default:
						continue
					}
					cache = path.Join(path.Dir(path.Dir(script)), ".cache/onnxruntime", deps.ortVersion)
				}
			}
			if cache == "" {
				return errors.New("cannot tell where scripts/deps.sh puts ONNX Runtime in the build stage")
			}
			dirs := map[string]bool{}
			for _, lib := range deps.ortLibs {
				found := false
				for _, n := range d.final().find(command.Copy) {
					from, ok := flagValue(n, "from")
					if !ok || d.stage(from) != b {
						continue
					}
					srcs, dest := copyArgs(n)
					if !slices.Contains(srcs, path.Join(cache, lib)) {
						continue
					}
					found = true
					dest = absIn(d.final().workdirBefore(n), dest)
					if len(srcs) == 1 && !strings.HasSuffix(copyDestRaw(n), "/") {
						dest = path.Dir(dest)
					}
					dirs[dest] = true
				}
				if !found {
					return fmt.Errorf("the final stage does not copy %s from the build stage", path.Join(cache, lib))
				}
			}
			if len(dirs) != 1 {
				return fmt.Errorf("the ONNX Runtime libraries land in %d folders %v; ONNX Runtime loads its providers from its own folder", len(dirs), dirs)
			}
			var dir string
			for k := range dirs {
				dir = k
			}
			if got, want := d.final().env()["ONNXRUNTIME_LIB"], path.Join(dir, "libonnxruntime.so"); got != want {
				return fmt.Errorf("ONNXRUNTIME_LIB=%q, want %q", got, want)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("     /src/.cache/onnxruntime/1.29.0/libonnxruntime_providers_cuda.so \\\n", ""),
			replaceOnce("ONNXRUNTIME_LIB=/opt/onnxruntime/libonnxruntime.so", "ONNXRUNTIME_LIB=/usr/lib/libonnxruntime.so"),
			replaceAll("/src/.cache/onnxruntime/1.29.0/", "/src/.cache/onnxruntime/1.28.0/"),
			replaceOnce("WORKDIR /src\n", "WORKDIR /build\n"),
		},
	},
	{
		name: "go build matches the Makefile: cgo, -tags, ./cmd/fastinfer, the binary the runtime copies",
		check: func(t testing.TB, d *dockerfile) error {
			_, b, binSrc, err := d.binaryCopy()
			if err != nil {
				return err
			}
			var build *parser.Node
			for _, n := range b.find(command.Run) {
				if regexp.MustCompile(`\bgo build\b`).MatchString(runText(n)) {
					build = n
				}
			}
			if build == nil {
				return errors.New("the build stage runs no `go build`")
			}
			txt := runText(build)
			m := regexp.MustCompile(`-tags[ =]"?([^\s"]+)`).FindStringSubmatch(txt)
			if m == nil || m[1] != makeGoTags(t) {
				return fmt.Errorf("go build tags %v, the Makefile builds with -tags %s", m, makeGoTags(t))
			}
			if !regexp.MustCompile(`\s\./cmd/fastinfer\b`).MatchString(txt) {
				return errors.New("go build does not build ./cmd/fastinfer")
			}
			o := regexp.MustCompile(`\s-o\s+(\S+)`).FindStringSubmatch(txt)
			if o == nil || absIn(b.workdirBefore(build), o[1]) != binSrc {
				return fmt.Errorf("go build writes %v, the runtime copies %s", o, binSrc)
			}
			if strings.Contains(txt, "CGO_ENABLED=0") || (b.env()["CGO_ENABLED"] != "1" && !strings.Contains(txt, "CGO_ENABLED=1")) {
				return errors.New("cgo is not enabled for go build (gocv and OpenBLAS need it)")
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce("go build -tags openblas", "go build -tags netgo"),
			replaceOnce("CGO_ENABLED=1", "CGO_ENABLED=0"),
			replaceOnce("-o /out/fastinfer ./cmd/fastinfer", "-o /out/server ./cmd/fastinfer"),
		},
	},
	{
		name: "the runtime installs every shared library the binary links",
		check: func(t testing.TB, d *dockerfile) error {
			have := d.final().aptInstalls()
			var missing []string
			for _, m := range gocvModules(t) {
				if p := "libopencv-" + m + opencvSoVersion + "t64"; !slices.Contains(have, p) {
					missing = append(missing, p)
				}
			}
			if strings.Contains(","+makeGoTags(t)+",", ",openblas,") && !slices.Contains(have, "libopenblas0") {
				missing = append(missing, "libopenblas0")
			}
			if !slices.Contains(have, "libjpeg-turbo8") { // vision/jpeg_gocv.go links libjpeg
				missing = append(missing, "libjpeg-turbo8")
			}
			if len(missing) > 0 {
				return fmt.Errorf("the final stage does not install %v", missing)
			}
			return nil
		},
		breaks: []func(testing.TB, string) string{
			replaceOnce(" libopencv-dnn406t64", ""),
			replaceOnce("curl libopenblas0 libjpeg-turbo8 \\", "curl libjpeg-turbo8 \\"),
			replaceOnce(" libjpeg-turbo8 \\", " \\"),
			replaceOnce("libopencv-highgui406t64", "libopencv-highgui406"),
		},
	},
}

// copyDestRaw is a COPY's destination as written.
func copyDestRaw(n *parser.Node) string {
	_, dest := copyArgs(n)
	return dest
}

func TestDockerfile(t *testing.T) {
	d := loadDockerfile(t)
	for _, c := range dockerfileChecks {
		t.Run(c.name, func(t *testing.T) {
			if err := c.check(t, d); err != nil {
				t.Errorf("Dockerfile.gpu: %v", err)
			}
			if len(c.breaks) == 0 {
				t.Fatal("no broken variant to prove the check can fail")
			}
			for i, br := range c.breaks {
				bad, err := parseDockerfile(br(t, d.src))
				if err != nil {
					t.Fatalf("broken variant %d does not parse: %v", i, err)
				}
				if err := c.check(t, bad); err == nil {
					t.Errorf("broken variant %d passed the check", i)
				} else {
					t.Logf("broken variant %d rejected: %v", i, err)
				}
			}
		})
	}
}

// TestDockerfileDocumentsUsage keeps the build and run commands at the top.
func TestDockerfileDocumentsUsage(t *testing.T) {
	src := readRepoFile(t, "Dockerfile.gpu")
	for _, want := range []string{
		"docker build -f Dockerfile.gpu -t fastinfer:gpu .",
		"docker run --gpus all -p 8080:8080 -p 8001:8001 -v $PWD/models:/models fastinfer:gpu",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("Dockerfile.gpu does not document %q", want)
		}
	}
	// The reason for the CUDA major sits next to the runtime FROM.
	d := loadDockerfile(t)
	from := regexp.MustCompile(`(?m)^FROM ` + regexp.QuoteMeta(d.final().base)).FindStringIndex(src)
	if from == nil || !strings.Contains(src[max(0, from[0]-300):from[0]], fmt.Sprintf("CUDA major (%d) must match", wantCUDAMajor)) {
		t.Errorf("no comment just above the runtime FROM saying the CUDA major (%d) must match the provider build", wantCUDAMajor)
	}
}

// TestCUDAProviderMajor reads the CUDA major the provider library links,
// where `make gpu-deps` has installed it.
func TestCUDAProviderMajor(t *testing.T) {
	lib := filepath.Join(repoRoot(t), ".cache", "onnxruntime", parseDeps(t).ortVersion, "libonnxruntime_providers_cuda.so")
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("%s not installed (make gpu-deps): %v", lib, err)
	}
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	needed, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range needed {
		if v, ok := strings.CutPrefix(n, "libcudart.so."); ok {
			if v != fmt.Sprint(wantCUDAMajor) {
				t.Errorf("the CUDA provider links %s; wantCUDAMajor and the runtime image say %d", n, wantCUDAMajor)
			}
			return
		}
	}
	t.Errorf("the CUDA provider links no libcudart (DT_NEEDED %v)", needed)
}

func TestParseDockerfileRejects(t *testing.T) {
	for _, src := range []string{
		"",
		"RUN echo no FROM\n",
		"FROM a b c d\n",
	} {
		if _, err := parseDockerfile(src); err == nil {
			t.Errorf("parseDockerfile(%q) succeeded", src)
		}
	}
}
