package drift

import (
	"math"
	"slices"
	"sort"
)

// MinExpected is the smallest expected count a chi-square category may
// have; smaller ones are pooled (Cochran's rule of thumb), because the
// chi-square approximation is poor for tiny expected counts.
const MinExpected = 5

// DefaultFloor is the proportion given to empty bins by PSI and to zero
// reference proportions by ChiSquare, so neither divides by zero.
const DefaultFloor = 1e-4

// PSI rule-of-thumb thresholds: below PSIStable the population is stable,
// up to PSIMajor the shift is moderate, above it the shift is major.
const (
	PSIStable = 0.1
	PSIMajor  = 0.25
)

// ChiSquare is Pearson's chi-square goodness-of-fit test of observed counts
// against reference proportions, with zero proportions floored to
// DefaultFloor. See ChiSquareWithFloor.
func ChiSquare(observed []float64, expectedProportions []float64) (stat float64, df int, p float64) {
	return ChiSquareWithFloor(observed, expectedProportions, DefaultFloor)
}

// ChiSquareWithFloor is ChiSquare with an explicit floor for reference
// proportions; 0.5/N_ref (half an observation) is the natural choice when the
// reference count is known. Missing entries of the shorter slice count as 0.
//
// Proportions are clamped to at least floor and renormalised, so a class the
// reference never saw has a small positive expected count instead of giving
// +Inf. Categories with expected count < MinExpected are then pooled into one
// category; if that pool is still below MinExpected it joins the smallest
// remaining category. df is the number of categories left minus one; with
// fewer than two categories there is nothing to test and (0, 0, 1) is
// returned.
func ChiSquareWithFloor(observed, expectedProportions []float64, floor float64) (stat float64, df int, p float64) {
	obs, exp := PoolCells(observed, expectedProportions, floor)
	if len(obs) < 2 {
		return 0, 0, 1
	}
	for i := range obs {
		d := obs[i] - exp[i]
		stat += d * d / exp[i]
	}
	df = len(obs) - 1
	return stat, df, ChiSquareSF(stat, df)
}

// PoolCells returns the observed and expected counts that
// ChiSquareWithFloor tests: proportions floored and renormalised, then
// categories with expected count < MinExpected pooled. Negative or NaN
// inputs count as 0. It returns nothing when there are no observations.
func PoolCells(observed, expectedProportions []float64, floor float64) (obs, exp []float64) {
	k := max(len(observed), len(expectedProportions))
	o := make([]float64, k)
	prop := make([]float64, k)
	n, sum := 0.0, 0.0
	for i := range k {
		if i < len(observed) && observed[i] > 0 {
			o[i] = observed[i]
			n += o[i]
		}
		if i < len(expectedProportions) && expectedProportions[i] > 0 {
			prop[i] = expectedProportions[i]
			sum += prop[i]
		}
	}
	if n == 0 || math.IsInf(n, 0) {
		return nil, nil
	}
	if !(floor > 0) {
		floor = 0
	}
	total := 0.0
	for i := range prop {
		if sum > 0 {
			prop[i] /= sum
		}
		prop[i] = max(prop[i], floor)
		total += prop[i]
	}
	if total == 0 { // no reference information at all: uniform
		for i := range prop {
			prop[i] = 1
		}
		total = float64(k)
	}

	obs = make([]float64, 0, k)
	exp = make([]float64, 0, k)
	var poolO, poolE float64
	pooled := false
	for i := range k {
		e := n * prop[i] / total
		if e < MinExpected {
			poolO += o[i]
			poolE += e
			pooled = true
			continue
		}
		obs = append(obs, o[i])
		exp = append(exp, e)
	}
	if pooled {
		if poolE >= MinExpected || len(obs) == 0 {
			obs = append(obs, poolO)
			exp = append(exp, poolE)
		} else {
			s := 0
			for i := range exp {
				if exp[i] < exp[s] {
					s = i
				}
			}
			obs[s] += poolO
			exp[s] += poolE
		}
	}
	return obs, exp
}

// ChiSquareSF is the survival function P(X > x) of the chi-square
// distribution with df degrees of freedom, Q(df/2, x/2).
func ChiSquareSF(x float64, df int) float64 {
	if df <= 0 || math.IsNaN(x) {
		return math.NaN()
	}
	if x <= 0 {
		return 1
	}
	return GammaQ(float64(df)/2, x/2)
}

const (
	gammaEps   = 1e-15
	gammaFPMin = 1e-300
	gammaIter  = 100000 // the series needs O(sqrt(a)) terms; large a = many classes
)

// GammaQ is the regularised upper incomplete gamma function
// Q(a, x) = Γ(a, x)/Γ(a), computed as in Numerical Recipes (gammq): the
// series for P when x < a+1, else Lentz's continued fraction for Q.
func GammaQ(a, x float64) float64 {
	switch {
	case math.IsNaN(a) || math.IsNaN(x) || a <= 0 || x < 0:
		return math.NaN()
	case x == 0:
		return 1
	case math.IsInf(x, 1):
		return 0
	case x < a+1:
		return max(0, 1-gammaSeries(a, x))
	default:
		return gammaContinuedFraction(a, x)
	}
}

// gammaPrefix is x^a e^-x / Γ(a), in logs to avoid overflow.
func gammaPrefix(a, x float64) float64 {
	lg, _ := math.Lgamma(a)
	return math.Exp(a*math.Log(x) - x - lg)
}

// gammaSeries is P(a, x) by its power series (NR gser).
func gammaSeries(a, x float64) float64 {
	ap, del := a, 1/a
	sum := del
	for range gammaIter {
		ap++
		del *= x / ap
		sum += del
		if math.Abs(del) < math.Abs(sum)*gammaEps {
			break
		}
	}
	return sum * gammaPrefix(a, x)
}

// gammaContinuedFraction is Q(a, x) by modified Lentz (NR gcf).
func gammaContinuedFraction(a, x float64) float64 {
	b := x + 1 - a
	c := 1 / gammaFPMin
	d := 1 / b
	h := d
	for i := 1; i <= gammaIter; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < gammaFPMin {
			d = gammaFPMin
		}
		c = b + an/c
		if math.Abs(c) < gammaFPMin {
			c = gammaFPMin
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < gammaEps {
			break
		}
	}
	return gammaPrefix(a, x) * h
}

// KS is the two-sample Kolmogorov–Smirnov test. d is the largest distance
// between the two empirical CDFs; p is the asymptotic p-value
// KolmogorovQ((√ne + 0.12 + 0.11/√ne)·d) with ne = n·m/(n+m) (Numerical
// Recipes' small-sample correction). NaNs are ignored. An empty sample
// gives (0, 1): no evidence of a difference. For heavily tied (discrete)
// data the p-value is conservative.
func KS(a, b []float64) (d, p float64) {
	x, y := sortedFinite(a), sortedFinite(b)
	if len(x) == 0 || len(y) == 0 {
		return 0, 1
	}
	d = ksStat(x, y)
	n, m := float64(len(x)), float64(len(y))
	en := math.Sqrt(n * m / (n + m))
	return d, KolmogorovQ((en + 0.12 + 0.11/en) * d)
}

// ksStat needs sorted inputs. All copies of a tied value are stepped over
// in both samples before the CDFs are compared, so ties never inflate d.
func ksStat(x, y []float64) float64 {
	n, m := float64(len(x)), float64(len(y))
	var i, j int
	d := 0.0
	for i < len(x) && j < len(y) {
		v := min(x[i], y[j])
		for i < len(x) && x[i] == v {
			i++
		}
		for j < len(y) && y[j] == v {
			j++
		}
		d = max(d, math.Abs(float64(i)/n-float64(j)/m))
	}
	return d // once one sample is exhausted the distance only shrinks
}

func sortedFinite(v []float64) []float64 {
	out := make([]float64, 0, len(v))
	for _, x := range v {
		if !math.IsNaN(x) {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// KolmogorovQ is the survival function of the Kolmogorov distribution,
// Q(λ) = 2 Σ_{k≥1} (-1)^{k-1} exp(-2k²λ²). Below λ = 1.18 that alternating
// series converges slowly, so the dual (Jacobi theta) form is used there,
// as in Numerical Recipes 3rd ed. (KSdist); both are accurate to ~1e-12.
func KolmogorovQ(lambda float64) float64 {
	switch {
	case math.IsNaN(lambda):
		return math.NaN()
	case lambda <= 0:
		return 1
	case lambda < 1.18:
		y := math.Exp(-math.Pi * math.Pi / (8 * lambda * lambda))
		y8 := math.Pow(y, 8)
		p := math.Sqrt(2*math.Pi) / lambda * y * (1 + y8*(1+y8*y8*(1+y8*y8*y8)))
		return min(1, max(0, 1-p))
	default:
		x := math.Exp(-2 * lambda * lambda)
		x3 := x * x * x
		q := 2 * x * (1 - x3*(1-x3*x*x*(1-x3*x3*x)))
		return min(1, max(0, q))
	}
}

// PSI is the population stability index Σ (live−ref)·ln(live/ref) over
// bins, with empty bins floored to DefaultFloor. Missing entries of the
// shorter slice count as 0. See PSIStable and PSIMajor for thresholds.
func PSI(refProportions, liveProportions []float64) float64 {
	k := max(len(refProportions), len(liveProportions))
	psi := 0.0
	for i := range k {
		r, l := DefaultFloor, DefaultFloor
		if i < len(refProportions) && refProportions[i] > r {
			r = refProportions[i]
		}
		if i < len(liveProportions) && liveProportions[i] > l {
			l = liveProportions[i]
		}
		psi += (l - r) * math.Log(l/r)
	}
	return psi
}

// Histogram returns the proportion of values in each of the len(edges)+1
// bins (-Inf, e0), [e0, e1), …, [e_last, +Inf); edges must be ascending.
// NaNs are ignored; with no values every proportion is 0.
func Histogram(values []float64, edges []float64) []float64 {
	h := make([]float64, len(edges)+1)
	n := 0
	for _, v := range values {
		if math.IsNaN(v) {
			continue
		}
		h[sort.Search(len(edges), func(j int) bool { return edges[j] > v })]++
		n++
	}
	if n > 0 {
		for i := range h {
			h[i] /= float64(n)
		}
	}
	return h
}

// QuantileEdges returns the interior cut points that split values into
// bins groups of (nearly) equal size, e.g. deciles for bins = 10, for use
// with Histogram. Cut i is the order statistic at ⌊n·i/bins⌋, so distinct
// values split exactly; duplicate cuts (tied data) are dropped, which
// yields fewer bins rather than empty ones.
func QuantileEdges(values []float64, bins int) []float64 {
	s := sortedFinite(values)
	if len(s) == 0 || bins < 2 {
		return nil
	}
	edges := make([]float64, 0, bins-1)
	for i := 1; i < bins; i++ {
		e := s[min(len(s)-1, len(s)*i/bins)]
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	// A cut at the minimum would leave the first bin empty.
	if len(edges) > 0 && edges[0] == s[0] {
		edges = edges[1:]
	}
	return edges
}
