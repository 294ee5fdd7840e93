package predlog

import (
	"encoding/json"
	"math"
	"testing"
)

// Scores read back to float32 precision (the comparison rounds want).
func TestAppendTopKRoundTrips(t *testing.T) {
	cases := []struct {
		name string
		top  []Class
		want []Class // after decoding; nil: same as top
	}{
		{"empty", nil, nil},
		{"plain", []Class{{Index: 3, Label: "cat", Score: 0.91}, {Index: 0, Label: "dog", Score: 1e-7}}, nil},
		{"escapes", []Class{{Index: 1, Label: `say "hi" \ back` + "\t\n\x01\x1f", Score: 1}}, nil},
		{"unicode", []Class{{Index: 2, Label: "Ankle boot – ß 猫 \u2028", Score: 0.5}}, nil},
		{"not finite", []Class{{Index: 4, Label: "x", Score: math.Inf(1)}, {Index: 5, Label: "y", Score: math.NaN()}},
			[]Class{{Index: 4, Label: "x", Score: math.NaN()}, {Index: 5, Label: "y", Score: math.NaN()}}},
		{"bad utf-8 and NUL", []Class{{Index: 6, Label: "a\xffb\x00c", Score: 0.25}},
			[]Class{{Index: 6, Label: "a\uFFFDbc", Score: 0.25}}},
		{"extremes", []Class{{Index: -1, Label: "", Score: math.MaxFloat32}, {Index: 1 << 40, Label: "s", Score: -math.SmallestNonzeroFloat32}}, nil},
		{"beyond float32", []Class{{Index: 9, Label: "r", Score: math.MaxFloat64}, {Index: 10, Label: "s", Score: 1e-300}},
			[]Class{{Index: 9, Label: "r", Score: math.NaN()}, {Index: 10, Label: "s", Score: 0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := appendTopK([]byte("prefix"), c.top)
			if string(b[:6]) != "prefix" {
				t.Fatalf("the prefix was overwritten: %q", b)
			}
			b = b[6:]
			if !json.Valid(b) {
				t.Fatalf("not JSON: %s", b)
			}
			got, err := decodeTopK(b)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if want == nil {
				want = c.top
			}
			if len(got) != len(want) {
				t.Fatalf("decoded %v, want %v", got, want)
			}
			for i := range want {
				g, w := got[i], want[i]
				if g.Index != w.Index || g.Label != w.Label || !(g.Score == float64(float32(w.Score)) || math.IsNaN(g.Score) && math.IsNaN(w.Score)) {
					t.Errorf("class %d: decoded %+v, want %+v (JSON %s)", i, g, w, b)
				}
			}
		})
	}
}
