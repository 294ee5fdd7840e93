package bench

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Plot geometry, in SVG user units. The legend sits right of the plot
// so any number of series fits by growing the height.
const (
	svgWidth     = 1040
	svgMinHeight = 480
	plotLeft     = 70
	plotTop      = 50
	plotWidth    = 600
	plotHeight   = 360
	legendLeft   = plotLeft + plotWidth + 30
	legendRow    = 18
	maxTicks     = 8
)

// svgPalette is Tableau 10: distinguishable and colour-blind tolerable.
var svgPalette = []string{
	"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
	"#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
}

// svgSeries is the steps of one sweep: same target, model, mode and
// batch size, in the order they were measured.
type svgSeries struct {
	name   string
	points []Step
}

func seriesOf(steps []Step) []svgSeries {
	type key struct {
		target, model, mode string
		batch               int
	}
	index := map[key]int{}
	var out []svgSeries
	for _, s := range steps {
		if !finite(s.ImagesPerSec) || !finite(s.Latency.P50) || !finite(s.Latency.P99) {
			continue // a NaN coordinate would make the whole line vanish
		}
		k := key{s.Target, s.Model, s.Mode, s.BatchSize}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, svgSeries{name: fmt.Sprintf("%s/%s %s b=%d", s.Target, s.Model, s.Mode, s.BatchSize)})
		}
		out[i].points = append(out[i].points, s)
	}
	return out
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// WriteSVG plots latency p50 (solid) and p99 (dashed) against images/s,
// one colour a series. The SVG is self-contained: no scripts, external
// fonts or stylesheets.
func WriteSVG(w io.Writer, r *Results) error {
	series := seriesOf(r.Steps)
	height := max(svgMinHeight, plotTop+40+legendRow*(len(series)+3))
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">
`, svgWidth, height, svgWidth, height)
	title := svgTitle(r.Meta)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(title))
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgWidth, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", plotLeft, esc(title))

	if len(series) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#666">no data</text>`+"\n",
			plotLeft+plotWidth/2, plotTop+plotHeight/2)
		b.WriteString("</svg>\n")
		_, err := io.WriteString(w, b.String())
		return err
	}

	var xMax, yMax float64
	for _, s := range series {
		for _, p := range s.points {
			xMax = max(xMax, p.ImagesPerSec)
			yMax = max(yMax, p.Latency.P50, p.Latency.P99)
		}
	}
	xTicks, xStep := niceAxis(xMax, maxTicks)
	yTicks, yStep := niceAxis(yMax, maxTicks)
	xTop, yTop := xTicks[len(xTicks)-1], yTicks[len(yTicks)-1]
	px := func(v float64) float64 { return plotLeft + v/xTop*plotWidth }
	py := func(v float64) float64 { return plotTop + plotHeight - v/yTop*plotHeight }

	// Grid, ticks and labels.
	b.WriteString(`<g stroke="#e0e0e0">` + "\n")
	for _, t := range xTicks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", px(t), plotTop, px(t), plotTop+plotHeight)
	}
	for _, t := range yTicks {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`+"\n", plotLeft, py(t), plotLeft+plotWidth, py(t))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(&b, `<g stroke="black"><line x1="%d" y1="%d" x2="%d" y2="%d"/><line x1="%d" y1="%d" x2="%d" y2="%d"/></g>`+"\n",
		plotLeft, plotTop+plotHeight, plotLeft+plotWidth, plotTop+plotHeight,
		plotLeft, plotTop, plotLeft, plotTop+plotHeight)
	for _, t := range xTicks {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(t), plotTop+plotHeight+16, tickLabel(t, xStep))
	}
	for _, t := range yTicks {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", plotLeft-6, py(t)+4, tickLabel(t, yStep))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">images/s</text>`+"\n", plotLeft+plotWidth/2, plotTop+plotHeight+40)
	fmt.Fprintf(&b, `<text x="20" y="%d" text-anchor="middle" transform="rotate(-90 20 %d)">latency (ms)</text>`+"\n",
		plotTop+plotHeight/2, plotTop+plotHeight/2)

	// One polyline per series and percentile; markers keep a
	// single-point series visible.
	for i, s := range series {
		color := svgPalette[i%len(svgPalette)]
		for _, pct := range []struct {
			class, dash string
			v           func(Step) float64
		}{
			{"p50", "", func(s Step) float64 { return s.Latency.P50 }},
			{"p99", ` stroke-dasharray="6 4"`, func(s Step) float64 { return s.Latency.P99 }},
		} {
			var pts []string
			for _, p := range s.points {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.ImagesPerSec), py(pct.v(p))))
			}
			fmt.Fprintf(&b, `<polyline class="%s" fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>%s %s</title></polyline>`+"\n",
				pct.class, color, pct.dash, strings.Join(pts, " "), esc(s.name), pct.class)
			for _, p := range s.points {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p.ImagesPerSec), py(pct.v(p)), color)
			}
		}
	}

	// Legend.
	y := plotTop
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-width="2"/><text x="%d" y="%d">p50</text>`+"\n",
		legendLeft, y, legendLeft+24, y, legendLeft+30, y+4)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-width="2" stroke-dasharray="6 4"/><text x="%d" y="%d">p99</text>`+"\n",
		legendLeft+70, y, legendLeft+94, y, legendLeft+100, y+4)
	for i, s := range series {
		y = plotTop + legendRow*(i+2)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="24" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			legendLeft, y-5, svgPalette[i%len(svgPalette)], legendLeft+30, y+4, esc(s.name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// svgTitle names the machine from whatever Meta has.
func svgTitle(m Meta) string {
	var parts []string
	if m.Device != "" {
		parts = append(parts, m.Device)
	}
	if m.CPUModel != "" {
		cpu := m.CPUModel
		if m.Cores > 0 {
			cpu += fmt.Sprintf(" (%d cores)", m.Cores)
		}
		parts = append(parts, cpu)
	}
	if len(parts) == 0 {
		return "fastinfer bench"
	}
	return "fastinfer bench: " + strings.Join(parts, ", ")
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// niceStep is the 1, 2 or 5 × 10^k step that cuts span into at most n
// intervals with as few wasted as possible.
func niceStep(span float64, n int) float64 {
	if !(span > 0) || math.IsInf(span, 0) || n < 1 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	// The slack keeps a raw step that is already nice (2 × 10^k computed
	// as 1.9999…) from being rounded up to the next one.
	switch norm := raw / mag; {
	case norm <= 1+1e-9:
		return mag
	case norm <= 2+1e-9:
		return 2 * mag
	case norm <= 5+1e-9:
		return 5 * mag
	default:
		return 10 * mag
	}
}

// niceAxis returns ticks from 0 to the first multiple of a nice step at
// or above hi (hi ≤ 0 plots as 0…1), and the step.
func niceAxis(hi float64, n int) (ticks []float64, step float64) {
	if !(hi > 0) || math.IsInf(hi, 0) {
		hi = 1
	}
	step = niceStep(hi, n)
	count := int(math.Ceil(hi/step - 1e-9))
	for i := 0; i <= count; i++ {
		ticks = append(ticks, float64(i)*step)
	}
	return ticks, step
}

// tickLabel prints v with as many decimals as the step needs, so 0.1
// steps read 0.3, not 0.30000000000000004.
func tickLabel(v, step float64) string {
	decimals := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	return strconv.FormatFloat(v, 'f', decimals, 64)
}
