package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"fastinfer/monitor/drift"
)

// Chart geometry, in SVG user units. Charts scale down to the page width
// (CSS max-width) and keep their aspect.
const (
	chartW   = 760.0
	padLeft  = 60.0
	padRight = 20.0
	padTop   = 12.0
	plotH    = 180.0
	axisH    = 30.0 // x labels under the plot
	plotW    = chartW - padLeft - padRight
	baseY    = padTop + plotH // the x axis

	maxClassRows = 15 // class bars; the rest are pooled into one
	classRowH    = 22.0
	classLabelW  = 180.0
	classBarW    = 440.0
)

// svgChart is one inline SVG figure; every string is escaped by the
// template.
type svgChart struct {
	Title string // the accessible name (<title>)
	W, H  float64
	Grid  []svgLine
	Rects []svgRect
	Paths []svgPath
	Dots  []svgDot
	Texts []svgText
}

type svgLine struct {
	X1, Y1, X2, Y2 float64
	Class          string
}

type svgRect struct {
	X, Y, W, H float64
	Class, Tip string // Tip: a tooltip (<title>), may be empty
}

type svgPath struct{ D, Class string }

type svgDot struct {
	X, Y       float64
	Class, Tip string
}

type svgText struct {
	X, Y         float64
	Text, Anchor string // Anchor: start | middle | end
}

// yAxis draws five horizontal grid lines with their labels up to top and
// returns the scale from values to y.
func yAxis(c *svgChart, top float64, unit string) func(float64) float64 {
	for i := range 6 {
		f := float64(i) / 5
		y := baseY - plotH*f
		cls := "grid"
		if i == 0 {
			cls = "axis"
		}
		c.Grid = append(c.Grid, svgLine{padLeft, y, padLeft + plotW, y, cls})
		c.Texts = append(c.Texts, svgText{X: padLeft - 6, Y: y + 4, Text: fmtTick(top*f) + unit, Anchor: "end"})
	}
	return func(v float64) float64 { return baseY - plotH*min(max(v/top, 0), 1) }
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// timeLayout formats bucket starts for axis labels and tooltips.
func timeLayout(bucket time.Duration, since, until time.Time) string {
	switch {
	case bucket >= 24*time.Hour:
		return "Jan 2"
	case since.Truncate(24 * time.Hour).Equal(until.Add(-time.Nanosecond).Truncate(24 * time.Hour)):
		return "15:04"
	default:
		return "Jan 2 15:04"
	}
}

// timeAxis labels about seven bucket starts along the x axis.
func timeAxis(c *svgChart, buckets []Bucket, layout string) {
	n := len(buckets)
	bw := plotW / float64(n)
	step := max(1, (n+6)/7)
	for i := 0; i < n; i += step {
		x := padLeft + bw*float64(i)
		c.Grid = append(c.Grid, svgLine{x, baseY, x, baseY + 4, "axis"})
		c.Texts = append(c.Texts, svgText{X: x, Y: baseY + 18, Text: buckets[i].Start.Format(layout), Anchor: "middle"})
	}
}

func newTimeChart(title string) svgChart {
	return svgChart{Title: title, W: chartW, H: padTop + plotH + axisH}
}

// volumeChart: predictions per bucket as bars, requests as narrower,
// darker bars in front (a request carries one image or more).
func volumeChart(v *Version, r *Report) svgChart {
	c := newTimeChart("Predictions and requests per " + fmtDuration(r.Bucket))
	top := 0
	for _, b := range v.Buckets {
		top = max(top, b.Predictions)
	}
	scale := yAxis(&c, drift.NiceCeil(float64(top)), "")
	layout := timeLayout(r.Bucket, r.Since, r.Until)
	bw := plotW / float64(len(v.Buckets))
	for i, b := range v.Buckets {
		if b.Predictions == 0 {
			continue
		}
		x := padLeft + bw*float64(i)
		tip := fmt.Sprintf("%s: %s predictions, %s requests", b.Start.Format(layout), fmtInt(b.Predictions), fmtInt(b.Requests))
		y := scale(float64(b.Predictions))
		c.Rects = append(c.Rects, svgRect{x + bw*0.1, y, bw * 0.8, baseY - y, "pred", tip})
		y = scale(float64(b.Requests))
		c.Rects = append(c.Rects, svgRect{x + bw*0.3, y, bw * 0.4, baseY - y, "req", tip})
	}
	timeAxis(&c, v.Buckets, layout)
	return c
}

// latencyChart: p50, p90 and p99 of each bucket as lines (broken where a
// bucket has no latency) with a dot per point; false when no prediction
// has a latency.
func latencyChart(v *Version, r *Report) (svgChart, bool) {
	top := 0.0
	for _, b := range v.Buckets {
		for _, x := range []float64{b.P50Ms, b.P90Ms, b.P99Ms} {
			if !math.IsNaN(x) {
				top = max(top, x)
			}
		}
	}
	if top == 0 && math.IsNaN(v.Totals.P50Ms) {
		return svgChart{}, false
	}
	c := newTimeChart("Latency percentiles per " + fmtDuration(r.Bucket) + " (ms)")
	scale := yAxis(&c, drift.NiceCeil(top), "")
	layout := timeLayout(r.Bucket, r.Since, r.Until)
	bw := plotW / float64(len(v.Buckets))
	series := []struct {
		class string
		get   func(Bucket) float64
	}{
		{"p99", func(b Bucket) float64 { return b.P99Ms }},
		{"p90", func(b Bucket) float64 { return b.P90Ms }},
		{"p50", func(b Bucket) float64 { return b.P50Ms }},
	}
	for _, s := range series {
		var d strings.Builder
		pen := false
		for i, b := range v.Buckets {
			y := s.get(b)
			if math.IsNaN(y) {
				pen = false
				continue
			}
			x, py := padLeft+bw*(float64(i)+0.5), scale(y)
			if pen {
				fmt.Fprintf(&d, " L%.1f %.1f", x, py)
			} else {
				fmt.Fprintf(&d, " M%.1f %.1f", x, py)
			}
			pen = true
			c.Dots = append(c.Dots, svgDot{x, py, s.class, fmt.Sprintf("%s %s: %s", b.Start.Format(layout), s.class, fmtMs(y))})
		}
		if d.Len() > 0 {
			c.Paths = append(c.Paths, svgPath{strings.TrimSpace(d.String()), s.class})
		}
	}
	timeAxis(&c, v.Buckets, layout)
	return c, true
}

// classChart: horizontal bars of the most frequent top-1 classes, with
// count and share; false when no prediction has a class.
func classChart(v *Version) (svgChart, bool) {
	if len(v.Classes) == 0 {
		return svgChart{}, false
	}
	type row struct {
		label string
		count int
		share float64
		class string
	}
	var rows []row
	for i, cc := range v.Classes {
		if i == maxClassRows-1 && len(v.Classes) > maxClassRows {
			rest := row{class: "other"}
			for _, o := range v.Classes[i:] {
				rest.count += o.Count
				rest.share += o.Share
			}
			rest.label = fmt.Sprintf("(%d other classes)", len(v.Classes)-i)
			rows = append(rows, rest)
			break
		}
		rows = append(rows, row{cc.Name(), cc.Count, cc.Share, "cls"})
	}
	c := svgChart{Title: "Top-1 class mix", W: chartW, H: padTop + classRowH*float64(len(rows)) + 8}
	maxShare := rows[0].share
	for _, r := range rows {
		maxShare = max(maxShare, r.share)
	}
	c.Grid = append(c.Grid, svgLine{classLabelW, padTop - 4, classLabelW, c.H - 4, "axis"})
	for i, r := range rows {
		y := padTop + classRowH*float64(i)
		w := classBarW * r.share / maxShare
		text := fmt.Sprintf("%s (%s)", fmtInt(r.count), fmtPct(r.share))
		c.Rects = append(c.Rects, svgRect{classLabelW, y, max(w, 1), classRowH - 6, r.class, r.label + ": " + text})
		c.Texts = append(c.Texts,
			svgText{X: classLabelW - 6, Y: y + 12, Text: truncate(r.label, 26), Anchor: "end"},
			svgText{X: classLabelW + max(w, 1) + 6, Y: y + 12, Text: text, Anchor: "start"},
		)
	}
	return c, true
}

// confidenceChart: the top-1 score histogram; false when no prediction
// has a score.
func confidenceChart(v *Version) (svgChart, bool) {
	total, top := 0, 0
	for _, n := range v.Confidence {
		total += n
		top = max(top, n)
	}
	if total == 0 {
		return svgChart{}, false
	}
	c := svgChart{Title: "Top-1 confidence", W: chartW, H: padTop + plotH + axisH}
	scale := yAxis(&c, drift.NiceCeil(float64(top)), "")
	bw := plotW / ConfidenceBins
	for i, n := range v.Confidence {
		x := padLeft + bw*float64(i)
		lo, hi := float64(i)/ConfidenceBins, float64(i+1)/ConfidenceBins
		tip := fmt.Sprintf("%.1f–%.1f: %s (%s)", lo, hi, fmtInt(n), fmtPct(float64(n)/float64(total)))
		if n > 0 {
			y := scale(float64(n))
			c.Rects = append(c.Rects, svgRect{x + 2, y, bw - 4, baseY - y, "conf", tip})
		}
	}
	for i := 0; i <= ConfidenceBins; i += 2 {
		x := padLeft + bw*float64(i)
		c.Grid = append(c.Grid, svgLine{x, baseY, x, baseY + 4, "axis"})
		c.Texts = append(c.Texts, svgText{X: x, Y: baseY + 18, Text: strconv.FormatFloat(float64(i)/ConfidenceBins, 'f', 1, 64), Anchor: "middle"})
	}
	return c, true
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
