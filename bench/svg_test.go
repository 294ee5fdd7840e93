package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
)

// svgElements walks every token of an SVG document and counts start
// elements by name (polylines by their class), failing on bad XML.
func svgElements(t *testing.T, doc []byte) map[string]int {
	t.Helper()
	counts := map[string]int{}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("invalid XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
				if se.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace %q", se.Name.Space)
				}
			}
			name := se.Name.Local
			if name == "polyline" {
				for _, a := range se.Attr {
					if a.Name.Local == "class" {
						name += "." + a.Value
					}
				}
			}
			counts[name]++
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return counts
}

func sweep(target, model, mode string, batch int, ips ...float64) []Step {
	var steps []Step
	for i, x := range ips {
		s := Step{Target: target, Model: model, Mode: mode, BatchSize: batch, ImagesPerSec: x,
			Latency: Latency{P50: float64(i + 1), P99: float64(2*i + 3)}}
		if mode == ModeRate {
			s.Rate, s.Arrivals = x, "poisson"
		} else {
			s.Concurrency = 1 << i
		}
		steps = append(steps, s)
	}
	return steps
}

func TestWriteSVG(t *testing.T) {
	meta := Meta{Device: "NVIDIA H100 <SXM>", CPUModel: "AMD EPYC & co", Cores: 16}
	tests := []struct {
		name       string
		r          *Results
		series     int
		contains   []string
		notContain []string
	}{
		{"empty", &Results{}, 0, []string{"no data", "fastinfer bench"}, []string{"<polyline"}},
		{"all non-finite is empty", &Results{Steps: []Step{{ImagesPerSec: math.NaN()}}}, 0, []string{"no data"}, []string{"NaN"}},
		{"single point", &Results{Meta: meta, Steps: sweep(TargetRaw, "m", ModeConcurrency, 1, 250)}, 1,
			[]string{"<circle", "images/s", "latency (ms)", "raw/m concurrency b=1"}, []string{"no data"}},
		{"zero throughput point", &Results{Steps: sweep(TargetRaw, "m", ModeConcurrency, 1, 0)}, 1, nil, []string{"NaN", "Inf"}},
		{"series split by target, mode and batch",
			&Results{Meta: meta, Steps: slices.Concat(
				sweep(TargetHTTPImage, "resnet50", ModeConcurrency, 1, 100, 200, 300),
				sweep(TargetHTTPImage, "resnet50", ModeRate, 1, 50, 150),
				sweep(TargetHTTPImage, "resnet50", ModeConcurrency, 8, 400, 800),
				sweep(TargetRaw, "resnet50", ModeConcurrency, 1, 500, 900),
			)}, 4,
			[]string{"http-image/resnet50 rate b=1", "http-image/resnet50 concurrency b=8",
				"NVIDIA H100 &lt;SXM&gt;", "AMD EPYC &amp; co (16 cores)"},
			[]string{"<SXM>"}},
		{"model name escaped", &Results{Steps: sweep(TargetRaw, "a<b&c", ModeConcurrency, 1, 10, 20)}, 1,
			[]string{"raw/a&lt;b&amp;c"}, []string{"a<b&c"}},
		{"no external resources", &Results{Meta: meta, Steps: sweep(TargetRaw, "m", ModeConcurrency, 1, 10, 20)}, 1,
			nil, []string{"<script", "href", "@import", "url(", "http://", "https://"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteSVG(&buf, tt.r); err != nil {
				t.Fatal(err)
			}
			counts := svgElements(t, buf.Bytes())
			if counts["polyline.p50"] != tt.series || counts["polyline.p99"] != tt.series || counts["polyline"] != 0 {
				t.Errorf("polylines %v, want %d p50 and %d p99", counts, tt.series, tt.series)
			}
			// The namespace URI is the only URL an SVG needs.
			out := strings.Replace(buf.String(), `xmlns="http://www.w3.org/2000/svg"`, "", 1)
			for _, s := range tt.contains {
				if !strings.Contains(out, s) {
					t.Errorf("SVG lacks %q", s)
				}
			}
			for _, s := range tt.notContain {
				if strings.Contains(out, s) {
					t.Errorf("SVG has %q", s)
				}
			}
		})
	}
}

// TestWriteSVGPointOrder checks points stay in sweep order (a sweep
// that saturates and falls back is drawn as measured, not sorted).
func TestWriteSVGPointOrder(t *testing.T) {
	r := &Results{Steps: sweep(TargetRaw, "m", ModeConcurrency, 1, 300, 100, 200)}
	var buf bytes.Buffer
	if err := WriteSVG(&buf, r); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal("no p50 polyline found")
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "polyline" {
			continue
		}
		var pts string
		for _, a := range se.Attr {
			if a.Name.Local == "points" {
				pts = a.Value
			}
		}
		var xs []float64
		for p := range strings.FieldsSeq(pts) {
			var x, y float64
			if _, err := fmt.Sscanf(p, "%g,%g", &x, &y); err != nil {
				t.Fatalf("point %q: %v", p, err)
			}
			xs = append(xs, x)
		}
		if len(xs) != 3 || !(xs[0] > xs[2] && xs[2] > xs[1]) {
			t.Errorf("x coordinates %v not in sweep order 300, 100, 200", xs)
		}
		return
	}
}

func TestNiceStep(t *testing.T) {
	tests := []struct {
		span float64
		n    int
		want float64
	}{
		{100, 5, 20},
		{100, 10, 10},
		{100, 6, 20},
		{1, 5, 0.2},
		{1, 4, 0.5},
		{0.03, 6, 0.005},
		{7, 6, 2},
		{1234, 6, 500},
		{999, 5, 200},
		{2000, 10, 200},
		{5, 1, 5},
		{6, 1, 10},
		{0, 5, 1},
		{-3, 5, 1},
		{math.NaN(), 5, 1},
		{math.Inf(1), 5, 1},
		{10, 0, 1},
	}
	for _, tt := range tests {
		got := niceStep(tt.span, tt.n)
		if math.Abs(got-tt.want) > 1e-12*math.Max(1, tt.want) {
			t.Errorf("niceStep(%g, %d) = %g, want %g", tt.span, tt.n, got, tt.want)
		}
	}
}

func TestNiceAxis(t *testing.T) {
	tests := []struct {
		hi     float64
		labels string
	}{
		{100, "0 20 40 60 80 100"},
		{95, "0 20 40 60 80 100"},
		{101, "0 20 40 60 80 100 120"},
		{1, "0.0 0.2 0.4 0.6 0.8 1.0"},
		{0.3, "0.00 0.05 0.10 0.15 0.20 0.25 0.30"},
		{7, "0 2 4 6 8"},
		{2500, "0 500 1000 1500 2000 2500"},
		{0, "0.0 0.2 0.4 0.6 0.8 1.0"},
	}
	for _, tt := range tests {
		ticks, step := niceAxis(tt.hi, 6)
		var labels []string
		for _, v := range ticks {
			labels = append(labels, tickLabel(v, step))
		}
		if got := strings.Join(labels, " "); got != tt.labels {
			t.Errorf("niceAxis(%g) = %s, want %s", tt.hi, got, tt.labels)
		}
	}
}
