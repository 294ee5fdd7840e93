package runtime

import (
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

func TestParseSpin(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", DefaultSpin, false},
		{"ort", -1, false},
		{"0", 0, false},
		{"200us", 200 * time.Microsecond, false},
		{"2ms", 2 * time.Millisecond, false},
		{"-1us", 0, true},
		{"fast", 0, true},
		{"200", 0, true}, // a duration needs its unit
	}
	for _, tt := range tests {
		got, err := ParseSpin(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && got != tt.want) {
			t.Errorf("ParseSpin(%q) = %v, %v; want %v (error: %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

// The setting reaches the options every session is created with.
func TestSessionOptionsSpin(t *testing.T) {
	env(t)
	const allow, dur = "session.intra_op.allow_spinning", "session.intra_op.spin_duration_us"
	tests := []struct {
		spin              time.Duration
		wantAllow, wantUs string // "" = not set (ONNX Runtime's own)
	}{
		{-1, "", ""},
		{0, "0", ""},
		{DefaultSpin, "1", "200"},
		{1500 * time.Microsecond, "1", "1500"},
		{100 * time.Nanosecond, "1", "1"}, // never rounds down to 0 (= ORT's default)
	}
	for _, tt := range tests {
		opts, err := newSessionOptions(2, ort.GraphOptimizationLevelEnableAll, tt.spin)
		if err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]string{allow: tt.wantAllow, dur: tt.wantUs} {
			has, err := opts.HasSessionConfigEntry(key)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if has {
				if got, err = opts.GetSessionConfigEntry(key); err != nil {
					t.Fatal(err)
				}
			}
			if got != want {
				t.Errorf("spin %v: %s = %q, want %q", tt.spin, key, got, want)
			}
		}
		opts.Destroy()
	}
}
