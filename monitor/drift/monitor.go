package drift

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults for Options' zero values.
const (
	DefaultWindow     = 1000
	DefaultMinSamples = 200
	DefaultAlpha      = 0.01
	psiBins           = 10 // confidence PSI bins: reference deciles
)

// Options configure a Monitor; zero values take the defaults.
type Options struct {
	Window       int     // observations kept (DefaultWindow)
	MinSamples   int     // no alarm below this many (DefaultMinSamples; at most Window)
	Alpha        float64 // family-wise significance level (DefaultAlpha)
	PSIThreshold float64 // PSI alarm level (PSIMajor)
}

func (o Options) withDefaults() Options {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MinSamples <= 0 {
		o.MinSamples = DefaultMinSamples
	}
	o.MinSamples = min(o.MinSamples, o.Window)
	if !(o.Alpha > 0 && o.Alpha < 1) {
		o.Alpha = DefaultAlpha
	}
	if !(o.PSIThreshold > 0) {
		o.PSIThreshold = PSIMajor
	}
	return o
}

// Test is the outcome of one drift test.
type Test struct {
	Name      string  // "class_chi2", "class_psi", "confidence_ks", "confidence_psi", "brightness_ks", …
	Statistic float64 // chi-square, KS D or PSI
	PValue    float64 // NaN for PSI
	Threshold float64 // Bonferroni-corrected alpha for p-value tests, PSI level for PSI
	Drift     bool
}

type testJSON struct {
	Name      string   `json:"name"`
	Statistic float64  `json:"statistic"`
	PValue    *float64 `json:"p_value"` // null for PSI: JSON has no NaN
	Threshold float64  `json:"threshold"`
	Drift     bool     `json:"drift"`
}

// MarshalJSON writes a NaN p-value as null, which encoding/json cannot do.
func (t Test) MarshalJSON() ([]byte, error) {
	j := testJSON{t.Name, t.Statistic, nil, t.Threshold, t.Drift}
	if !math.IsNaN(t.PValue) {
		j.PValue = &t.PValue
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads a null p-value as NaN.
func (t *Test) UnmarshalJSON(b []byte) error {
	var j testJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*t = Test{j.Name, j.Statistic, math.NaN(), j.Threshold, j.Drift}
	if j.PValue != nil {
		t.PValue = *j.PValue
	}
	return nil
}

// Distribution is what a page needs to plot reference against live.
type Distribution struct {
	// ClassFreq has the reference's classes; a live one gets one extra
	// trailing entry, the share of classes outside that range, when any
	// were seen.
	ClassFreq []float64 `json:"class_freq,omitempty"`
	// Features maps feature names to ascending samples.
	Features map[string][]float64 `json:"features,omitempty"`
}

// Report is the result of Monitor.Check. Reference shares its slices with
// the Profile: treat it as read-only.
type Report struct {
	Model      string       `json:"model"`
	Version    int          `json:"version"`
	Window     int          `json:"window"`      // observations compared
	Seen       int          `json:"seen"`        // observations added since start or Reset
	MinSamples int          `json:"min_samples"` // window size needed before an alarm
	Time       time.Time    `json:"time"`
	Tests      []Test       `json:"tests"`
	Drift      bool         `json:"drift"`
	Reason     string       `json:"reason"`
	Live       Distribution `json:"live"`
	Reference  Distribution `json:"reference"`
}

// Monitor keeps a sliding window of the latest observations of one model
// version and compares it with that version's Profile. It is safe for
// concurrent use.
type Monitor struct {
	profile   *Profile
	opts      Options
	confEdges []float64 // reference deciles of confidence
	confRef   []float64 // reference proportions in those bins

	mu   sync.Mutex
	buf  []Observation // ring buffer, len = opts.Window
	next int           // slot of the next Add
	n    int           // filled slots
	seen int
}

// New returns a Monitor comparing live traffic with p, which must not be
// modified afterwards.
func New(p *Profile, opts Options) (*Monitor, error) {
	if p == nil {
		return nil, errors.New("drift: nil profile")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	m := &Monitor{profile: p, opts: opts, buf: make([]Observation, opts.Window)}
	if ref := p.Features[FeatureConfidence]; len(ref) > 0 {
		m.confEdges = QuantileEdges(ref, psiBins)
		m.confRef = Histogram(ref, m.confEdges)
	}
	return m, nil
}

// Profile returns the reference profile.
func (m *Monitor) Profile() *Profile { return m.profile }

// Options returns the effective options.
func (m *Monitor) Options() Options { return m.opts }

// Add records one observation, evicting the oldest once the window is
// full. It does not allocate.
func (m *Monitor) Add(o Observation) {
	m.mu.Lock()
	m.buf[m.next] = o
	m.next++
	if m.next == len(m.buf) {
		m.next = 0
	}
	if m.n < len(m.buf) {
		m.n++
	}
	m.seen++
	m.mu.Unlock()
}

// Reset empties the window, e.g. after the traffic mix is known to change.
func (m *Monitor) Reset() {
	m.mu.Lock()
	m.next, m.n, m.seen = 0, 0, 0
	m.mu.Unlock()
}

// snapshot copies the window, oldest first, so the tests run unlocked.
func (m *Monitor) snapshot() ([]Observation, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Observation, 0, m.n)
	if m.n == len(m.buf) {
		out = append(out, m.buf[m.next:]...)
		out = append(out, m.buf[:m.next]...)
	} else {
		out = append(out, m.buf[:m.n]...)
	}
	return out, m.seen
}

// Check compares the current window with the profile.
func (m *Monitor) Check() Report {
	obs, seen := m.snapshot()
	return m.compare(obs, seen, time.Now())
}

func (m *Monitor) compare(obs []Observation, seen int, now time.Time) Report {
	p := m.profile
	r := Report{
		Model: p.Model, Version: p.Version,
		Window: len(obs), Seen: seen, MinSamples: m.opts.MinSamples,
		Time:      now.UTC().Round(0),
		Reference: Distribution{ClassFreq: p.ClassFreq, Features: p.Features},
	}

	var live [numFeatures][]float64
	for i := range live {
		live[i] = make([]float64, 0, len(obs))
	}
	k := len(p.ClassFreq)
	counts := make([]float64, k+1) // last: classes outside the reference's range
	classN := 0                    // observations with a known class
	for i := range obs {
		o := &obs[i]
		switch {
		case o.Class < 0: // unknown, as in Builder.Add
		case o.Class < k:
			counts[o.Class]++
		default:
			counts[k]++
		}
		if o.Class >= 0 {
			classN++
		}
		for j, v := range o.features() {
			if !math.IsNaN(v) {
				live[j] = append(live[j], v)
			}
		}
	}
	if counts[k] == 0 {
		counts = counts[:k]
	}
	r.Live.Features = make(map[string][]float64, numFeatures)
	for i, v := range live {
		if len(v) > 0 {
			slices.Sort(v)
			r.Live.Features[featureNames[i]] = v
		}
	}

	var tests []Test
	if k > 0 && classN > 0 {
		refFreq := p.ClassFreq
		if len(counts) > k {
			refFreq = append(slices.Clone(refFreq), 0)
		}
		floor := DefaultFloor
		if p.Count > 0 {
			floor = 0.5 / float64(p.Count) // half a reference observation
		}
		stat, df, pv := ChiSquareWithFloor(counts, refFreq, floor)
		// The reference proportions are themselves estimated from Count
		// observations; dividing by 1+n/Count makes the goodness-of-fit
		// statistic match the two-sample (homogeneity) test asymptotically,
		// so a small reference set does not cause false alarms.
		if p.Count > 0 && df > 0 {
			stat /= 1 + float64(classN)/float64(p.Count)
			pv = ChiSquareSF(stat, df)
		}
		tests = append(tests, Test{Name: "class_chi2", Statistic: stat, PValue: pv})

		liveFreq := make([]float64, len(counts))
		for i, c := range counts {
			liveFreq[i] = c / float64(classN)
		}
		r.Live.ClassFreq = liveFreq
		// PSI over the chi-square's pooled cells: with many classes and a
		// small window, per-class PSI is dominated by sampling noise
		// (E[PSI] ≈ (K−1)/n) and would alarm on unchanged traffic.
		o, e := PoolCells(counts, refFreq, floor)
		normalise(o)
		normalise(e)
		tests = append(tests, Test{Name: "class_psi", Statistic: PSI(e, o), PValue: math.NaN()})
	}
	for i, name := range featureNames {
		ref := p.Features[name]
		if len(ref) == 0 || len(live[i]) == 0 {
			continue
		}
		d, pv := KS(ref, live[i])
		tests = append(tests, Test{Name: name + "_ks", Statistic: d, PValue: pv})
		if name == FeatureConfidence {
			psi := PSI(m.confRef, Histogram(live[i], m.confEdges))
			tests = append(tests, Test{Name: "confidence_psi", Statistic: psi, PValue: math.NaN()})
		}
	}

	// Bonferroni: the family-wise false-alarm rate of the p-value tests
	// stays below Alpha however many there are.
	nP := 0
	for _, t := range tests {
		if !math.IsNaN(t.PValue) {
			nP++
		}
	}
	warm := len(obs) >= m.opts.MinSamples
	var fired []string
	for i := range tests {
		t := &tests[i]
		if math.IsNaN(t.PValue) {
			t.Threshold = m.opts.PSIThreshold
			t.Drift = warm && t.Statistic > t.Threshold
			if t.Drift {
				fired = append(fired, fmt.Sprintf("%s %.3g > %.3g", t.Name, t.Statistic, t.Threshold))
			}
		} else {
			t.Threshold = m.opts.Alpha / float64(nP)
			t.Drift = warm && t.PValue < t.Threshold
			if t.Drift {
				fired = append(fired, fmt.Sprintf("%s p=%.3g < %.3g", t.Name, t.PValue, t.Threshold))
			}
		}
	}
	r.Tests = tests
	switch {
	case !warm:
		r.Reason = fmt.Sprintf("warming up: %d of %d observations", len(obs), m.opts.MinSamples)
	case len(fired) > 0:
		r.Drift = true
		r.Reason = "drift: " + strings.Join(fired, "; ")
	case len(tests) == 0:
		r.Reason = "nothing to compare: the profile has no classes or features"
	default:
		r.Reason = "no drift"
	}
	return r
}

// Registry holds one Monitor per model version. It is safe for concurrent
// use.
type Registry struct {
	opts Options
	mu   sync.RWMutex
	m    map[versionKey]*Monitor
}

type versionKey struct {
	model   string
	version int
}

// NewRegistry returns an empty registry whose monitors use opts.
func NewRegistry(opts Options) *Registry {
	return &Registry{opts: opts, m: make(map[versionKey]*Monitor)}
}

// Register creates the monitor for p's model version, replacing any
// existing one (and its window).
func (r *Registry) Register(p *Profile) (*Monitor, error) {
	mon, err := New(p, r.opts)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.m[versionKey{p.Model, p.Version}] = mon
	r.mu.Unlock()
	return mon, nil
}

// Get returns the monitor of a model version, or nil.
func (r *Registry) Get(model string, version int) *Monitor {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[versionKey{model, version}]
}

// Remove forgets a model version's monitor.
func (r *Registry) Remove(model string, version int) {
	r.mu.Lock()
	delete(r.m, versionKey{model, version})
	r.mu.Unlock()
}

// Monitors returns all monitors ordered by model, then version.
func (r *Registry) Monitors() []*Monitor {
	r.mu.RLock()
	out := make([]*Monitor, 0, len(r.m))
	for _, mon := range r.m {
		out = append(out, mon)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Monitor) int {
		if c := strings.Compare(a.profile.Model, b.profile.Model); c != 0 {
			return c
		}
		return a.profile.Version - b.profile.Version
	})
	return out
}
