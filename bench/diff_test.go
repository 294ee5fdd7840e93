package bench

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// dstep is a closed-loop raw step at concurrency c with the given
// images/s and p99.
func dstep(c int, ips, p99 float64) Step {
	return Step{Target: TargetRaw, Model: "m", Mode: ModeConcurrency, Concurrency: c, BatchSize: 1,
		ImagesPerSec: ips, Latency: Latency{P99: p99}}
}

func key(c int) string { return dstep(c, 0, 0).Key() }

func TestDiff(t *testing.T) {
	tests := []struct {
		name        string
		old, new    []Step
		opt         DiffOptions
		wantRegs    []Regression
		wantMissing []string
	}{
		{"identical", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 100, 10)}, DiffOptions{}, nil, nil},
		{"drop within default 10%", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 91, 10)}, DiffOptions{}, nil, nil},
		{"drop exactly 10% is not beyond", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 90, 10)}, DiffOptions{}, nil, nil},
		{"drop past default", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 85, 10)}, DiffOptions{},
			[]Regression{{key(1), MetricThroughput, 100, 85, -0.15}}, nil},
		{"custom drop threshold", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 96, 10)}, DiffOptions{ThroughputDrop: 0.03},
			[]Regression{{key(1), MetricThroughput, 100, 96, -0.04}}, nil},
		{"throughput rise is fine", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 300, 10)}, DiffOptions{}, nil, nil},
		{"p99 rise within default 20%", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 100, 11.9)}, DiffOptions{}, nil, nil},
		{"p99 rise past default", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 100, 13)}, DiffOptions{},
			[]Regression{{key(1), MetricP99, 10, 13, 0.3}}, nil},
		{"custom p99 threshold", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 100, 13)}, DiffOptions{P99Rise: 0.5}, nil, nil},
		{"p99 fall is fine", []Step{dstep(1, 100, 10)}, []Step{dstep(1, 100, 2)}, DiffOptions{}, nil, nil},
		{"zero old is not judged", []Step{dstep(1, 0, 0)}, []Step{dstep(1, 0, 50)}, DiffOptions{}, nil, nil},
		{"both metrics, sorted by key then metric",
			[]Step{dstep(8, 100, 10), dstep(16, 100, 10), dstep(2, 100, 10)},
			[]Step{dstep(2, 50, 20), dstep(8, 100, 10), dstep(16, 10, 10)},
			DiffOptions{},
			[]Regression{
				{key(16), MetricThroughput, 100, 10, -0.9},
				{key(2), MetricP99, 10, 20, 1},
				{key(2), MetricThroughput, 100, 50, -0.5},
			}, nil},
		{"missing and added keys",
			[]Step{dstep(4, 100, 10), dstep(1, 100, 10), dstep(2, 100, 10)},
			[]Step{dstep(1, 100, 10), dstep(32, 1, 1000)},
			DiffOptions{}, nil, []string{key(2), key(4)}},
		{"steps differing only in mode do not match",
			[]Step{dstep(1, 100, 10)},
			[]Step{{Target: TargetRaw, Model: "m", Mode: ModeRate, Rate: 1, Arrivals: "constant", BatchSize: 1, ImagesPerSec: 1}},
			DiffOptions{}, nil, []string{key(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			regs, missing := Diff(&Results{Steps: tt.old}, &Results{Steps: tt.new}, tt.opt)
			if !regsEqual(regs, tt.wantRegs) {
				t.Errorf("regressions = %+v, want %+v", regs, tt.wantRegs)
			}
			if !reflect.DeepEqual(missing, tt.wantMissing) {
				t.Errorf("missing = %q, want %q", missing, tt.wantMissing)
			}
		})
	}
}

// regsEqual compares Change approximately: it is a computed ratio.
func regsEqual(a, b []Regression) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Key != y.Key || x.Metric != y.Metric || x.Old != y.Old || x.New != y.New || math.Abs(x.Change-y.Change) > 1e-9 {
			return false
		}
	}
	return true
}

func TestWriteDiff(t *testing.T) {
	tests := []struct {
		name          string
		old, new      []Step
		wantRegressed bool
		wantLines     []string // substrings, each on some line, in order
		notWant       []string
		unmarked      []string // keys whose rows must not say REGRESSED
	}{
		{"no change",
			[]Step{dstep(1, 100, 10)}, []Step{dstep(1, 100, 10)}, false,
			[]string{"images/s", key(1) + " 100.0 → 100.0 +0.0% 10.00 → 10.00 +0.0%"},
			[]string{"REGRESSED", "missing"}, nil},
		{"regressed throughput",
			[]Step{dstep(1, 200, 10)}, []Step{dstep(1, 100, 10)}, true,
			[]string{"200.0 → 100.0 -50.0%", "REGRESSED"}, nil, nil},
		{"regressed p99 only on its row",
			[]Step{dstep(1, 100, 10), dstep(2, 100, 10)}, []Step{dstep(1, 100, 10), dstep(2, 100, 150)}, true,
			[]string{key(1), key(2), "10.00 → 150.0", "+1400.0%", "REGRESSED"}, nil, []string{key(1)}},
		{"zero old prints n/a",
			[]Step{dstep(1, 0, 0)}, []Step{dstep(1, 5, 5)}, false,
			[]string{"n/a"}, []string{"REGRESSED"}, nil},
		{"missing listed after the table",
			[]Step{dstep(1, 100, 10), dstep(3, 100, 10)}, []Step{dstep(1, 100, 10)}, false,
			[]string{key(1), "missing in new: " + key(3)}, []string{"REGRESSED"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			regressed, err := WriteDiff(&buf, &Results{Steps: tt.old}, &Results{Steps: tt.new}, DiffOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if regressed != tt.wantRegressed {
				t.Errorf("regressed = %v, want %v", regressed, tt.wantRegressed)
			}
			out := buf.String()
			// Column widths depend on the header; match with spaces collapsed.
			rest := strings.Join(strings.Fields(out), " ")
			for _, w := range tt.wantLines {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("output lacks %q (in order):\n%s", w, out)
					break
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tt.notWant {
				if strings.Contains(out, n) {
					t.Errorf("output has %q:\n%s", n, out)
				}
			}
			for line := range strings.Lines(out) {
				for _, k := range tt.unmarked {
					if strings.HasPrefix(line, k+" ") && strings.Contains(line, "REGRESSED") {
						t.Errorf("unregressed step marked: %q", line)
					}
				}
			}
			if regressed {
				// The mark must sit on the regressed row, not elsewhere.
				for line := range strings.Lines(out) {
					if strings.Contains(line, "REGRESSED") && !strings.Contains(line, "→") {
						t.Errorf("REGRESSED outside a step row: %q", line)
					}
				}
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWritersReportErrors(t *testing.T) {
	r := &Results{Steps: []Step{dstep(1, 100, 10)}}
	missing := &Results{Steps: []Step{dstep(1, 100, 10), dstep(2, 1, 1)}}
	tests := []struct {
		name  string
		write func() error
	}{
		{"WriteDiff", func() error { _, err := WriteDiff(failWriter{}, r, r, DiffOptions{}); return err }},
		{"WriteDiff missing", func() error { _, err := WriteDiff(failWriter{}, missing, r, DiffOptions{}); return err }},
		{"WriteTable", func() error { return WriteTable(failWriter{}, r.Steps) }},
		{"WriteComparisons", func() error { return WriteComparisons(failWriter{}, []Comparison{{Name: "x"}}) }},
		{"WriteSVG", func() error { return WriteSVG(failWriter{}, r) }},
		{"WriteSVG empty", func() error { return WriteSVG(failWriter{}, &Results{}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.write(); err == nil {
				t.Error("write error was swallowed")
			}
		})
	}
}
