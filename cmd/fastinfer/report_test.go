package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"fastinfer/monitor/drift"
	"fastinfer/monitor/predlog"
)

// imagenetish are labels of a second, profile-less model, with Zipf-like
// frequencies so its class mix has a long tail.
var imagenetish = []string{
	"tabby", "golden retriever", "espresso", "laptop", "mountain bike", "daisy", "pizza",
	"goldfish", "tiger cat", "Egyptian cat", "banana", "lemon", "traffic light", "umbrella",
	"backpack", "sunglasses", "teapot", "park bench", "volcano", "seashore", "lakeside",
	"alp", "cliff", "valley",
}

// writeSyntheticLog fills a SQLite prediction log at path with a day of
// traffic ending at end: fashion-resnet v3 drawn from its reference
// profile, darker and less confident in the last five hours, with a
// latency spike; and resnet50 v1 in the last ten hours.
func writeSyntheticLog(t *testing.T, path string, prof *drift.Profile, end time.Time) int {
	t.Helper()
	ctx := context.Background()
	l, err := predlog.Open(ctx, "sqlite:"+path, predlog.Options{Buffer: 100000})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sample := func(name string) float64 {
		s := prof.Features[name]
		return s[rng.IntN(len(s))]
	}
	n := 0
	add := func(r predlog.Record) {
		if !l.Add(r) {
			t.Fatal("prediction log dropped a record")
		}
		n++
	}
	start := end.Add(-24 * time.Hour)
	req := 0
	for at := start.Add(2 * time.Minute); at.Before(end); at = at.Add(time.Duration(20+rng.IntN(40)) * time.Second) {
		req++
		hour := at.Sub(start).Hours()
		shifted := hour >= 19
		for img := range 1 + rng.IntN(3) {
			u, cls := rng.Float64(), 0
			for c, f := range prof.ClassFreq {
				if u -= f; u < 0 {
					cls = c
					break
				}
			}
			conf, bright, contrast := sample(drift.FeatureConfidence), sample(drift.FeatureBrightness), sample(drift.FeatureContrast)
			if shifted {
				conf, bright, contrast = conf*(0.55+0.4*rng.Float64()), bright*0.45, contrast*0.6
			}
			ms := 3 + rng.ExpFloat64()*1.5
			if hour >= 8 && hour < 9.5 {
				ms *= 3 // a noisy neighbour
			}
			add(predlog.Record{
				Time: at.Add(time.Duration(img) * time.Millisecond), RequestID: fmt.Sprintf("f-%d", req),
				Model: "fashion-resnet", Version: 3,
				TopK:    []predlog.Class{{Index: cls, Label: prof.Classes[cls], Score: conf}, {Index: (cls + 1) % 10, Label: prof.Classes[(cls+1)%10], Score: (1 - conf) / 2}},
				Latency: predlog.Latency{PreprocessMs: 0.3, QueueMs: ms * 0.2, InferMs: ms * 0.7, TotalMs: ms},
				Width:   28, Height: 28, Brightness: bright, Contrast: contrast,
			})
		}
	}
	for at := end.Add(-10 * time.Hour); at.Before(end); at = at.Add(time.Duration(30+rng.IntN(90)) * time.Second) {
		req++
		cls := min(int(math.Floor(math.Pow(rng.Float64(), 2.2)*float64(len(imagenetish)))), len(imagenetish)-1)
		ms := 20 + rng.ExpFloat64()*6
		add(predlog.Record{
			Time: at, RequestID: fmt.Sprintf("r-%d", req), Model: "resnet50", Version: 1,
			TopK:    []predlog.Class{{Index: cls * 37, Label: imagenetish[cls], Score: 0.3 + 0.7*math.Sqrt(rng.Float64())}},
			Latency: predlog.Latency{TotalMs: ms, InferMs: ms - 2},
			Width:   640, Height: 480, Brightness: 0.4 + 0.2*rng.Float64(), Contrast: 0.2,
		})
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := l.Close(cctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// reportScreenshotPath is FASTINFER_SCREENSHOT (relative to the
// repository root) or a file in the test's temporary folder.
func reportScreenshotPath(t *testing.T) string {
	path := os.Getenv("FASTINFER_SCREENSHOT")
	switch {
	case path == "":
		path = filepath.Join(t.TempDir(), "report.png")
	case !filepath.IsAbs(path):
		path = filepath.Join("..", "..", path)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path
}

// The report as a person reads it: a day of synthetic traffic in a real
// SQLite prediction log, `fastinfer report` over it, and the page opened
// in headless Chromium: headings, charts that have a size, the drift
// alarm, no script and no error, and a page that fits a phone. The
// full-page screenshot goes to FASTINFER_SCREENSHOT (docs/report.png for
// the README) or the test's temporary folder.
func TestReportCommandInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("renders the report in a browser; skipped in -short")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (%v): `make test` installs it (scripts/deps.sh apt, Debian package chromium)", chromiumPath, err)
	}
	repo := fashionRepo(t)
	prof, err := drift.ReadFile(filepath.Join(repo, "fashion-resnet", "3", drift.ReferenceFile))
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	end := time.Now().UTC().Add(-time.Minute)
	n := writeSyntheticLog(t, filepath.Join(data, "predictions.db"), prof, end)

	out := filepath.Join(t.TempDir(), "out", "report.html")
	var stdout, stderr bytes.Buffer
	code := run([]string{"report", "--since", "24h", "--data-dir", data, "--models", repo, "--out", out}, &stdout, &stderr, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("report: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Logf("%s", strings.TrimSpace(stdout.String()))
	if !strings.HasPrefix(stdout.String(), fmt.Sprintf("wrote %s: %d predictions in ", out, n)) ||
		!strings.Contains(stdout.String(), "drift: fashion-resnet v3") {
		t.Errorf("output %q; want where it wrote, the %d predictions and the drift", stdout.String(), n)
	}
	html, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(html, []byte("<script")) {
		t.Error("the report has a script")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	var mu sync.Mutex
	var problems []string
	tab, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == "error" {
				problems = append(problems, "console.error")
			}
		case *log.EventEntryAdded:
			if ev.Entry != nil && ev.Entry.Level == log.EntryLevelError {
				problems = append(problems, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}))
	defer cancelTab()
	if err := chromedp.Do(tab, chromedp.Navigate("file://"+out), chromedp.WaitReady(chromedp.CSS("footer"))); err != nil {
		t.Fatalf("opening the report: %v", err)
	}
	type pageState struct {
		H1          string   `json:"h1"`
		H2          []string `json:"h2"`
		H3          []string `json:"h3"`
		SVGs        int      `json:"svgs"`
		SmallSVGs   int      `json:"smallSvgs"`
		Bars        int      `json:"bars"`
		Lines       int      `json:"lines"`
		Scripts     int      `json:"scripts"`
		DriftStatus []string `json:"driftStatus"`
		DriftRows   int      `json:"driftRows"`
		Summary     []string `json:"summary"`
		TableFits   bool     `json:"tableFits"`
	}
	got, err := chromedp.Run(tab, chromedp.Evaluate[pageState](`(() => {
		const all = (s) => [...document.querySelectorAll(s)];
		const text = (s) => all(s).map((e) => e.textContent.replace(/\s+/g, ' ').trim());
		return {
			h1: document.querySelector('h1').textContent,
			h2: text('h2'),
			h3: text('h3'),
			svgs: all('svg').length,
			smallSvgs: all('svg').filter((e) => { const r = e.getBoundingClientRect(); return r.width < 300 || r.height < 100; }).length,
			bars: all('svg rect').filter((e) => e.getBoundingClientRect().height > 0).length,
			lines: all('svg path').length,
			scripts: all('script').length,
			driftStatus: text('.drift .status'),
			driftRows: all('tr.test.drift').length,
			summary: text('#summary tbody tr'),
			tableFits: all('.scroll').every((e) => e.scrollWidth <= e.clientWidth),
		};
	})()`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	if got.H1 != "Prediction report" {
		t.Errorf("h1 %q", got.H1)
	}
	if want := []string{"Summary", "fashion-resnet version 3", "resnet50 version 1"}; !slices.Equal(got.H2, want) {
		t.Errorf("h2 %q, want %q", got.H2, want)
	}
	if want := []string{"Volume", "Latency", "Class mix", "Confidence", "Drift", "Volume", "Latency", "Class mix", "Confidence"}; !slices.Equal(got.H3, want) {
		t.Errorf("h3 %q, want %q", got.H3, want)
	}
	if got.SVGs < 1 || got.SVGs != 8 || got.SmallSVGs != 0 {
		t.Errorf("%d <svg> charts (%d too small), want 8 drawn", got.SVGs, got.SmallSVGs)
	}
	if got.Bars < 50 || got.Lines != 6 {
		t.Errorf("%d visible bars and %d latency lines", got.Bars, got.Lines)
	}
	if got.Scripts != 0 {
		t.Errorf("%d scripts", got.Scripts)
	}
	if len(got.DriftStatus) != 1 || !strings.HasPrefix(got.DriftStatus[0], "drift:") || got.DriftRows == 0 {
		t.Errorf("drift status %q with %d alarming tests; want the darkened traffic to alarm", got.DriftStatus, got.DriftRows)
	}
	if len(got.Summary) != 3 || !strings.Contains(got.Summary[2], fmtThousands(n)) {
		t.Errorf("summary rows %q", got.Summary)
	}
	if !got.TableFits {
		t.Error("at 1100 px a table scrolls sideways")
	}

	shot, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := reportScreenshotPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	// At a phone's width the charts shrink and the tables scroll in their
	// own boxes: the page itself does not scroll sideways.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(375, 812)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(tab, chromedp.Evaluate[float64](`document.documentElement.scrollWidth - document.documentElement.clientWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow > 0 {
		t.Errorf("at 375 px the page is %v px too wide", overflow)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
}

// fmtThousands writes n as the report does: 12,345.
func fmtThousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func TestReportCommandArguments(t *testing.T) {
	data := t.TempDir()
	noEnv := func(string) string { return "" }
	runReport := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"report"}, args...), &stdout, &stderr, noEnv)
		return code, stdout.String(), stderr.String()
	}
	// No log there: an error, and no database is created.
	if code, _, stderr := runReport("--data-dir", data, "--out", filepath.Join(data, "r.html")); code != 1 || !strings.Contains(stderr, "no prediction log at") {
		t.Errorf("without a log: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(data, "predictions.db")); err == nil {
		t.Error("the report command created a prediction log")
	}
	if code, _, _ := runReport("extra"); code != 2 {
		t.Errorf("an extra argument: exit %d, want 2", code)
	}
	if code, _, stderr := runReport("-h"); code != 0 || !strings.Contains(stderr, "FASTINFER_SINCE") {
		t.Errorf("-h: exit %d, %q", code, stderr)
	}

	// An empty period is a page that says so, not an error; a time range
	// and --out - work.
	l, err := predlog.Open(context.Background(), "sqlite:"+filepath.Join(data, "predictions.db"), predlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Add(predlog.Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), RequestID: "x", Model: "m", Version: 2,
		TopK: []predlog.Class{{Index: 1, Label: "<b>one</b>", Score: 0.9}}, Latency: predlog.Latency{TotalMs: 4}})
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"--since", "is not before", "--until", "--prediction-log off", "--models"}
	for i, args := range [][]string{
		{"--since", "yesterday"},
		{"--since", "1h", "--until", "2h"},
		{"--until", "-5m"},
		{"--prediction-log", "off"},
		{"--models", filepath.Join(data, "no-such-repo")},
	} {
		if code, _, stderr := runReport(append(args, "--data-dir", data)...); code != 1 || !strings.Contains(stderr, want[i]) {
			t.Errorf("%q: exit %d, %q", args, code, stderr)
		}
	}
	code, stdout, _ := runReport("--data-dir", data, "--models", t.TempDir(), "--since", "2h", "--out", filepath.Join(data, "empty.html"))
	page, _ := os.ReadFile(filepath.Join(data, "empty.html"))
	if code != 0 || !strings.Contains(stdout, "no predictions") || !bytes.Contains(page, []byte("No predictions")) {
		t.Errorf("empty period: exit %d, %q", code, stdout)
	}
	code, stdout, stderr := runReport("--data-dir", data, "--since", "2026-01-02", "--until", "2026-01-03T00:00:00Z", "--model", "m", "--out", "-")
	if code != 0 || !strings.Contains(stdout, "m <span class=\"muted\">version 2</span>") || !strings.Contains(stdout, "&lt;b&gt;one&lt;/b&gt;") ||
		!strings.Contains(stderr, "1 predictions in 1 requests") {
		t.Errorf("one day to stdout: exit %d, stderr %q", code, stderr)
	}
}

// The server writes a report of each period into DATA-DIR/reports and
// serves them at /reports/.
func TestServeWritesPeriodicReports(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	data := t.TempDir()
	base, logs, stop := startServe(t, fashionRepo(t), "--data-dir", data, "--report-every", "1s")
	img, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	nameRE := regexp.MustCompile(`href="(report-[0-9]{8}-[0-9]{6}\.html)"`)
	deadline := time.Now().Add(20 * time.Second)
	for found := false; !found; {
		if time.Now().After(deadline) {
			t.Fatalf("no served report holds the predictions\nlogs:\n%s", logs)
		}
		resp, err := http.Post(base+"/v1/models/fashion-resnet/classify", "image/png", bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		time.Sleep(300 * time.Millisecond)
		code, _, index := get("/reports/")
		if code != 200 {
			t.Fatalf("GET /reports/: %d %s", code, index)
		}
		for _, m := range nameRE.FindAllStringSubmatch(index, -1) {
			code, ct, page := get("/reports/" + m[1])
			if code != 200 || ct != "text/html; charset=utf-8" {
				t.Fatalf("GET /reports/%s: %d %s", m[1], code, ct)
			}
			if strings.Contains(page, "fashion-resnet <span") && strings.Contains(page, "<svg") && strings.Contains(page, "<h3>Drift</h3>") {
				found = true
				break
			}
		}
	}
	if code, _, _ := get("/reports/../predictions.db"); code != 404 {
		t.Errorf("GET /reports/../predictions.db: %d", code)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "report written") {
		t.Errorf("no report logged:\n%s", logs)
	}
}
