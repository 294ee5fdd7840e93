package drift

import (
	"cmp"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"time"
)

// maxClassBars bounds the class chart; with more classes it shows those
// whose frequency changed most.
const maxClassBars = 40

// histBins is the number of equal-width bins of the feature histograms.
const histBins = 30

// Chart geometry, in SVG user units.
const (
	chartH   = 220.0
	padLeft  = 48.0
	padRight = 28.0 // room for the last x label
	padTop   = 12.0
)

type svgRect struct{ X, Y, W, H float64 }

type svgText struct {
	X, Y   float64
	Text   string
	Anchor string // start | middle | end
	Rotate bool   // -45°, for long class labels
}

type svgLine struct{ X1, Y1, X2, Y2 float64 }

type chart struct {
	Title    string
	Note     string
	W, H     float64
	RefBars  []svgRect
	LiveBars []svgRect
	LivePath string // step line, for histograms
	Grid     []svgLine
	Labels   []svgText
}

type htmlTest struct {
	Name, Statistic, PValue, Threshold string
	Drift                              bool
}

type htmlPage struct {
	Report   Report
	Time     string
	Source   string
	RefCount int
	Created  string
	Tests    []htmlTest
	Charts   []chart
}

var pageTmpl = template.Must(template.New("drift").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>Drift: {{.Report.Model}} v{{.Report.Version}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.drift td { background: #fde2e2; }
.status { font-weight: bold; padding: 6px 10px; display: inline-block; }
.status.bad { background: #fde2e2; color: #900; }
.status.ok { background: #e2f5e2; color: #060; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
.ref { fill: #9aa7b8; }
.live { fill: #e8772e; }
.grid { stroke: #ddd; }
.step { fill: none; stroke: #e8772e; stroke-width: 2; }
svg text { font-size: 11px; fill: #444; }
figure { margin: 1.5em 0; }
</style>
</head>
<body>
<h1>Drift report: {{.Report.Model}} version {{.Report.Version}}</h1>
<p class="status {{if .Report.Drift}}bad{{else}}ok{{end}}">{{.Report.Reason}}</p>
<p>Window: {{.Report.Window}} observations (alarms need {{.Report.MinSamples}}); {{.Report.Seen}} seen. Checked {{.Time}}.<br/>
Reference: {{.Source}}, {{.RefCount}} observations{{if .Created}}, built {{.Created}}{{end}}.</p>
<table>
<thead><tr><th>Test</th><th>Statistic</th><th>p-value</th><th>Threshold</th><th>Drift</th></tr></thead>
<tbody>
{{- range .Tests}}
<tr class="test{{if .Drift}} drift{{end}}"><td>{{.Name}}</td><td>{{.Statistic}}</td><td>{{.PValue}}</td><td>{{.Threshold}}</td><td>{{if .Drift}}yes{{else}}no{{end}}</td></tr>
{{- end}}
</tbody>
</table>
<p class="legend"><span style="background:#9aa7b8"></span>reference<span style="background:#e8772e"></span>live</p>
{{- range .Charts}}
<figure>
<figcaption><strong>{{.Title}}</strong>{{if .Note}} ({{.Note}}){{end}}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" width="{{printf "%.0f" .W}}" height="{{printf "%.0f" .H}}" viewBox="0 0 {{printf "%.0f" .W}} {{printf "%.0f" .H}}" role="img">
<title>{{.Title}}</title>
{{- range .Grid}}
<line class="grid" x1="{{printf "%.1f" .X1}}" y1="{{printf "%.1f" .Y1}}" x2="{{printf "%.1f" .X2}}" y2="{{printf "%.1f" .Y2}}"/>
{{- end}}
{{- range .RefBars}}
<rect class="ref" x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="{{printf "%.1f" .H}}"/>
{{- end}}
{{- range .LiveBars}}
<rect class="live" x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="{{printf "%.1f" .H}}"/>
{{- end}}
{{- if .LivePath}}
<path class="step" d="{{.LivePath}}"/>
{{- end}}
{{- range .Labels}}
<text x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" text-anchor="{{.Anchor}}"{{if .Rotate}} transform="rotate(-45 {{printf "%.1f" .X}} {{printf "%.1f" .Y}})"{{end}}>{{.Text}}</text>
{{- end}}
</svg>
</figure>
{{- end}}
</body>
</html>
`))

// WriteHTML writes r as a self-contained HTML page: no scripts, no external
// resources, charts as inline SVG. p supplies class labels and reference
// details and may be nil.
func WriteHTML(w io.Writer, r Report, p *Profile) error {
	page := htmlPage{Report: r, Time: r.Time.UTC().Format(time.RFC3339)}
	var classes []string
	if p != nil {
		classes = p.Classes
		page.Source, page.RefCount = p.Source, p.Count
		if !p.Created.IsZero() {
			page.Created = p.Created.UTC().Format(time.RFC3339)
		}
	}
	for _, t := range r.Tests {
		page.Tests = append(page.Tests, htmlTest{
			Name: t.Name, Statistic: FormatNumber(t.Statistic), PValue: FormatP(t.PValue),
			Threshold: FormatNumber(t.Threshold), Drift: t.Drift,
		})
	}
	if c, ok := classChart(r.Reference.ClassFreq, r.Live.ClassFreq, classes); ok {
		page.Charts = append(page.Charts, c)
	}
	for _, name := range featureNames {
		if c, ok := histChart(name, r.Reference.Features[name], r.Live.Features[name]); ok {
			page.Charts = append(page.Charts, c)
		}
	}
	return pageTmpl.Execute(w, page)
}

// FormatNumber shows a test statistic: 4 significant digits, "—" for NaN.
func FormatNumber(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// FormatP shows a p-value: fixed down to 1e-3, then exponent form.
func FormatP(p float64) string {
	switch {
	case math.IsNaN(p):
		return "—"
	case p == 0:
		return "< 1e-300" // underflow
	case p < 1e-3:
		return strconv.FormatFloat(p, 'e', 2, 64)
	default:
		return strconv.FormatFloat(p, 'f', 4, 64)
	}
}

// yAxis adds horizontal grid lines and their labels for proportions up to
// top (a niceCeil value, so fifths of it are round), returning the scale
// from proportion to pixels.
func yAxis(c *chart, top, plotW float64) func(float64) float64 {
	plotH := chartH - padTop
	for i := range 6 {
		f := float64(i) / 5
		y := padTop + plotH*(1-f)
		c.Grid = append(c.Grid, svgLine{padLeft, y, padLeft + plotW, y})
		c.Labels = append(c.Labels, svgText{X: padLeft - 4, Y: y + 4, Text: strconv.FormatFloat(top*f, 'g', 3, 64), Anchor: "end"})
	}
	return func(v float64) float64 { return plotH * v / top }
}

// NiceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func NiceCeil(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 0) {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*e >= v*(1-1e-12) {
			return m * e
		}
	}
	return 10 * e
}

func at(v []float64, i int) float64 {
	if i < len(v) {
		return v[i]
	}
	return 0
}

// classChart draws grouped reference/live bars per class.
func classChart(ref, live []float64, labels []string) (chart, bool) {
	k := max(len(ref), len(live))
	if k == 0 {
		return chart{}, false
	}
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	c := chart{Title: "Top-1 class frequency"}
	if k > maxClassBars {
		slices.SortStableFunc(idx, func(a, b int) int {
			return cmp.Compare(math.Abs(at(live, b)-at(ref, b)), math.Abs(at(live, a)-at(ref, a)))
		})
		idx = idx[:maxClassBars]
		slices.Sort(idx)
		c.Note = fmt.Sprintf("the %d of %d classes that changed most", maxClassBars, k)
	}
	top := 0.0
	for _, i := range idx {
		top = max(top, at(ref, i), at(live, i))
	}
	top = NiceCeil(top)

	const groupW, barW, labelH = 28.0, 11.0, 110.0
	plotW := groupW * float64(len(idx))
	c.W, c.H = padLeft+plotW+padRight, chartH+labelH
	scale := yAxis(&c, top, plotW)
	for j, i := range idx {
		x := padLeft + groupW*float64(j) + 3
		hr, hl := scale(at(ref, i)), scale(at(live, i))
		c.RefBars = append(c.RefBars, svgRect{x, chartH - hr, barW, hr})
		c.LiveBars = append(c.LiveBars, svgRect{x + barW, chartH - hl, barW, hl})
		c.Labels = append(c.Labels, svgText{X: x + barW, Y: chartH + 12, Text: classLabel(i, labels, len(ref), len(live)), Anchor: "end", Rotate: true})
	}
	return c, true
}

func classLabel(i int, labels []string, nRef, nLive int) string {
	switch {
	case i < len(labels) && labels[i] != "":
		if r := []rune(labels[i]); len(r) > 20 {
			return string(r[:19]) + "…"
		}
		return labels[i]
	case i == nRef && nLive > nRef:
		return "(other)"
	default:
		return "#" + strconv.Itoa(i)
	}
}

// histChart draws reference bars and a live step line over shared
// equal-width bins spanning both samples; the samples are sorted.
func histChart(name string, ref, live []float64) (chart, bool) {
	if len(ref) == 0 && len(live) == 0 {
		return chart{}, false
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range [][]float64{ref, live} {
		if len(s) > 0 {
			lo, hi = min(lo, s[0]), max(hi, s[len(s)-1])
		}
	}
	if hi <= lo {
		lo, hi = lo-0.5, hi+0.5
	}
	edges := make([]float64, histBins-1)
	for i := range edges {
		edges[i] = lo + (hi-lo)*float64(i+1)/histBins
	}
	hr, hl := Histogram(ref, edges), Histogram(live, edges)
	top := NiceCeil(max(slices.Max(hr), slices.Max(hl)))

	const plotW, axisH = 480.0, 24.0
	c := chart{
		Title: name,
		Note:  fmt.Sprintf("%d reference, %d live values", len(ref), len(live)),
		W:     padLeft + plotW + padRight,
		H:     chartH + axisH,
	}
	scale := yAxis(&c, top, plotW)
	bw := plotW / histBins
	path := fmt.Sprintf("M%.1f %.1f", padLeft, chartH)
	for i := range histBins {
		x := padLeft + bw*float64(i)
		h := scale(hr[i])
		c.RefBars = append(c.RefBars, svgRect{x, chartH - h, bw, h})
		if len(live) > 0 {
			path += fmt.Sprintf(" V%.1f H%.1f", chartH-scale(hl[i]), x+bw)
		}
	}
	if len(live) > 0 {
		c.LivePath = path + fmt.Sprintf(" V%.1f", chartH)
	}
	for _, f := range []float64{0, 0.5, 1} {
		c.Labels = append(c.Labels, svgText{
			X: padLeft + plotW*f, Y: chartH + 16,
			Text: strconv.FormatFloat(lo+(hi-lo)*f, 'g', 4, 64), Anchor: "middle",
		})
	}
	return c, true
}
