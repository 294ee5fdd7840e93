package drift

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestBuilder(t *testing.T) {
	b := NewBuilder("resnet", 3, "validation set", []string{"cat", "dog", "fox"})
	for i := range 5000 {
		o := Observation{
			Class: i % 2, Confidence: float64(i) / 5000,
			Brightness: float64(4999-i) / 5000, Contrast: math.NaN(),
			Width: 640, Height: 480, Aspect: 640.0 / 480,
		}
		if i == 0 {
			o.Class = -1 // unknown: counted in Count, not in ClassFreq
		}
		b.AddSoftmax(o, []float32{0.5, 0.25, 0.25})
	}
	p := b.Profile()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Count != 5000 || p.Model != "resnet" || p.Version != 3 || p.Source != "validation set" {
		t.Errorf("header = %q v%d %q count %d", p.Model, p.Version, p.Source, p.Count)
	}
	if want := []float64{2499.0 / 4999, 2500.0 / 4999, 0}; !equal(p.ClassFreq, want) {
		t.Errorf("ClassFreq = %v, want %v", p.ClassFreq, want)
	}
	if want := []float64{0.5, 0.25, 0.25}; !equal(p.MeanSoftmax, want) {
		t.Errorf("MeanSoftmax = %v, want %v", p.MeanSoftmax, want)
	}
	conf := p.Features[FeatureConfidence]
	if len(conf) != MaxFeatureSample || !slices.IsSorted(conf) || conf[0] != 0 || conf[len(conf)-1] != 4999.0/5000 {
		t.Errorf("confidence sample: len %d, sorted %v, ends %v..%v", len(conf), slices.IsSorted(conf), conf[0], conf[len(conf)-1])
	}
	// Evenly spaced order statistics keep the median.
	if med := conf[len(conf)/2]; math.Abs(med-0.5) > 0.001 {
		t.Errorf("subsample median = %v, want ≈0.5", med)
	}
	if !slices.IsSorted(p.Features[FeatureBrightness]) {
		t.Error("brightness sample not sorted")
	}
	if _, ok := p.Features[FeatureContrast]; ok {
		t.Error("all-NaN feature should be absent")
	}
}

func TestProfileRoundTrip(t *testing.T) {
	p := testProfile(t)
	path := filepath.Join(t.TempDir(), ReferenceFile)
	if err := p.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	q, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Created.Equal(p.Created) {
		t.Errorf("Created = %v, want %v", q.Created, p.Created)
	}
	q.Created = p.Created
	if !reflect.DeepEqual(p, q) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", q, p)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only %s", len(entries), ReferenceFile)
	}
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct{ name, json, wantErr string }{
		{"ok", `{"model":"m","version":1,"created":"2024-01-02T03:04:05Z","source":"s","count":2,"class_freq":[0.5,0.5],"features":{"width":[1,2]}}`, ""},
		{"unknown field", `{"model":"m","extra":1}`, "unknown field"},
		{"trailing", `{"model":"m"} {}`, "trailing"},
		{"not proportions", `{"model":"m","class_freq":[0.5,0.6]}`, "sums to"},
		{"negative", `{"model":"m","class_freq":[-0.5,1.5]}`, "not a proportion"},
		{"unknown feature", `{"model":"m","features":{"hue":[1]}}`, "unknown feature"},
		{"unsorted", `{"model":"m","features":{"width":[2,1]}}`, "not sorted"},
		{"negative count", `{"model":"m","count":-1}`, "count"},
		{"bad type", `{"model":1}`, "decoding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tt.json))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
