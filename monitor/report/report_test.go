package report

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fastinfer/monitor/drift"
	"fastinfer/monitor/predlog"
)

var t0 = time.Date(2026, 3, 14, 10, 0, 0, 0, time.UTC)

func rec(at time.Duration, id string, class int, label string, score, ms float64) predlog.Record {
	return predlog.Record{
		Time: t0.Add(at), RequestID: id, Model: "toy", Version: 1,
		TopK:    []predlog.Class{{Index: class, Label: label, Score: score}},
		Latency: predlog.Latency{TotalMs: ms},
		Width:   64, Height: 32, Brightness: 0.5, Contrast: 0.2,
	}
}

func TestBucketSize(t *testing.T) {
	for _, c := range []struct {
		span, want time.Duration
	}{
		{30 * time.Minute, time.Minute},
		{time.Hour, time.Minute},
		{2 * time.Hour, 5 * time.Minute},
		{6 * time.Hour, 5 * time.Minute},
		{24 * time.Hour, time.Hour},
		{72 * time.Hour, time.Hour},
		{7 * 24 * time.Hour, 24 * time.Hour},
		{1000 * 24 * time.Hour, 24 * time.Hour},
		{1001 * 24 * time.Hour, 48 * time.Hour},
		{time.Duration(math.MaxInt64), 107 * 24 * time.Hour},
	} {
		if got := BucketSize(c.span); got != c.want {
			t.Errorf("BucketSize(%s) = %s, want %s", c.span, got, c.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	s := make([]float64, 100)
	for i := range s {
		s[i] = float64(i + 1)
	}
	for _, c := range []struct{ p, want float64 }{{0, 1}, {50, 50.5}, {90, 90.1}, {99, 99.01}, {100, 100}} {
		if got := Percentile(s, c.p); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile([]float64{7}, 99); got != 7 {
		t.Errorf("p99 of one value = %v", got)
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("percentile of nothing is not NaN")
	}
}

func TestBuildBuckets(t *testing.T) {
	recs := []predlog.Record{
		rec(-time.Second, "early", 0, "cat", 0.9, 1), // before the period
		rec(2*time.Minute, "a", 0, "cat", 0.9, 10),   // bucket 0, two images of one request
		rec(2*time.Minute+time.Millisecond, "a", 1, "dog", 0.8, 30),
		rec(7*time.Minute, "b", 0, "cat", 0.95, 20),        // bucket 1
		rec(7*time.Minute, "", 0, "cat", 0.95, math.NaN()), // no request id, no latency
		rec(2*time.Hour-time.Second, "c", 2, "", 1.0, 5),   // the last bucket
		rec(2*time.Hour, "late", 0, "cat", 0.9, 1),         // at until: excluded
	}
	r := Build(recs, nil, t0, t0.Add(2*time.Hour))
	if r.Bucket != 5*time.Minute {
		t.Fatalf("bucket %s, want 5m for a 2 h period", r.Bucket)
	}
	if len(r.Versions) != 1 {
		t.Fatalf("%d versions", len(r.Versions))
	}
	v := r.Versions[0]
	if len(v.Buckets) != 24 || !v.Buckets[0].Start.Equal(t0) || !v.Buckets[23].Start.Equal(t0.Add(115*time.Minute)) {
		t.Fatalf("%d buckets from %s to %s", len(v.Buckets), v.Buckets[0].Start, v.Buckets[len(v.Buckets)-1].Start)
	}
	type pr struct{ p, q int }
	got := map[int]pr{}
	for i, b := range v.Buckets {
		if b.Predictions > 0 || b.Requests > 0 {
			got[i] = pr{b.Predictions, b.Requests}
		}
	}
	want := map[int]pr{0: {2, 1}, 1: {2, 2}, 23: {1, 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("per bucket (predictions, requests) %v, want %v", got, want)
	}
	if b := v.Buckets[0]; b.P50Ms != 20 || math.Abs(b.P99Ms-29.8) > 1e-9 {
		t.Errorf("bucket 0 latency p50 %v p99 %v, want 20 and 29.8", b.P50Ms, b.P99Ms)
	}
	if b := v.Buckets[1]; b.P50Ms != 20 || b.P90Ms != 20 {
		t.Errorf("bucket 1 (one latency and a NaN) p50 %v p90 %v, want 20", b.P50Ms, b.P90Ms)
	}
	if b := v.Buckets[5]; !math.IsNaN(b.P50Ms) {
		t.Errorf("empty bucket p50 %v, want NaN", b.P50Ms)
	}
	tot := v.Totals
	if tot.Predictions != 5 || tot.Requests != 4 {
		t.Errorf("totals: %d predictions, %d requests; want 5 and 4", tot.Predictions, tot.Requests)
	}
	if tot.MeanMs != 16.25 || tot.P50Ms != 15 || !tot.First.Equal(t0.Add(2*time.Minute)) || !tot.Last.Equal(t0.Add(2*time.Hour-time.Second)) {
		t.Errorf("totals %+v", tot)
	}
	if r.Totals.Predictions != 5 || r.Totals.Requests != 4 || r.Totals.MeanMs != 16.25 {
		t.Errorf("report totals %+v", r.Totals)
	}
	if s := r.Summary(); !strings.Contains(s, "5 predictions in 4 requests") {
		t.Errorf("summary %q", s)
	}

	// Longer periods take wider buckets, aligned to UTC.
	r = Build(recs, nil, t0.Add(-90*time.Minute), t0.Add(22*time.Hour))
	if r.Bucket != time.Hour || !r.Versions[0].Buckets[0].Start.Equal(t0.Add(-2*time.Hour)) || len(r.Versions[0].Buckets) != 24 {
		t.Errorf("1-day period: bucket %s, first %s, %d buckets", r.Bucket, r.Versions[0].Buckets[0].Start, len(r.Versions[0].Buckets))
	}
}

func TestClassMixAndConfidence(t *testing.T) {
	var recs []predlog.Record
	add := func(n, class int, label string, score float64) {
		for range n {
			recs = append(recs, rec(time.Duration(len(recs))*time.Second, fmt.Sprint(len(recs)), class, label, score, 1))
		}
	}
	add(6, 3, "", 0.95)     // unlabelled at first…
	add(2, 3, "cat", 1.0)   // …then labelled: the label is kept
	add(1, 7, "dog", 0.05)  // bin 0
	add(1, 7, "dog", 1.5)   // clamped into the last bin
	add(1, 1, "bird", -0.2) // clamped into bin 0
	add(1, 1, "bird", math.NaN())
	recs = append(recs, predlog.Record{Time: t0.Add(time.Minute), Model: "toy", Version: 1, RequestID: "x", Latency: predlog.Latency{TotalMs: 1}})
	r := Build(recs, nil, t0, t0.Add(time.Hour))
	v := r.Versions[0]
	var got []string
	for _, c := range v.Classes {
		got = append(got, fmt.Sprintf("%s=%d/%.3f", c.Name(), c.Count, c.Share))
	}
	want := []string{"cat=8/0.667", "bird=2/0.167", "dog=2/0.167"}
	if !slices.Equal(got, want) {
		t.Errorf("classes %q, want %q", got, want)
	}
	if v.Unclassified != 1 || v.ConfidenceUnknown != 2 {
		t.Errorf("unclassified %d, unknown confidence %d; want 1 and 2", v.Unclassified, v.ConfidenceUnknown)
	}
	if want := [ConfidenceBins]int{2, 0, 0, 0, 0, 0, 0, 0, 0, 9}; v.Confidence != want {
		t.Errorf("confidence bins %v, want %v", v.Confidence, want)
	}
	if (ClassCount{Index: 4}).Name() != "#4" {
		t.Error("an unlabelled class is not named #index")
	}
}

func TestEmptyPeriod(t *testing.T) {
	r := Build(nil, nil, t0, t0.Add(24*time.Hour))
	if !r.Empty() || len(r.Versions) != 0 || r.Totals.Predictions != 0 || !math.IsNaN(r.Totals.P50Ms) {
		t.Fatalf("empty report: %+v", r)
	}
	if s := r.Summary(); !strings.HasPrefix(s, "no predictions") {
		t.Errorf("summary %q", s)
	}
	page := render(t, r)
	for _, want := range []string{"<h1>Prediction report</h1>", `id="empty"`, "No predictions", "2026-03-14 10:00:00 to 2026-03-15 10:00:00 UTC"} {
		if !strings.Contains(page, want) {
			t.Errorf("empty page lacks %q", want)
		}
	}
	if strings.Contains(page, "<svg") || strings.Contains(page, `id="summary"`) {
		t.Error("empty page has charts or a summary")
	}
	checkXML(t, page)
	// Build(nil) with no bounds is an empty page too, not a panic.
	if r := Build(nil, nil, time.Time{}, time.Time{}); !r.Empty() {
		t.Error("unbounded empty report is not empty")
	}
	// A period from the beginning of time has at most MaxBuckets buckets.
	r = Build([]predlog.Record{rec(0, "a", 0, "cat", 0.9, 1)}, nil, time.Unix(0, 0), t0.Add(time.Hour))
	if n := len(r.Versions[0].Buckets); n > MaxBuckets || r.Totals.Predictions != 1 {
		t.Errorf("56 years: %d buckets of %s, %d predictions", n, r.Bucket, r.Totals.Predictions)
	}
}

// profile builds a reference of bright, confident class-0 images.
func profile(t *testing.T) *drift.Profile {
	b := drift.NewBuilder("toy", 1, "synthetic", []string{"cat", "dog"})
	for i := range 500 {
		f := float64(i%50) / 50
		b.Add(drift.Observation{Class: i % 2, Confidence: 0.8 + 0.19*f, Brightness: 0.5 + 0.1*f, Contrast: 0.2 + 0.05*f, Width: 64, Height: 32, Aspect: 2})
	}
	p := b.Profile()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDriftOnlyWithProfile(t *testing.T) {
	var recs []predlog.Record
	for i := range 400 {
		f := float64(i%50) / 50
		r := rec(time.Duration(i)*time.Second, fmt.Sprint(i), i%2, "cat", 0.8+0.19*f, 5)
		r.Brightness = 0.5 + 0.1*f
		if i >= 200 {
			r.Brightness = 0.1 + 0.1*f // darkened
		}
		r.Contrast = 0.2 + 0.05*f
		recs = append(recs, r)
		other := r
		other.Model = "plain"
		recs = append(recs, other)
	}
	r := Build(recs, map[string]*drift.Profile{Key("toy", 1): profile(t), Key("toy", 2): profile(t)}, t0, t0.Add(time.Hour))
	if len(r.Versions) != 2 || r.Versions[0].Model != "plain" || r.Versions[1].Model != "toy" {
		t.Fatalf("versions %v", r.Versions)
	}
	if r.Versions[0].Drift != nil {
		t.Error("a version without a profile has drift tests")
	}
	d := r.Versions[1].Drift
	if d == nil {
		t.Fatal("no drift tests for the version with a profile")
	}
	if d.Window != 400 || !d.Drift || !strings.Contains(d.Reason, "brightness_ks") {
		t.Errorf("drift: window %d, drift %v, %s", d.Window, d.Drift, d.Reason)
	}
	if !strings.Contains(r.Summary(), "drift: toy v1") {
		t.Errorf("summary %q", r.Summary())
	}
	page := render(t, r)
	if n := strings.Count(page, "<h3>Drift</h3>"); n != 1 {
		t.Errorf("%d drift sections, want 1 (only the version with a profile)", n)
	}
	for _, want := range []string{"brightness_ks", "class_chi2", `class="test drift"`, "synthetic", "alarms need 200"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	checkXML(t, page)

	// The same traffic without any profile: no drift section at all.
	page = render(t, Build(recs, nil, t0, t0.Add(time.Hour)))
	if strings.Contains(page, "<h3>Drift</h3>") || strings.Contains(page, "class_chi2") {
		t.Error("drift section without a profile")
	}
}

func TestHTMLEscapesAndCharts(t *testing.T) {
	hostile := `<script>alert(1)</script>`
	label := `<img src=x onerror=alert(2)> & "q" </svg>`
	var recs []predlog.Record
	for i := range 300 {
		r := rec(time.Duration(i)*10*time.Second, fmt.Sprint(i/2), i%20, fmt.Sprintf("%s %d", label, i%20), 0.5+float64(i%5)/10, float64(5+i%17))
		r.Model = hostile
		recs = append(recs, r)
	}
	r := Build(recs, map[string]*drift.Profile{Key(hostile, 1): profile(t)}, t0, t0.Add(time.Hour))
	page := render(t, r)
	for _, bad := range []string{"<script", "<img", "onerror=alert(2)>"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q unescaped", bad)
		}
	}
	if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the model name is not shown escaped")
	}
	root := checkXML(t, page)
	// Every version section has volume, latency, class and confidence
	// charts; the class chart pools the 20 classes into 15 rows.
	if got := root.count("svg"); got != 4 {
		t.Errorf("%d <svg> elements, want 4", got)
	}
	if got := root.count("h3"); got != 5 {
		t.Errorf("%d <h3> headings, want 5 (volume, latency, class mix, confidence, drift)", got)
	}
	if !strings.Contains(page, "(6 other classes)") {
		t.Error("classes beyond the 15th are not pooled")
	}
	for _, cls := range []string{`class="p50"`, `class="p90"`, `class="p99"`, `class="pred"`, `class="req"`, `class="conf"`, `class="cls"`} {
		if !strings.Contains(page, cls) {
			t.Errorf("page lacks %s", cls)
		}
	}
	for _, s := range []string{"<script", "http://", "https://"} {
		if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(page, "http://www.w3.org/", ""), "&lt;script", ""), s) {
			t.Errorf("page contains %q: not self-contained", s)
		}
	}
}

func render(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("REPORT_TEST_OUT"); dir != "" {
		os.WriteFile(filepath.Join(dir, t.Name()+".html"), b.Bytes(), 0o644)
	}
	return b.String()
}

type counts map[string]int

func (c counts) count(name string) int { return c[name] }

// checkXML parses the whole page as strict XML (balanced tags, quoted
// attributes, no stray ampersands) and counts its elements by name.
func checkXML(t *testing.T, page string) counts {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(page))
	dec.Strict = true
	c := counts{}
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("page is not well-formed: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			depth++
			c[el.Name.Local]++
			if el.Name.Local == "script" {
				t.Error("page has a <script> element")
			}
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 || c["html"] != 1 {
		t.Fatalf("page: depth %d at the end, %d html elements", depth, c["html"])
	}
	return c
}

// fakeLog answers queries from sorted records, as the stores do.
type fakeLog struct {
	recs    []predlog.Record
	queries int
}

func (f *fakeLog) Query(_ context.Context, q predlog.Query) ([]predlog.Record, error) {
	f.queries++
	var out []predlog.Record
	for _, r := range f.recs {
		if (!q.Since.IsZero() && r.Time.Before(q.Since)) || (!q.Until.IsZero() && !r.Time.Before(q.Until)) || (q.Model != "" && r.Model != q.Model) {
			continue
		}
		out = append(out, r)
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
	}
	return out, nil
}

func TestFromLogPages(t *testing.T) {
	f := &fakeLog{}
	for i := range 3 * PageSize {
		at := time.Duration(i) * time.Millisecond
		if i >= PageSize/2 && i < PageSize*2 { // 1.5 pages at one instant
			at = time.Duration(PageSize/2) * time.Millisecond
		}
		r := rec(at, fmt.Sprint(i), i%3, "c", 0.9, float64(i%10))
		r.Image = []byte("img")
		f.recs = append(f.recs, r)
	}
	f.recs = append(f.recs, predlog.Record{Time: t0.Add(time.Second), Model: "other", Version: 1, RequestID: "o", TopK: []predlog.Class{{Index: 0, Score: 1}}})
	got, err := FromLog(t.Context(), f, "toy", nil, t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := Build(f.recs[:3*PageSize], nil, t0, t0.Add(time.Hour))
	if got.Totals.Predictions != 3*PageSize || got.Totals != want.Totals || len(got.Versions) != 1 || got.Model != "toy" {
		t.Errorf("paged totals %+v, want %+v", got.Totals, want.Totals)
	}
	if f.queries < 4 {
		t.Errorf("%d queries for 3 pages", f.queries)
	}
}

// FromLog reads a real (in-memory SQLite) prediction log.
func TestFromRealLog(t *testing.T) {
	ctx := t.Context()
	l, err := predlog.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "p.db"), predlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	for i := range 50 {
		l.Add(rec(time.Duration(i)*time.Minute, fmt.Sprint(i), i%4, fmt.Sprint("class ", i%4), 0.9, 3))
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := FromLog(ctx, l, "", nil, t0.Add(10*time.Minute), t0.Add(40*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r.Totals.Predictions != 30 || r.Bucket != time.Minute || len(r.Versions[0].Classes) != 4 {
		t.Errorf("report of 30 minutes: %+v, bucket %s", r.Totals, r.Bucket)
	}
}
