package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"time"

	"fastinfer/monitor/drift"
)

type page struct {
	Since, Until, Generated, Bucket string
	Model                           string // the report's model filter, "" for all
	Empty                           bool
	Rows                            []summaryRow
	All                             summaryRow
	Versions                        []versionView
}

type summaryRow struct {
	Anchor, Model, Version                string
	Predictions, Requests, Mean, P50, P99 string
	First, Last                           string
	FirstShort, LastShort                 string // to the minute, for the table
	Drift, DriftClass                     string
}

type versionView struct {
	Anchor, Model string
	Version       int
	Row           summaryRow
	Volume        svgChart
	Latency       *svgChart
	Classes       *svgChart
	ClassCount    int
	Unclassified  string
	Confidence    *svgChart
	ConfUnknown   string
	Drift         *driftView
}

type driftView struct {
	Status, Class                   string
	Window, Predictions, MinSamples string
	Source, RefCount, Created       string
	Tests                           []testRow
}

type testRow struct {
	Name, Statistic, PValue, Threshold string
	Drift                              bool
}

// The page is XHTML-compatible (every element closed, attributes quoted,
// no named entities, no "<" or "&" in the style sheet), so it parses as
// XML as well as HTML.
var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en" xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>Prediction report{{if .Model}}: {{.Model}}{{end}}, {{.Since}} to {{.Until}} UTC</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #f6f7f9; }
main { max-width: 1000px; margin: 0 auto; padding: 1.5em 1.2em 3em; }
h1 { font-size: 1.6em; margin: 0 0 0.2em; }
h2 { font-size: 1.3em; margin: 0 0 0.4em; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.3em; }
.muted { color: #59636e; }
section { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 1em 1.2em; margin: 1.2em 0; }
section.empty { text-align: center; padding: 3em 1em; }
section.empty h2 { font-size: 1.6em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e4e8ec; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f2f5; font-weight: 600; }
th.l, td.l { text-align: left; }
tr.all td { font-weight: 600; border-top: 2px solid #c9d1d9; }
tr.drift td { background: #fde2e2; }
.status { font-weight: 600; padding: 4px 10px; border-radius: 4px; display: inline-block; }
.bad { background: #fde2e2; color: #8a1010; }
.ok { background: #e2f5e2; color: #165c16; }
.warn { background: #fff3cd; color: #6b4e00; }
.none { color: #59636e; }
figure { margin: 0.3em 0 0.8em; }
figcaption { color: #59636e; font-size: 0.92em; }
svg { max-width: 100%; height: auto; display: block; }
svg text { font-size: 11px; fill: #444c56; }
.grid { stroke: #e4e8ec; stroke-width: 1; }
.axis { stroke: #8c959f; stroke-width: 1; }
.pred { fill: #9ec5fe; }
.req { fill: #1f6feb; }
.cls { fill: #2da44e; }
.other { fill: #a0a8b0; }
.conf { fill: #8250df; }
path.p50, path.p90, path.p99 { fill: none; stroke-width: 2; }
path.p50 { stroke: #1f6feb; }
path.p90 { stroke: #d4a72c; }
path.p99 { stroke: #cf222e; }
circle.p50 { fill: #1f6feb; }
circle.p90 { fill: #d4a72c; }
circle.p99 { fill: #cf222e; }
.legend span.sw { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 14px; vertical-align: -1px; border-radius: 2px; }
.sw.pred { background: #9ec5fe; }
.sw.req { background: #1f6feb; }
.sw.p50 { background: #1f6feb; }
.sw.p90 { background: #d4a72c; }
.sw.p99 { background: #cf222e; }
footer { color: #8c959f; font-size: 0.85em; text-align: center; }
</style>
</head>
<body>
<main>
<header>
<h1>Prediction report{{if .Model}}: {{.Model}}{{end}}</h1>
<p class="muted" id="period">{{.Since}} to {{.Until}} UTC · {{.Bucket}} buckets · generated {{.Generated}} UTC</p>
</header>
{{- if .Empty}}
<section class="empty" id="empty">
<h2>No predictions</h2>
<p>No predictions were logged {{if .Model}}for model {{.Model}} {{end}}between {{.Since}} and {{.Until}} UTC.</p>
</section>
{{- else}}
<section id="summary">
<h2>Summary</h2>
<div class="scroll">
<table>
<thead><tr><th class="l">Model version</th><th>Predictions</th><th>Requests</th><th>Mean</th><th>p50</th><th>p99</th><th class="l">First</th><th class="l">Last</th><th class="l">Drift</th></tr></thead>
<tbody>
{{- range .Rows}}
<tr><td class="l"><a href="#{{.Anchor}}">{{.Model}} v{{.Version}}</a></td><td>{{.Predictions}}</td><td>{{.Requests}}</td><td>{{.Mean}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td class="l">{{.FirstShort}}</td><td class="l">{{.LastShort}}</td><td class="l"><span class="{{.DriftClass}}">{{.Drift}}</span></td></tr>
{{- end}}
{{- with .All}}
<tr class="all"><td class="l">All</td><td>{{.Predictions}}</td><td>{{.Requests}}</td><td>{{.Mean}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td class="l">{{.FirstShort}}</td><td class="l">{{.LastShort}}</td><td></td></tr>
{{- end}}
</tbody>
</table>
</div>
<p class="muted">Latency is the server's total time per image. A request may carry several images: each is one prediction.</p>
</section>
{{- range .Versions}}
<section class="version" id="{{.Anchor}}">
<h2>{{.Model}} <span class="muted">version {{.Version}}</span></h2>
{{- with .Row}}
<p>{{.Predictions}} predictions in {{.Requests}} requests, {{.First}} to {{.Last}} UTC. Latency mean {{.Mean}}, p50 {{.P50}}, p99 {{.P99}}.</p>
{{- end}}
<h3>Volume</h3>
<figure>
{{template "chart" .Volume}}
<figcaption class="legend"><span class="sw pred"></span>predictions (images)<span class="sw req"></span>requests</figcaption>
</figure>
<h3>Latency</h3>
{{- if .Latency}}
<figure>
{{template "chart" .Latency}}
<figcaption class="legend"><span class="sw p50"></span>p50<span class="sw p90"></span>p90<span class="sw p99"></span>p99</figcaption>
</figure>
{{- else}}
<p class="none">No prediction of this version has a latency.</p>
{{- end}}
<h3>Class mix</h3>
{{- if .Classes}}
<figure>
{{template "chart" .Classes}}
<figcaption>Top-1 class of each prediction: count and share; {{.ClassCount}} classes seen{{if .Unclassified}}, {{.Unclassified}} predictions without a class{{end}}.</figcaption>
</figure>
{{- else}}
<p class="none">No prediction of this version has a class.</p>
{{- end}}
<h3>Confidence</h3>
{{- if .Confidence}}
<figure>
{{template "chart" .Confidence}}
<figcaption>Top-1 score, 10 bins{{if .ConfUnknown}}; {{.ConfUnknown}} predictions without a score{{end}}.</figcaption>
</figure>
{{- else}}
<p class="none">No prediction of this version has a score.</p>
{{- end}}
{{- with .Drift}}
<h3>Drift</h3>
<div class="drift">
<p><span class="status {{.Class}}">{{.Status}}</span></p>
<p class="muted">The latest {{.Window}} of the period's {{.Predictions}} predictions against the reference profile ({{.Source}}, {{.RefCount}} observations{{if .Created}}, built {{.Created}}{{end}}); alarms need {{.MinSamples}}.</p>
<div class="scroll">
<table>
<thead><tr><th class="l">Test</th><th>Statistic</th><th>p-value</th><th>Threshold</th><th>Drift</th></tr></thead>
<tbody>
{{- range .Tests}}
<tr class="test{{if .Drift}} drift{{end}}"><td class="l">{{.Name}}</td><td>{{.Statistic}}</td><td>{{.PValue}}</td><td>{{.Threshold}}</td><td>{{if .Drift}}yes{{else}}no{{end}}</td></tr>
{{- end}}
</tbody>
</table>
</div>
</div>
{{- end}}
</section>
{{- end}}
{{- end}}
<footer>fastinfer prediction report</footer>
</main>
</body>
</html>
{{define "chart" -}}
<svg xmlns="http://www.w3.org/2000/svg" width="{{printf "%.0f" .W}}" height="{{printf "%.0f" .H}}" viewBox="0 0 {{printf "%.0f" .W}} {{printf "%.0f" .H}}" role="img">
<title>{{.Title}}</title>
{{- range .Grid}}
<line class="{{.Class}}" x1="{{printf "%.1f" .X1}}" y1="{{printf "%.1f" .Y1}}" x2="{{printf "%.1f" .X2}}" y2="{{printf "%.1f" .Y2}}"/>
{{- end}}
{{- range .Rects}}
<rect class="{{.Class}}" x="{{printf "%.2f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.2f" .W}}" height="{{printf "%.1f" .H}}">{{if .Tip}}<title>{{.Tip}}</title>{{end}}</rect>
{{- end}}
{{- range .Paths}}
<path class="{{.Class}}" d="{{.D}}"/>
{{- end}}
{{- range .Dots}}
<circle class="{{.Class}}" cx="{{printf "%.1f" .X}}" cy="{{printf "%.1f" .Y}}" r="2.5">{{if .Tip}}<title>{{.Tip}}</title>{{end}}</circle>
{{- end}}
{{- range .Texts}}
<text x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" text-anchor="{{.Anchor}}">{{.Text}}</text>
{{- end}}
</svg>
{{- end}}
`))

// WriteHTML writes r as a self-contained HTML page (also well-formed
// XML): inline CSS and SVG, no scripts, nothing fetched from elsewhere,
// every name and label escaped. A report without predictions gives a page
// that says so.
func WriteHTML(w io.Writer, r *Report) error {
	p := page{
		Since: fmtTime(r.Since), Until: fmtTime(r.Until), Generated: fmtTime(r.Generated),
		Bucket: fmtDuration(r.Bucket), Model: r.Model, Empty: r.Empty(),
	}
	p.All = row(r.Totals)
	for i, v := range r.Versions {
		vv := versionView{Anchor: "version-" + strconv.Itoa(i+1), Model: v.Model, Version: v.Version, Row: row(v.Totals)}
		vv.Row.Anchor, vv.Row.Model, vv.Row.Version = vv.Anchor, v.Model, strconv.Itoa(v.Version)
		vv.Row.Drift, vv.Row.DriftClass = "no profile", "none"
		vv.Volume = volumeChart(v, r)
		if c, ok := latencyChart(v, r); ok {
			vv.Latency = &c
		}
		if c, ok := classChart(v); ok {
			vv.Classes = &c
		}
		vv.ClassCount = len(v.Classes)
		if v.Unclassified > 0 {
			vv.Unclassified = fmtInt(v.Unclassified)
		}
		if c, ok := confidenceChart(v); ok {
			vv.Confidence = &c
		}
		if v.ConfidenceUnknown > 0 {
			vv.ConfUnknown = fmtInt(v.ConfidenceUnknown)
		}
		if d := v.Drift; d != nil {
			dv := &driftView{
				Status: d.Reason, Class: "ok",
				Window: fmtInt(d.Window), Predictions: fmtInt(v.Totals.Predictions), MinSamples: fmtInt(d.MinSamples),
			}
			switch {
			case d.Drift:
				dv.Class, vv.Row.Drift = "bad", "drift"
			case d.Window < d.MinSamples:
				dv.Class, vv.Row.Drift = "warn", "too few"
			default:
				vv.Row.Drift = "no drift"
			}
			vv.Row.DriftClass = dv.Class
			if pr := v.Profile; pr != nil {
				dv.Source, dv.RefCount = pr.Source, fmtInt(pr.Count)
				if !pr.Created.IsZero() {
					dv.Created = fmtTime(pr.Created)
				}
			}
			for _, t := range d.Tests {
				dv.Tests = append(dv.Tests, testRow{
					Name: t.Name, Statistic: drift.FormatNumber(t.Statistic), PValue: drift.FormatP(t.PValue),
					Threshold: drift.FormatNumber(t.Threshold), Drift: t.Drift,
				})
			}
			vv.Drift = dv
		}
		p.Rows = append(p.Rows, vv.Row)
		p.Versions = append(p.Versions, vv)
	}
	return pageTmpl.Execute(w, p)
}

func row(t Totals) summaryRow {
	return summaryRow{
		Predictions: fmtInt(t.Predictions), Requests: fmtInt(t.Requests),
		Mean: fmtMs(t.MeanMs), P50: fmtMs(t.P50Ms), P99: fmtMs(t.P99Ms),
		First: fmtTime(t.First), Last: fmtTime(t.Last),
		FirstShort: fmtMinute(t.First), LastShort: fmtMinute(t.Last),
	}
}

func fmtMinute(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// fmtDuration writes bucket widths as people say them.
func fmtDuration(d time.Duration) string {
	switch {
	case d == 24*time.Hour:
		return "day"
	case d == time.Hour:
		return "hour"
	case d == time.Minute:
		return "minute"
	case d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + " min"
	}
	return d.String()
}

// fmtInt groups thousands: 12,345.
func fmtInt(n int) string {
	s := strconv.Itoa(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func fmtMs(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	default:
		return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
	}
}

func fmtPct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }
