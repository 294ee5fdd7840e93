package bench

import (
	"slices"
	"testing"
)

func TestMergeRounds(t *testing.T) {
	step := func(target string, c int, ips, p50 float64) Step {
		return Step{Target: target, Model: "m", Mode: ModeConcurrency, Concurrency: c, BatchSize: 1, ImagesPerSec: ips, Latency: Latency{P50: p50}}
	}
	rounds := [][]Step{
		{step("raw", 1, 40, 25), step("http-image", 16, 35, 400)},
		{step("raw", 1, 44, 23), step("http-image", 16, 30, 450)},
		{step("raw", 1, 42, 24), step("http-image", 16, 36, 390)},
	}
	got := MergeRounds(rounds)
	if len(got) != 2 || got[0].Target != "raw" || got[1].Target != "http-image" {
		t.Fatalf("merged %+v", got)
	}
	// The median round is reported whole (its latency too), with every
	// round's images/s in order.
	if got[0].ImagesPerSec != 42 || got[0].Latency.P50 != 24 || !slices.Equal(got[0].Rounds, []float64{40, 44, 42}) {
		t.Errorf("raw: %+v", got[0])
	}
	if got[1].ImagesPerSec != 35 || got[1].Latency.P50 != 400 || !slices.Equal(got[1].Rounds, []float64{35, 30, 36}) {
		t.Errorf("image: %+v", got[1])
	}
	// One round: unchanged, no Rounds.
	if one := MergeRounds(rounds[:1]); one[0].Rounds != nil || one[0].ImagesPerSec != 40 {
		t.Errorf("single round: %+v", one[0])
	}
}

func TestMergeComparisons(t *testing.T) {
	c := func(v float64) []Comparison {
		return []Comparison{{Name: "image / raw", Of: "a", Over: "b", Value: v, Goal: 0.9}, {Name: "p50 added", Value: v / 10, Unit: "ms"}}
	}
	got := MergeComparisons([][]Comparison{c(0.91), c(0.85), c(0.93), c(0.80)})
	if len(got) != 2 || got[0].Name != "image / raw" || got[0].Goal != 0.9 || got[0].Of != "a" {
		t.Fatalf("merged %+v", got)
	}
	// Even count: the mean of the middle two.
	if got[0].Value != 0.88 || !slices.Equal(got[0].Rounds, []float64{0.91, 0.85, 0.93, 0.80}) {
		t.Errorf("ratio: %+v", got[0])
	}
	if got[1].Value != 0.088 {
		t.Errorf("latency: %v", got[1].Value)
	}
}
