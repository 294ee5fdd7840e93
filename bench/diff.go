package bench

import (
	"cmp"
	"fmt"
	"io"
	"slices"
)

// Regression metrics.
const (
	MetricThroughput = "throughput"
	MetricP99        = "p99"
)

// Regression is one metric of one step that got worse than allowed.
type Regression struct {
	Key    string
	Metric string // MetricThroughput or MetricP99
	Old    float64
	New    float64
	Change float64 // relative: (New-Old)/Old, e.g. -0.15
}

// DiffOptions are the relative changes tolerated before a step counts as
// regressed. Zero fields take the defaults.
type DiffOptions struct {
	ThroughputDrop float64 // images/s fall; default 0.10
	P99Rise        float64 // p99 latency rise; default 0.20
}

func (o DiffOptions) withDefaults() DiffOptions {
	if o.ThroughputDrop == 0 {
		o.ThroughputDrop = 0.10
	}
	if o.P99Rise == 0 {
		o.P99Rise = 0.20
	}
	return o
}

// stepPair is a step measured in both files.
type stepPair struct {
	key      string
	old, new Step
}

// pairSteps matches steps by Key, sorted by key; keys only in old are
// returned as missing. A key repeated in a file keeps its first step.
func pairSteps(old, new *Results) (pairs []stepPair, missing []string) {
	byKey := make(map[string]Step, len(new.Steps))
	for _, s := range new.Steps {
		if _, dup := byKey[s.Key()]; !dup {
			byKey[s.Key()] = s
		}
	}
	seen := make(map[string]bool, len(old.Steps))
	for _, o := range old.Steps {
		k := o.Key()
		if seen[k] {
			continue
		}
		seen[k] = true
		if n, ok := byKey[k]; ok {
			pairs = append(pairs, stepPair{k, o, n})
		} else {
			missing = append(missing, k)
		}
	}
	slices.SortFunc(pairs, func(a, b stepPair) int { return cmp.Compare(a.key, b.key) })
	slices.Sort(missing)
	return pairs, missing
}

// relChange is (n-o)/o; ok is false when o is zero and no relative
// change exists.
func relChange(o, n float64) (c float64, ok bool) {
	if o == 0 {
		return 0, false
	}
	return (n - o) / o, true
}

func (p stepPair) regressions(o DiffOptions) []Regression {
	var regs []Regression
	if c, ok := relChange(p.old.ImagesPerSec, p.new.ImagesPerSec); ok && c < -o.ThroughputDrop {
		regs = append(regs, Regression{p.key, MetricThroughput, p.old.ImagesPerSec, p.new.ImagesPerSec, c})
	}
	if c, ok := relChange(p.old.Latency.P99, p.new.Latency.P99); ok && c > o.P99Rise {
		regs = append(regs, Regression{p.key, MetricP99, p.old.Latency.P99, p.new.Latency.P99, c})
	}
	return regs
}

// Diff compares the steps of two result files by Step.Key. A step whose
// images/s fell by more than o.ThroughputDrop, or whose p99 rose by more
// than o.P99Rise, is a regression; a metric that was zero in old has no
// relative change and is not judged. Keys in old but not in new are
// missing. Both are sorted by key (then metric).
func Diff(old, new *Results, o DiffOptions) (regs []Regression, missing []string) {
	o = o.withDefaults()
	pairs, missing := pairSteps(old, new)
	for _, p := range pairs {
		regs = append(regs, p.regressions(o)...)
	}
	slices.SortStableFunc(regs, func(a, b Regression) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Metric, b.Metric))
	})
	return regs, missing
}

// WriteDiff writes a table of every step in both files, old → new
// images/s and p99 with their changes and a REGRESSED mark, then the
// missing keys. regressed is true when any step regressed.
func WriteDiff(w io.Writer, old, new *Results, o DiffOptions) (regressed bool, err error) {
	o = o.withDefaults()
	pairs, missing := pairSteps(old, new)
	err = writeAligned(w, func(tw io.Writer) {
		fmt.Fprintln(tw, "step\timages/s\tchange\tp99 ms\tchange\t")
		for _, p := range pairs {
			mark := ""
			if len(p.regressions(o)) > 0 {
				mark = "REGRESSED"
				regressed = true
			}
			fmt.Fprintf(tw, "%s\t%.1f → %.1f\t%s\t%s → %s\t%s\t%s\n", p.key,
				p.old.ImagesPerSec, p.new.ImagesPerSec, pctChange(p.old.ImagesPerSec, p.new.ImagesPerSec),
				fmtMs(p.old.Latency.P99), fmtMs(p.new.Latency.P99), pctChange(p.old.Latency.P99, p.new.Latency.P99),
				mark)
		}
	})
	if err != nil {
		return regressed, err
	}
	for _, k := range missing {
		if _, err := fmt.Fprintf(w, "missing in new: %s\n", k); err != nil {
			return regressed, err
		}
	}
	return regressed, nil
}

func pctChange(o, n float64) string {
	c, ok := relChange(o, n)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f%%", 100*c)
}
