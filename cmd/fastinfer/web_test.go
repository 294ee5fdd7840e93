package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which scripts/deps.sh installs.
const chromiumPath = "/usr/bin/chromium"

// The page as a person uses it: a real headless Chromium opens the server's
// page, picks the committed default model, uploads a Fashion-MNIST ankle
// boot, and reads the bars, the latency and the model card off the page.
// FASTINFER_SCREENSHOT names where the full-page screenshot goes (a
// relative path is taken from the repository root, so
// FASTINFER_SCREENSHOT=docs/web.png refreshes the README's picture).
func TestWebPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server and a browser; skipped in -short")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (%v): `make test` installs it (scripts/deps.sh apt, Debian package chromium)", chromiumPath, err)
	}
	img, err := filepath.Abs(filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	if err != nil {
		t.Fatal(err)
	}
	repo := fashionRepo(t)
	base, logs, stop := startServe(t, repo)
	defer stop()

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	// Script errors, failed loads and CSP violations all fail the test.
	var mu sync.Mutex
	var problems []string
	httpErrorsExpected := false
	tab, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			problems = append(problems, "exception: "+msg)
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == "error" {
				problems = append(problems, "console.error")
			}
		case *log.EventEntryAdded:
			if ev.Entry != nil && ev.Entry.Level == log.EntryLevelError &&
				!(httpErrorsExpected && ev.Entry.Source == log.EntrySourceNetwork) {
				problems = append(problems, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}))
	defer cancelTab()

	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, actions...); err != nil {
			t.Fatalf("%s: %v\nserver logs:\n%s", what, err, logs)
		}
	}
	step("open the page",
		chromedp.Navigate(base+"/"),
		chromedp.WaitReady(chromedp.CSS(`#model option[value="fashion-resnet"]`)),
	)
	step("select fashion-resnet",
		chromedp.SetValue(chromedp.ID("model"), "fashion-resnet"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('model').dispatchEvent(new Event('change'))`),
		chromedp.WaitVisible(chromedp.CSS("#confusion table")),
	)
	step("upload the ankle boot",
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{img}),
		chromedp.WaitVisible(chromedp.CSS("#predictions .prediction")),
	)

	type pageState struct {
		Labels      []string `json:"labels"`
		Scores      []string `json:"scores"`
		BarWidth    float64  `json:"barWidth"`
		Timing      string   `json:"timing"`
		Error       string   `json:"error"`
		PreviewW    int      `json:"previewW"`
		PreviewAlt  string   `json:"previewAlt"`
		CardHidden  bool     `json:"cardHidden"`
		CardText    string   `json:"cardText"`
		Cells       int      `json:"cells"`
		Rows        []string `json:"rows"`
		Cols        []string `json:"cols"`
		CellColours int      `json:"cellColours"`
		LossCurve   bool     `json:"lossCurve"`
		TokenShown  bool     `json:"tokenShown"`
	}
	got, err := chromedp.Run(tab, chromedp.Evaluate[pageState](`(() => {
		const all = (s) => [...document.querySelectorAll(s)];
		const err = document.getElementById('error');
		const preview = document.getElementById('preview');
		const card = document.getElementById('card');
		const fill = document.querySelector('#predictions .prediction .fill');
		return {
			labels: all('#predictions .prediction .label').map((e) => e.textContent),
			scores: all('#predictions .prediction .score').map((e) => e.textContent),
			barWidth: fill ? fill.getBoundingClientRect().width : 0,
			timing: document.getElementById('timing').textContent,
			error: err.hidden ? '' : err.textContent,
			previewW: preview.naturalWidth,
			previewAlt: preview.alt,
			cardHidden: card.hidden,
			cardText: card.textContent,
			cells: all('#confusion tbody td:not(.recall)').length,
			rows: all('#confusion tbody th').map((e) => e.textContent),
			cols: all('#confusion thead th[data-class]').map((e) => e.textContent),
			cellColours: new Set(all('#confusion tbody td:not(.recall)').map((e) => getComputedStyle(e).backgroundColor)).size,
			lossCurve: !!document.querySelector('#charts svg polyline'),
			tokenShown: getComputedStyle(document.getElementById('token-field')).display !== 'none',
		};
	})()`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	t.Logf("top 5: %q %q", got.Labels, got.Scores)
	if got.Error != "" {
		t.Errorf("the page shows an error: %s", got.Error)
	}
	if len(got.Labels) != 5 || len(got.Scores) != 5 {
		t.Fatalf("%d predictions and %d scores, want 5", len(got.Labels), len(got.Scores))
	}
	if got.Labels[0] != "Ankle boot" {
		t.Errorf("first prediction %q, want %q", got.Labels[0], "Ankle boot")
	}
	for _, s := range got.Scores {
		if !strings.HasSuffix(s, "%") {
			t.Errorf("score %q is not a percentage", s)
		}
	}
	if got.BarWidth <= 0 {
		t.Errorf("the first bar is %v px wide", got.BarWidth)
	}
	for _, want := range []string{"Preprocess", "Queue", "Inference", "Server total", "Round trip", " ms"} {
		if !strings.Contains(got.Timing, want) {
			t.Errorf("latency %q lacks %q", got.Timing, want)
		}
	}
	if got.PreviewW != 28 || !strings.Contains(got.PreviewAlt, "test-0-ankle-boot.png") {
		t.Errorf("preview: %d px wide, alt %q", got.PreviewW, got.PreviewAlt)
	}
	if got.CardHidden {
		t.Error("the model card is hidden")
	}
	for _, want := range []string{"Fashion-MNIST", "Train", "Validation", "Test"} {
		if !strings.Contains(got.CardText, want) {
			t.Errorf("model card lacks %q", want)
		}
	}
	if got.Cells != 100 || len(got.Rows) != 10 || len(got.Cols) != 10 || got.Rows[9] != "Ankle boot" || got.Cols[9] != "Ankle boot" {
		t.Errorf("confusion matrix: %d cells, rows %q, columns %q", got.Cells, got.Rows, got.Cols)
	}
	if got.CellColours < 5 {
		t.Errorf("confusion matrix cells have %d colours: not a heat map", got.CellColours)
	}
	if !got.LossCurve {
		t.Error("no loss curve")
	}
	if got.TokenShown {
		t.Error("the API token field shows, but this server asks for no token")
	}

	shot, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := os.Getenv("FASTINFER_SCREENSHOT")
	switch {
	case path == "":
		path = filepath.Join(t.TempDir(), "web.png")
	case !filepath.IsAbs(path):
		path = filepath.Join("..", "..", path)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	// An API error is shown as the server gave it, and the old answer goes.
	notImage := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notImage, []byte("not an image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	httpErrorsExpected = true // the browser logs the 415 as a failed load
	mu.Unlock()
	step("upload a text file",
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{notImage}),
		chromedp.WaitVisible(chromedp.ID("error")),
	)
	errText, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("error")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "415") || !strings.Contains(errText, "unsupported_media_type") {
		t.Errorf("error shown: %q; want the 415 and its code", errText)
	}
	left, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#predictions .prediction').length`))
	if err != nil || left != 0 {
		t.Errorf("%d predictions still shown after the error (%v)", left, err)
	}

	// At a phone's width the page fits: no sideways scrolling of the
	// page itself (the confusion matrix scrolls in its own box).
	step("narrow the window", chromedp.EmulateViewport(375, 812))
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
