package drift

import (
	"math"
	"testing"
)

func near(a, b, tol float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= tol*max(1, math.Abs(b))
}

func TestChiSquareSF(t *testing.T) {
	// Critical values are standard table entries (chi2.ppf(0.95, df));
	// the rest are closed forms: df=1 sf = erfc(√(x/2)); df=2 sf = e^(−x/2).
	tests := []struct {
		x    float64
		df   int
		want float64
	}{
		{3.841458820694124, 1, 0.05},
		{3.84, 1, 0.05004352124870509}, // erfc(√1.92)
		{18.307038053275146, 10, 0.05},
		{0, 1, 1},
		{0, 7, 1},
		{0, 100, 1},
		{-1, 3, 1},
		{2, 2, math.Exp(-1)},
		{4, 1, 0.045500263896358396}, // erfc(√2)
		{5.5, 2, math.Exp(-2.75)},
		{2, 5, 0.8491450360846096},   // scipy.stats.chisquare doc example
		{3.5, 5, 0.6233876277495821}, // erfc(√(x/2)) + √(2x/π)e^(−x/2)(1+x/3)
		{1, 0, math.NaN()},
	}
	for _, tt := range tests {
		if got := ChiSquareSF(tt.x, tt.df); !near(got, tt.want, 1e-10) {
			t.Errorf("ChiSquareSF(%v, %d) = %v, want %v", tt.x, tt.df, got, tt.want)
		}
	}
}

// For even df = 2m, the chi-square survival function equals the Poisson
// CDF P(N ≤ m−1) with mean x/2, summed here in logs; it covers both
// branches of GammaQ and large a (many classes).
func TestChiSquareSFEvenDF(t *testing.T) {
	for _, df := range []int{2, 4, 10, 40, 200, 400} {
		for _, rel := range []float64{0.3, 0.8, 1, 1.1, 1.5, 2.5} {
			x := rel * float64(df)
			lam := x / 2
			want := 0.0
			for j := range df / 2 {
				lg, _ := math.Lgamma(float64(j) + 1)
				want += math.Exp(-lam + float64(j)*math.Log(lam) - lg)
			}
			if got := ChiSquareSF(x, df); !near(got, want, 1e-9) && math.Abs(got-want) > 1e-14 {
				t.Errorf("ChiSquareSF(%v, %d) = %v, want %v", x, df, got, want)
			}
		}
	}
	// Odd df = 1: sf = erfc(√(x/2)).
	for _, x := range []float64{0.01, 0.5, 1, 2, 5, 10, 30} {
		if got, want := ChiSquareSF(x, 1), math.Erfc(math.Sqrt(x/2)); !near(got, want, 1e-10) {
			t.Errorf("ChiSquareSF(%v, 1) = %v, want %v", x, got, want)
		}
	}
}

func TestChiSquare(t *testing.T) {
	tests := []struct {
		name     string
		obs, exp []float64
		stat     float64
		df       int
		p        float64
	}{
		// scipy.stats.chisquare docs: chisquare([16,18,16,14,12,12]) = (2.0, 0.84914503608460956).
		{"uniform", []float64{16, 18, 16, 14, 12, 12}, []float64{1, 1, 1, 1, 1, 1}, 2, 5, 0.8491450360846096},
		// ... f_exp=[16,16,16,16,16,8] → (3.5, 0.62338762774958223); proportions = f_exp/88.
		{"f_exp", []float64{16, 18, 16, 14, 12, 12}, []float64{16.0 / 88, 16.0 / 88, 16.0 / 88, 16.0 / 88, 16.0 / 88, 8.0 / 88}, 3.5, 5, 0.6233876277495821},
		// Expected [50,45,3,2]: the last two pool into (10 obs, 5 exp).
		// stat = 25/50 + 0 + 25/5 = 5.5, df 2, p = e^(−2.75).
		{"pool", []float64{45, 45, 6, 4}, []float64{0.5, 0.45, 0.03, 0.02}, 5.5, 2, math.Exp(-2.75)},
		// Expected [50,48,1,1]: pool (8, 2) < 5 joins the 48 cell → (60, 50)
		// and (40, 50): stat = 2 + 2 = 4, df 1, p = erfc(√2).
		{"pool into smallest", []float64{40, 52, 5, 3}, []float64{0.5, 0.48, 0.01, 0.01}, 4, 1, 0.045500263896358396},
		{"perfect fit", []float64{25, 25, 50}, []float64{0.25, 0.25, 0.5}, 0, 2, 1},
		{"no observations", []float64{0, 0, 0}, []float64{0.2, 0.3, 0.5}, 0, 0, 1},
		{"one category", []float64{10}, []float64{1}, 0, 0, 1},
		{"all pooled", []float64{1, 2, 1}, []float64{0.2, 0.3, 0.5}, 0, 0, 1},
		// Proportions are normalised: counts work too.
		{"weights", []float64{16, 18, 16, 14, 12, 12}, []float64{16, 16, 16, 16, 16, 8}, 3.5, 5, 0.6233876277495821},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stat, df, p := ChiSquare(tt.obs, tt.exp)
			if !near(stat, tt.stat, 1e-9) || df != tt.df || !near(p, tt.p, 1e-9) {
				t.Errorf("ChiSquare = (%v, %d, %v), want (%v, %d, %v)", stat, df, p, tt.stat, tt.df, tt.p)
			}
		})
	}
}

func TestChiSquareUnseenClass(t *testing.T) {
	// A class absent from the reference must give a finite statistic.
	stat, df, p := ChiSquare([]float64{50, 50, 10}, []float64{0.5, 0.5, 0})
	if math.IsInf(stat, 0) || math.IsNaN(stat) || df != 1 || !(p >= 0 && p <= 1) {
		t.Errorf("small unseen class: (%v, %d, %v)", stat, df, p)
	}
	// With enough data the floored cell survives pooling and dominates:
	// floor 0.5/1000 → expected 50/1.0005 for the new class.
	stat, df, p = ChiSquareWithFloor([]float64{50000, 40000, 10000}, []float64{0.5, 0.5, 0}, 0.5/1000)
	if math.IsInf(stat, 0) || df != 2 || p > 1e-100 || stat < 1e6 {
		t.Errorf("large unseen class: (%v, %d, %v)", stat, df, p)
	}
}

func TestKolmogorovQ(t *testing.T) {
	// Critical values of the Kolmogorov distribution (kstwobign.isf(α));
	// 0.5 and 1.0 from the series 2Σ(−1)^(k−1)e^(−2k²λ²) to 100 terms.
	tests := []struct{ lambda, want float64 }{
		{0, 1},
		{0.5, 0.9639452436648751},
		{1.0, 0.26999967167735456},
		{1.2238478702170825, 0.10},
		{1.3580986393225505, 0.05},
		{1.6276236115189502, 0.01},
		{10, 0},
	}
	for _, tt := range tests {
		if got := KolmogorovQ(tt.lambda); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("KolmogorovQ(%v) = %v, want %v", tt.lambda, got, tt.want)
		}
	}
	// The two branches must meet at the switch point.
	if a, b := KolmogorovQ(1.18-1e-12), KolmogorovQ(1.18); math.Abs(a-b) > 1e-9 {
		t.Errorf("discontinuity at 1.18: %v vs %v", a, b)
	}
}

func seq(from, to float64) []float64 {
	var s []float64
	for v := from; v <= to; v++ {
		s = append(s, v)
	}
	return s
}

func TestKS(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		a, b []float64
		d, p float64 // p < 0: only check p < 1e-10
	}{
		{"identical", seq(1, 10), seq(1, 10), 0, 1},
		{"disjoint", seq(1, 50), seq(51, 100), 1, -1},
		// Only the CDFs after all copies of a value count: at 1 they are
		// 2/3 and 1/3, at 2 both 1, so D = 1/3, not 2/3.
		// ne = 1.5, λ = (√1.5+0.12+0.11/√1.5)/3, Q(λ) from the series.
		{"ties", []float64{1, 1, 2}, []float64{2, 1, 2}, 1.0 / 3, 0.9762126488644777},
		// D = 0.5 at x = 2, 3 and 4; ne = 2, λ = (√2+0.12+0.11/√2)·0.5,
		// Q(λ) from the Kolmogorov series.
		{"shifted small", []float64{4, 2, 3, 1}, []float64{3, 4, 5, 6}, 0.5, 0.5344157192165071},
		// 0..99 vs 20..119: D = 0.2; ne = 50, λ = (√50+0.12+0.11/√50)·0.2.
		{"shifted 100", seq(0, 99), seq(20, 119), 0.2, 0.03137665215307253},
		{"NaN ignored", []float64{nan, 1, 2, 3, 4}, []float64{3, 4, 5, 6, nan}, 0.5, 0.5344157192165071},
		{"empty", nil, seq(1, 3), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, swap := range []bool{false, true} {
				a, b := tt.a, tt.b
				if swap {
					a, b = b, a
				}
				d, p := KS(a, b)
				okP := near(p, tt.p, 1e-9)
				if tt.p < 0 {
					okP = p < 1e-10
				}
				if !near(d, tt.d, 1e-12) || !okP {
					t.Errorf("KS(swap=%v) = (%v, %v), want (%v, %v)", swap, d, p, tt.d, tt.p)
				}
			}
		})
	}
	a := []float64{3, 1, 2}
	KS(a, []float64{0})
	if a[0] != 3 || a[1] != 1 {
		t.Error("KS modified its input")
	}
}

func TestPSI(t *testing.T) {
	tests := []struct {
		name      string
		ref, live []float64
		want      float64
	}{
		{"same", []float64{0.2, 0.3, 0.5}, []float64{0.2, 0.3, 0.5}, 0},
		// 0.25·ln2 + (−0.25)·ln(2/3) = 0.25·ln3.
		{"hand", []float64{0.25, 0.75}, []float64{0.5, 0.5}, 0.25 * math.Log(3)},
		// Empty reference bin floored at 1e-4: (0.1−1e-4)·ln(1000) + (0.5−0.6)·ln(0.5/0.6).
		{"empty bin", []float64{0.4, 0.6, 0}, []float64{0.4, 0.5, 0.1}, (0.1-1e-4)*math.Log(1000) + (-0.1)*math.Log(0.5/0.6)},
		{"both empty", []float64{0.5, 0.5, 0}, []float64{0.5, 0.5, 0}, 0},
	}
	for _, tt := range tests {
		if got := PSI(tt.ref, tt.live); !near(got, tt.want, 1e-12) {
			t.Errorf("%s: PSI = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestHistogramQuantileEdges(t *testing.T) {
	vals := seq(1, 10)
	edges := QuantileEdges(vals, 10)
	if want := seq(2, 10); !equal(edges, want) {
		t.Fatalf("QuantileEdges(1..10, 10) = %v, want %v", edges, want)
	}
	for i, p := range Histogram(vals, edges) {
		if !near(p, 0.1, 1e-12) {
			t.Errorf("decile bin %d = %v, want 0.1", i, p)
		}
	}
	tests := []struct {
		name   string
		values []float64
		edges  []float64
		want   []float64
	}{
		{"half-open", []float64{0, 1, 1.5, 2, 3}, []float64{1, 2}, []float64{0.2, 0.4, 0.4}},
		{"no edges", []float64{1, 2}, nil, []float64{1}},
		{"NaN skipped", []float64{math.NaN(), 5}, []float64{1}, []float64{0, 1}},
		{"empty", nil, []float64{1}, []float64{0, 0}},
	}
	for _, tt := range tests {
		if got := Histogram(tt.values, tt.edges); !equal(got, tt.want) {
			t.Errorf("%s: Histogram = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Ties: constant data has no interior cut, so no empty reference bin.
	if e := QuantileEdges([]float64{224, 224, 224, 224}, 10); len(e) != 0 {
		t.Errorf("constant data edges = %v, want none", e)
	}
	// 60 % zeros: the first bin takes all of them.
	z := append(make([]float64, 6), 1, 2, 3, 4)
	e := QuantileEdges(z, 10)
	if want := []float64{1, 2, 3, 4}; !equal(e, want) {
		t.Errorf("tied edges = %v, want %v", e, want)
	}
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i], 1e-12) {
			return false
		}
	}
	return true
}
