package drift

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

var testClasses = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

// world generates synthetic traffic; the zero shifts give the reference.
type world struct {
	classP      []float64 // class mix (nil: baseClassP)
	brightShift float64
	confPower   float64 // confidence = Beta(5,2)^confPower (0: 1)
}

var baseClassP = []float64{0.2, 0.15, 0.12, 0.1, 0.1, 0.09, 0.08, 0.06, 0.05, 0.05}

func (w world) draw(rng *rand.Rand) Observation {
	cp := w.classP
	if cp == nil {
		cp = baseClassP
	}
	class, u := len(cp)-1, rng.Float64()
	for i, p := range cp {
		if u < p {
			class = i
			break
		}
		u -= p
	}
	// Beta(5,2) is the 5th smallest of 6 uniforms: mean 5/7, skewed high
	// like a classifier's top-1 confidence.
	var us [6]float64
	for i := range us {
		us[i] = rng.Float64()
	}
	slices.Sort(us[:])
	conf := us[4]
	if w.confPower != 0 {
		conf = math.Pow(conf, w.confPower)
	}
	width := []float64{640, 1024, 1280}[rng.IntN(3)]
	height := width * 3 / 4
	if rng.Float64() < 0.3 {
		height = width
	}
	return Observation{
		Class:      class,
		Confidence: conf,
		Brightness: 0.3 + 0.05*rng.NormFloat64() + w.brightShift,
		Contrast:   0.2 + 0.04*rng.NormFloat64(),
		Width:      width,
		Height:     height,
		Aspect:     width / height,
	}
}

func testProfile(t testing.TB) *Profile {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 1))
	b := NewBuilder("cifar<&>", 2, "validation set", testClasses)
	for range 20000 {
		b.Add(world{}.draw(rng))
	}
	return b.Profile()
}

func newMonitor(t testing.TB, p *Profile, opts Options) *Monitor {
	t.Helper()
	m, err := New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMonitorNoFalseAlarms(t *testing.T) {
	p := testProfile(t)
	m := newMonitor(t, p, Options{})
	rng := rand.New(rand.NewPCG(2, 2))
	const windows = 20
	alarms := 0
	for w := range windows {
		for range DefaultWindow { // a fresh, non-overlapping window
			m.Add(world{}.draw(rng))
		}
		r := m.Check()
		if r.Window != DefaultWindow || r.Seen != (w+1)*DefaultWindow {
			t.Fatalf("window %d: Window %d Seen %d", w, r.Window, r.Seen)
		}
		if len(r.Tests) != 9 { // chi2, class psi, 6 KS, confidence psi
			t.Fatalf("got %d tests: %+v", len(r.Tests), r.Tests)
		}
		for _, tt := range r.Tests {
			if strings.HasSuffix(tt.Name, "_psi") && tt.Statistic > PSIStable {
				t.Errorf("window %d: %s = %v on unchanged traffic", w, tt.Name, tt.Statistic)
			}
		}
		if r.Drift {
			alarms++
			t.Logf("window %d false alarm: %s", w, r.Reason)
		} else if r.Reason != "no drift" {
			t.Errorf("window %d: reason %q", w, r.Reason)
		}
	}
	if alarms > 1 {
		t.Errorf("%d of %d unchanged windows alarmed, want at most 1", alarms, windows)
	}
}

func TestMonitorDetectsShift(t *testing.T) {
	p := testProfile(t)
	oneAtHalf := slices.Clone(baseClassP)
	for i := range oneAtHalf {
		oneAtHalf[i] *= 0.5 / (1 - baseClassP[3])
	}
	oneAtHalf[3] = 0.5
	tests := []struct {
		name  string
		world world
		want  []string // must alarm
		quiet []string // must not
	}{
		{"darker", world{brightShift: -0.1}, []string{"brightness_ks"}, []string{"class_chi2", "confidence_ks", "width_ks"}},
		{"class mix", world{classP: oneAtHalf}, []string{"class_chi2", "class_psi"}, []string{"brightness_ks", "confidence_ks"}},
		{"less confident", world{confPower: 2}, []string{"confidence_ks", "confidence_psi"}, []string{"class_chi2", "brightness_ks"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMonitor(t, p, Options{})
			rng := rand.New(rand.NewPCG(10, uint64(i)))
			for range DefaultWindow {
				m.Add(tt.world.draw(rng))
			}
			r := m.Check()
			if !r.Drift || !strings.HasPrefix(r.Reason, "drift: ") {
				t.Fatalf("no alarm: %q", r.Reason)
			}
			for _, name := range tt.want {
				tst := findTest(t, r, name)
				if !tst.Drift {
					t.Errorf("%s did not alarm: %+v", name, tst)
				}
				if !strings.Contains(r.Reason, name) {
					t.Errorf("reason %q does not name %s", r.Reason, name)
				}
			}
			for _, name := range tt.quiet {
				if tst := findTest(t, r, name); tst.Drift {
					t.Errorf("%s alarmed on a shift it should not see: %+v", name, tst)
				}
			}
		})
	}
}

func findTest(t *testing.T, r Report, name string) Test {
	t.Helper()
	for _, tt := range r.Tests {
		if tt.Name == name {
			return tt
		}
	}
	t.Fatalf("no test %q in %+v", name, r.Tests)
	return Test{}
}

func TestMonitorThresholds(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{})
	rng := rand.New(rand.NewPCG(3, 3))
	for range 300 {
		m.Add(world{}.draw(rng))
	}
	r := m.Check()
	nP := 0
	for _, tt := range r.Tests {
		if !math.IsNaN(tt.PValue) {
			nP++
		}
	}
	if nP != 7 {
		t.Fatalf("%d p-value tests, want 7", nP)
	}
	for _, tt := range r.Tests {
		want := DefaultAlpha / 7 // Bonferroni
		if strings.HasSuffix(tt.Name, "_psi") {
			want = PSIMajor
			if !math.IsNaN(tt.PValue) {
				t.Errorf("%s p = %v, want NaN", tt.Name, tt.PValue)
			}
		}
		if !near(tt.Threshold, want, 1e-12) {
			t.Errorf("%s threshold = %v, want %v", tt.Name, tt.Threshold, want)
		}
	}
}

func TestMonitorWarmUp(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{})
	rng := rand.New(rand.NewPCG(4, 4))
	shifted := world{brightShift: -0.1}
	for range DefaultMinSamples - 1 {
		m.Add(shifted.draw(rng))
	}
	r := m.Check()
	if r.Drift || !strings.Contains(r.Reason, "warming up") {
		t.Errorf("below MinSamples: drift %v, reason %q", r.Drift, r.Reason)
	}
	for _, tt := range r.Tests {
		if tt.Drift {
			t.Errorf("%s alarmed while warming up", tt.Name)
		}
	}
	if findTest(t, r, "brightness_ks").PValue > 1e-6 {
		t.Error("the shift should already be visible in the p-value")
	}
	m.Add(shifted.draw(rng))
	if r := m.Check(); !r.Drift || r.Window != DefaultMinSamples {
		t.Errorf("at MinSamples: drift %v, window %d, reason %q", r.Drift, r.Window, r.Reason)
	}

	empty := newMonitor(t, testProfile(t), Options{}).Check()
	if empty.Drift || empty.Window != 0 || !strings.Contains(empty.Reason, "warming up") {
		t.Errorf("empty monitor: %+v", empty)
	}
}

func TestMonitorRing(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{Window: 5, MinSamples: 10})
	if got := m.Options().MinSamples; got != 5 {
		t.Errorf("MinSamples = %d, want clamped to the window, 5", got)
	}
	for i := range 8 {
		m.Add(Observation{Class: i})
	}
	obs, seen := m.snapshot()
	var classes []int
	for _, o := range obs {
		classes = append(classes, o.Class)
	}
	if want := []int{3, 4, 5, 6, 7}; !slices.Equal(classes, want) || seen != 8 {
		t.Errorf("window = %v seen %d, want %v seen 8", classes, seen, want)
	}
	m.Reset()
	if r := m.Check(); r.Window != 0 || r.Seen != 0 {
		t.Errorf("after Reset: window %d seen %d", r.Window, r.Seen)
	}
}

func TestMonitorOutOfRangeClass(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{})
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range DefaultWindow {
		o := world{}.draw(rng)
		switch i % 10 {
		case 0:
			o.Class = 12 // a class the reference has no slot for
		case 5:
			o.Class = -1 // unknown: left out of the class tests
		}
		m.Add(o)
	}
	r := m.Check()
	if len(r.Live.ClassFreq) != len(testClasses)+1 || !near(r.Live.ClassFreq[len(testClasses)], 1.0/9, 1e-12) {
		t.Errorf("live class freq = %v, want an 11th entry of 100/900", r.Live.ClassFreq)
	}
	if !findTest(t, r, "class_chi2").Drift {
		t.Errorf("10%% unknown classes not flagged: %s", r.Reason)
	}
}

func TestMonitorAddAllocs(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{})
	o := Observation{Class: 1, Confidence: 0.9, Brightness: 0.3}
	if n := testing.AllocsPerRun(5000, func() { m.Add(o) }); n != 0 {
		t.Errorf("Add allocates %v times, want 0", n)
	}
}

func TestMonitorConcurrent(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{Window: 300})
	const writers, each = 4, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(6, uint64(w)))
			for range each {
				m.Add(world{}.draw(rng))
			}
		})
	}
	done := make(chan struct{})
	var checker sync.WaitGroup
	for range 2 {
		checker.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if r := m.Check(); r.Window > 300 {
					t.Errorf("window %d > 300", r.Window)
				}
			}
		})
	}
	wg.Wait()
	close(done)
	checker.Wait()
	if r := m.Check(); r.Seen != writers*each || r.Window != 300 {
		t.Errorf("seen %d window %d, want %d and 300", r.Seen, r.Window, writers*each)
	}
}

func TestReportJSON(t *testing.T) {
	m := newMonitor(t, testProfile(t), Options{})
	rng := rand.New(rand.NewPCG(7, 7))
	for range 500 {
		m.Add(world{}.draw(rng))
	}
	r := m.Check()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"name":"class_psi","statistic":`) || !strings.Contains(string(b), `"p_value":null`) {
		t.Errorf("unexpected JSON: %.300s", b)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Tests) != len(r.Tests) {
		t.Fatalf("%d tests back, want %d", len(back.Tests), len(r.Tests))
	}
	for i, tt := range back.Tests {
		if tt.Name != r.Tests[i].Name || !near(tt.PValue, r.Tests[i].PValue, 0) || tt.Statistic != r.Tests[i].Statistic {
			t.Errorf("test %d: %+v, want %+v", i, tt, r.Tests[i])
		}
	}
}

func TestRegistry(t *testing.T) {
	reg := NewRegistry(Options{Window: 50})
	p := testProfile(t)
	q := *p
	q.Version = 1
	r := q
	r.Model = "alpha"
	for _, prof := range []*Profile{p, &q, &r} {
		if _, err := reg.Register(prof); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Register(nil); err == nil {
		t.Error("nil profile accepted")
	}
	if m := reg.Get(p.Model, 2); m == nil || m.Profile() != p || m.Options().Window != 50 {
		t.Errorf("Get = %v", m)
	}
	if reg.Get(p.Model, 9) != nil {
		t.Error("Get of an unknown version returned a monitor")
	}
	var got []string
	for _, m := range reg.Monitors() {
		got = append(got, m.Profile().Model+"/"+string(rune('0'+m.Profile().Version)))
	}
	if want := []string{"alpha/1", "cifar<&>/1", "cifar<&>/2"}; !slices.Equal(got, want) {
		t.Errorf("Monitors = %v, want %v", got, want)
	}
	reg.Remove("alpha", 1)
	if reg.Get("alpha", 1) != nil || len(reg.Monitors()) != 2 {
		t.Error("Remove did not remove")
	}
}

func BenchmarkAdd(b *testing.B) {
	m := newMonitor(b, testProfile(b), Options{})
	o := Observation{Class: 1}
	for b.Loop() {
		m.Add(o)
	}
}

func BenchmarkCheck(b *testing.B) {
	m := newMonitor(b, testProfile(b), Options{})
	rng := rand.New(rand.NewPCG(8, 8))
	for range DefaultWindow {
		m.Add(world{}.draw(rng))
	}
	for b.Loop() {
		m.Check()
	}
}

// A small reference set is itself noisy: the class test must account for
// that (two-sample scaling) or it alarms on unchanged traffic.
func TestMonitorSmallReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	b := NewBuilder("small", 1, "300 images", testClasses)
	for range 300 {
		b.Add(world{}.draw(rng))
	}
	m := newMonitor(t, b.Profile(), Options{})
	const windows = 20
	alarms := 0
	for range windows {
		for range DefaultWindow {
			m.Add(world{}.draw(rng))
		}
		if r := m.Check(); r.Drift {
			alarms++
			t.Logf("false alarm: %s", r.Reason)
		}
	}
	if alarms > 1 {
		t.Errorf("%d of %d unchanged windows alarmed with a 300-image reference", alarms, windows)
	}
}
