// Package report summarises a period of the prediction log as a
// self-contained HTML page: per model version, the volume of predictions
// and requests over time, latency percentiles over time, the top-1 class
// mix, the top-1 confidence histogram and, where the version has a
// reference profile, the drift tests of the whole period against it.
//
// Build (or a Builder, which takes records one at a time, or FromLog,
// which pages through a log) computes a Report; WriteHTML renders it with
// html/template: inline CSS, server-rendered inline SVG, no scripts and
// nothing fetched from elsewhere. The page is well-formed XML as well as
// HTML. The package does no I/O beyond reading the log it is given.
package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"fastinfer/monitor/drift"
	"fastinfer/monitor/predlog"
)

// MaxDriftWindow caps the observations a version's drift tests compare
// with its profile: the period's latest ones.
const MaxDriftWindow = 50000

// ConfidenceBins is the number of equal-width bins of the confidence
// histogram over [0, 1].
const ConfidenceBins = 10

// Report is one period of the prediction log.
type Report struct {
	Since, Until time.Time // the period, [Since, Until), UTC
	Model        string    // the model the report was limited to; "" for all
	Generated    time.Time
	Bucket       time.Duration // width of the time buckets
	Totals       Totals        // all versions together
	Versions     []*Version    // ordered by model, then version
}

// Totals summarise predictions (one per image) and requests (distinct
// request ids; one request may carry several images).
type Totals struct {
	Predictions int
	Requests    int
	// Latency (Record.Latency.TotalMs) over the predictions that have one;
	// NaN when none has.
	MeanMs, P50Ms, P99Ms float64
	First, Last          time.Time // zero when there are no predictions
}

// Version is the part of the period of one model version.
type Version struct {
	Model   string
	Version int
	Totals  Totals
	// Buckets cover the whole period, empty ones included.
	Buckets []Bucket
	// Classes are the top-1 classes by count, most frequent first.
	// Predictions without a class (no TopK) are counted in Unclassified.
	Classes      []ClassCount
	Unclassified int
	// Confidence counts top-1 scores in ConfidenceBins equal bins over
	// [0, 1] (a score of 1 falls in the last, scores outside are clamped);
	// ConfidenceUnknown counts predictions without a finite score.
	Confidence        [ConfidenceBins]int
	ConfidenceUnknown int
	// Drift is the period compared with the version's reference profile
	// (the latest MaxDriftWindow predictions); nil without a profile.
	Drift   *drift.Report
	Profile *drift.Profile
}

// Bucket is one time bucket [Start, Start+Report.Bucket).
type Bucket struct {
	Start       time.Time
	Predictions int
	Requests    int
	// Latency percentiles of TotalMs; NaN when the bucket has none.
	P50Ms, P90Ms, P99Ms float64
}

// ClassCount is how often one class was the top-1 class.
type ClassCount struct {
	Index int
	Label string // the latest non-empty label seen; "" when none
	Count int
	Share float64 // of the version's classified predictions, 0..1
}

// Name is the class's label, or "#index" without one.
func (c ClassCount) Name() string {
	if c.Label != "" {
		return c.Label
	}
	return "#" + strconv.Itoa(c.Index)
}

// Key is how profiles are keyed: "model/version".
func Key(model string, version int) string { return model + "/" + strconv.Itoa(version) }

// BucketSize is the bucket width for a period of length span: 1 minute
// up to an hour, 5 minutes up to 6 hours, 1 hour up to 3 days, then 1 day
// (whole days beyond MaxBuckets days, so no period has more buckets).
func BucketSize(span time.Duration) time.Duration {
	const day = 24 * time.Hour
	switch {
	case span <= time.Hour:
		return time.Minute
	case span <= 6*time.Hour:
		return 5 * time.Minute
	case span <= 72*time.Hour:
		return time.Hour
	case span <= MaxBuckets*day:
		return day
	default:
		n := span / (MaxBuckets * day)
		if span%(MaxBuckets*day) != 0 {
			n++
		}
		return day * n
	}
}

// MaxBuckets bounds the time buckets of a report (a period of years).
const MaxBuckets = 1000

// Build summarises records, keeping those in [since, until). A zero since
// or until is taken from the earliest or latest record. profiles, keyed by
// Key, may be nil.
func Build(records []predlog.Record, profiles map[string]*drift.Profile, since, until time.Time) *Report {
	if since.IsZero() || until.IsZero() {
		var lo, hi time.Time
		for i := range records {
			t := records[i].Time
			if lo.IsZero() || t.Before(lo) {
				lo = t
			}
			if hi.IsZero() || t.After(hi) {
				hi = t
			}
		}
		if since.IsZero() {
			since = lo
		}
		if until.IsZero() {
			until = hi.Add(time.Microsecond) // exclusive
		}
		if since.IsZero() && until.IsZero() { // no records at all
			until = time.Now()
			since = until.Add(-time.Hour)
		}
	}
	b := NewBuilder(profiles, since, until)
	for i := range records {
		b.Add(records[i])
	}
	return b.Report()
}

// Builder accumulates records one at a time into a Report, so a long
// period need not be held in memory. It is not safe for concurrent use.
type Builder struct {
	since, until time.Time
	bucket       time.Duration
	nb           int
	profiles     map[string]*drift.Profile
	versions     map[versionKey]*versionAcc
}

type versionKey struct {
	model   string
	version int
}

type reqKey struct {
	id     string
	bucket int
}

type versionAcc struct {
	v          *Version
	latency    [][]float64 // per bucket
	reqBucket  map[reqKey]struct{}
	reqs       map[string]struct{}
	anonymous  int // records without a request id, each its own request
	classes    map[int]*ClassCount
	classified int
	mon        *drift.Monitor
}

// NewBuilder starts a report of [since, until); an until not after since
// makes an empty period.
func NewBuilder(profiles map[string]*drift.Profile, since, until time.Time) *Builder {
	since, until = since.UTC(), until.UTC()
	if until.Before(since) {
		until = since
	}
	bucket := BucketSize(until.Sub(since))
	start := since.Truncate(bucket)
	span := until.Sub(start)
	nb := int(span / bucket)
	if span%bucket != 0 {
		nb++
	}
	return &Builder{
		since: since, until: until, bucket: bucket, nb: max(nb, 1),
		profiles: profiles, versions: map[versionKey]*versionAcc{},
	}
}

// Add takes one record; records outside the period are ignored.
func (b *Builder) Add(r predlog.Record) {
	t := r.Time.UTC()
	if t.Before(b.since) || !t.Before(b.until) {
		return
	}
	k := versionKey{r.Model, r.Version}
	a := b.versions[k]
	if a == nil {
		a = b.newVersion(k)
		b.versions[k] = a
	}
	v := a.v
	i := int(t.Sub(v.Buckets[0].Start) / b.bucket)
	i = min(max(i, 0), len(v.Buckets)-1)
	v.Buckets[i].Predictions++
	v.Totals.Predictions++
	if v.Totals.First.IsZero() || t.Before(v.Totals.First) {
		v.Totals.First = t
	}
	if t.After(v.Totals.Last) {
		v.Totals.Last = t
	}
	if ms := r.Latency.TotalMs; !math.IsNaN(ms) && !math.IsInf(ms, 0) {
		a.latency[i] = append(a.latency[i], ms)
	}
	if r.RequestID == "" {
		a.anonymous++
		v.Buckets[i].Requests++
	} else {
		if _, ok := a.reqBucket[reqKey{r.RequestID, i}]; !ok {
			a.reqBucket[reqKey{r.RequestID, i}] = struct{}{}
			v.Buckets[i].Requests++
		}
		a.reqs[r.RequestID] = struct{}{}
	}

	obs := drift.Observation{
		Class: -1, Confidence: math.NaN(), Brightness: r.Brightness, Contrast: r.Contrast,
		Width: math.NaN(), Height: math.NaN(), Aspect: math.NaN(),
	}
	if len(r.TopK) > 0 {
		top := r.TopK[0]
		c := a.classes[top.Index]
		if c == nil {
			c = &ClassCount{Index: top.Index}
			a.classes[top.Index] = c
		}
		c.Count++
		if top.Label != "" {
			c.Label = top.Label
		}
		a.classified++
		obs.Class = top.Index
		if s := top.Score; math.IsNaN(s) || math.IsInf(s, 0) {
			v.ConfidenceUnknown++
		} else {
			obs.Confidence = s
			bin := int(math.Floor(s * ConfidenceBins))
			v.Confidence[min(max(bin, 0), ConfidenceBins-1)]++
		}
	} else {
		v.Unclassified++
		v.ConfidenceUnknown++
	}
	if a.mon != nil {
		if r.Width > 0 {
			obs.Width = float64(r.Width)
		}
		if r.Height > 0 {
			obs.Height = float64(r.Height)
		}
		if r.Width > 0 && r.Height > 0 {
			obs.Aspect = float64(r.Width) / float64(r.Height)
		}
		a.mon.Add(obs)
	}
}

func (b *Builder) newVersion(k versionKey) *versionAcc {
	v := &Version{Model: k.model, Version: k.version, Buckets: make([]Bucket, b.nb)}
	start := b.since.Truncate(b.bucket)
	for i := range v.Buckets {
		v.Buckets[i].Start = start.Add(time.Duration(i) * b.bucket)
	}
	a := &versionAcc{
		v: v, latency: make([][]float64, b.nb),
		reqBucket: map[reqKey]struct{}{}, reqs: map[string]struct{}{},
		classes: map[int]*ClassCount{},
	}
	if p := b.profiles[Key(k.model, k.version)]; p != nil {
		// The drift package takes the monitor's options as given; the
		// window is the period's latest MaxDriftWindow observations.
		if mon, err := drift.New(p, drift.Options{Window: MaxDriftWindow}); err == nil {
			a.mon = mon
			v.Profile = p
		}
	}
	return a
}

// Report finishes the report. The Builder should not be used afterwards.
func (b *Builder) Report() *Report {
	r := &Report{Since: b.since, Until: b.until, Bucket: b.bucket, Generated: time.Now().UTC().Truncate(time.Second)}
	var all []float64
	for _, a := range b.versions {
		v := a.v
		var lat []float64
		for i := range v.Buckets {
			l := a.latency[i]
			slices.Sort(l)
			v.Buckets[i].P50Ms = Percentile(l, 50)
			v.Buckets[i].P90Ms = Percentile(l, 90)
			v.Buckets[i].P99Ms = Percentile(l, 99)
			lat = append(lat, l...)
		}
		slices.Sort(lat)
		setLatency(&v.Totals, lat)
		all = append(all, lat...)
		v.Totals.Requests = len(a.reqs) + a.anonymous

		for _, c := range a.classes {
			c.Share = float64(c.Count) / float64(a.classified)
			v.Classes = append(v.Classes, *c)
		}
		slices.SortFunc(v.Classes, func(x, y ClassCount) int {
			if c := cmp.Compare(y.Count, x.Count); c != 0 {
				return c
			}
			return cmp.Compare(x.Index, y.Index)
		})
		if a.mon != nil {
			d := a.mon.Check()
			v.Drift = &d
		}
		r.Versions = append(r.Versions, v)

		t := &r.Totals
		t.Predictions += v.Totals.Predictions
		t.Requests += v.Totals.Requests
		if t.First.IsZero() || v.Totals.First.Before(t.First) {
			t.First = v.Totals.First
		}
		if v.Totals.Last.After(t.Last) {
			t.Last = v.Totals.Last
		}
	}
	slices.Sort(all)
	setLatency(&r.Totals, all)
	slices.SortFunc(r.Versions, func(x, y *Version) int {
		if c := strings.Compare(x.Model, y.Model); c != 0 {
			return c
		}
		return cmp.Compare(x.Version, y.Version)
	})
	return r
}

func setLatency(t *Totals, sorted []float64) {
	t.MeanMs, t.P50Ms, t.P99Ms = math.NaN(), Percentile(sorted, 50), Percentile(sorted, 99)
	if len(sorted) > 0 {
		sum := 0.0
		for _, x := range sorted {
			sum += x
		}
		t.MeanMs = sum / float64(len(sorted))
	}
}

// Percentile is the p-th percentile (0..100) of an ascending sample,
// interpolating linearly between the closest ranks (as numpy's default);
// NaN for an empty sample.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	pos := p / 100 * float64(n-1)
	pos = min(max(pos, 0), float64(n-1))
	lo := int(math.Floor(pos))
	hi := min(lo+1, n-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// Empty reports whether the period has no predictions.
func (r *Report) Empty() bool { return r.Totals.Predictions == 0 }

// Summary is a one-line account of the report.
func (r *Report) Summary() string {
	if r.Empty() {
		return fmt.Sprintf("no predictions from %s to %s", fmtTime(r.Since), fmtTime(r.Until))
	}
	s := fmt.Sprintf("%d predictions in %d requests, %d model version%s, latency p50 %s p99 %s",
		r.Totals.Predictions, r.Totals.Requests, len(r.Versions), plural(len(r.Versions)),
		fmtMs(r.Totals.P50Ms), fmtMs(r.Totals.P99Ms))
	var drifted []string
	for _, v := range r.Versions {
		if v.Drift != nil && v.Drift.Drift {
			drifted = append(drifted, v.Model+" v"+strconv.Itoa(v.Version))
		}
	}
	if len(drifted) > 0 {
		s += "; drift: " + strings.Join(drifted, ", ")
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Source is what FromLog reads: *predlog.Log.
type Source interface {
	Query(ctx context.Context, q predlog.Query) ([]predlog.Record, error)
}

// PageSize is how many records FromLog reads per query.
const PageSize = 5000

// FromLog builds the report of [since, until) (a zero until is now) of
// model (all when "") from src, a page of PageSize records at a time; the
// records' images are dropped as soon as they are read.
func FromLog(ctx context.Context, src Source, model string, profiles map[string]*drift.Profile, since, until time.Time) (*Report, error) {
	if since.IsZero() {
		return nil, errors.New("report: the period has no start")
	}
	if until.IsZero() {
		until = time.Now()
	}
	b := NewBuilder(profiles, since, until)
	// Pages are ordered by (time, write order); the next page starts at the
	// last page's last instant and skips the records of that instant it
	// already took.
	cur, skip, limit := since, 0, PageSize
	for {
		page, err := src.Query(ctx, predlog.Query{Since: cur, Until: until, Model: model, Limit: limit})
		if err != nil {
			return nil, err
		}
		for i := min(skip, len(page)); i < len(page); i++ {
			page[i].Image = nil
			b.Add(page[i])
		}
		if len(page) < limit {
			r := b.Report()
			r.Model = model
			return r, nil
		}
		last := page[len(page)-1].Time
		n := 0
		for i := len(page) - 1; i >= 0 && page[i].Time.Equal(last); i-- {
			n++
		}
		if last.Equal(cur) { // the whole page is one instant: read more of it
			skip, limit = len(page), limit*2
			continue
		}
		cur, skip, limit = last, n, PageSize
	}
}
