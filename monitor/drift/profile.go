package drift

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"fastinfer/models"
)

// ReferenceFile is the conventional name of a model version's profile.
const ReferenceFile = "reference.json"

// MaxFeatureSample caps the reference sample kept per feature.
const MaxFeatureSample = 2000

// Feature names, as used in Profile.Features and in test names.
const (
	FeatureConfidence = "confidence"
	FeatureBrightness = "brightness"
	FeatureContrast   = "contrast"
	FeatureWidth      = "width"
	FeatureHeight     = "height"
	FeatureAspect     = "aspect"
)

const numFeatures = 6

// featureNames is in Observation.features order.
var featureNames = [numFeatures]string{
	FeatureConfidence, FeatureBrightness, FeatureContrast,
	FeatureWidth, FeatureHeight, FeatureAspect,
}

// FeatureNames returns the known feature names in report order.
func FeatureNames() []string { return featureNames[:] }

// Observation is what the server records per classified image. Use NaN for
// a feature that was not measured; it is ignored.
type Observation struct {
	Class      int     // top-1 class index; < 0 if unknown
	Confidence float64 // top-1 softmax probability
	Brightness float64 // mean luminance, 0..1
	Contrast   float64 // luminance standard deviation, 0..1
	Width      float64 // original image size in pixels
	Height     float64
	Aspect     float64 // Width / Height
}

func (o *Observation) features() [numFeatures]float64 {
	return [numFeatures]float64{o.Confidence, o.Brightness, o.Contrast, o.Width, o.Height, o.Aspect}
}

// Profile is the reference behaviour of one model version, typically built
// from its validation set, against which live traffic is compared.
type Profile struct {
	Model   string    `json:"model"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Source  string    `json:"source"` // e.g. "validation set" or an images folder
	Count   int       `json:"count"`  // observations the profile was built from

	Classes     []string  `json:"classes,omitempty"`      // labels, may be empty
	ClassFreq   []float64 `json:"class_freq,omitempty"`   // top-1 class proportions
	MeanSoftmax []float64 `json:"mean_softmax,omitempty"` // nil unless softmax vectors were given

	// Features maps a feature name to an ascending sample of its reference
	// values, at most MaxFeatureSample evenly spaced order statistics.
	Features map[string][]float64 `json:"features,omitempty"`
}

// Validate reports the first inconsistency in p, or nil.
func (p *Profile) Validate() error {
	if p.Count < 0 {
		return fmt.Errorf("drift: profile count %d < 0", p.Count)
	}
	if err := checkProportions("class_freq", p.ClassFreq); err != nil {
		return err
	}
	if err := checkProportions("mean_softmax", p.MeanSoftmax); err != nil {
		return err
	}
	for name, s := range p.Features {
		if !slices.Contains(featureNames[:], name) {
			return fmt.Errorf("drift: unknown feature %q", name)
		}
		for _, v := range s {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("drift: feature %q has a non-finite value", name)
			}
		}
		if !slices.IsSorted(s) {
			return fmt.Errorf("drift: feature %q sample is not sorted", name)
		}
	}
	return nil
}

func checkProportions(name string, v []float64) error {
	if len(v) == 0 {
		return nil
	}
	sum := 0.0
	for _, x := range v {
		if !(x >= 0 && x <= 1) {
			return fmt.Errorf("drift: %s has %v, not a proportion", name, x)
		}
		sum += x
	}
	if math.Abs(sum-1) > 1e-6 {
		return fmt.Errorf("drift: %s sums to %v, not 1", name, sum)
	}
	return nil
}

// Encode writes p as indented JSON.
func (p *Profile) Encode(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// Decode reads one profile strictly: unknown fields, trailing data and
// inconsistent contents are errors.
func Decode(r io.Reader) (*Profile, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	p := new(Profile)
	if err := dec.Decode(p); err != nil {
		return nil, fmt.Errorf("drift: decoding profile: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("drift: trailing data after profile")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// WriteFile writes p to path atomically (temporary file, then rename), so
// a reader never sees half a profile.
func (p *Profile) WriteFile(path string) error {
	var buf bytes.Buffer
	if err := p.Encode(&buf); err != nil {
		return err
	}
	return models.WriteFileAtomic(filepath.Dir(path), filepath.Base(path), buf.Bytes())
}

// ReadFile reads a profile written by WriteFile.
func ReadFile(path string) (*Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Builder accumulates observations into a Profile. It is not safe for
// concurrent use.
type Builder struct {
	model   string
	version int
	source  string
	classes []string

	n           int
	classCounts []float64
	softSum     []float64
	softN       int
	feats       [numFeatures][]float64
}

// NewBuilder starts a profile for a model version; classes may be nil.
func NewBuilder(model string, version int, source string, classes []string) *Builder {
	return &Builder{model: model, version: version, source: source, classes: slices.Clone(classes)}
}

// Add records one observation.
func (b *Builder) Add(o Observation) {
	b.n++
	if o.Class >= 0 {
		if o.Class >= len(b.classCounts) {
			b.classCounts = append(b.classCounts, make([]float64, o.Class+1-len(b.classCounts))...)
		}
		b.classCounts[o.Class]++
	}
	for i, v := range o.features() {
		if !math.IsNaN(v) {
			b.feats[i] = append(b.feats[i], v)
		}
	}
}

// AddSoftmax records one observation together with its full softmax vector,
// which contributes to Profile.MeanSoftmax.
func (b *Builder) AddSoftmax(o Observation, probs []float32) {
	b.Add(o)
	if len(probs) > len(b.softSum) {
		b.softSum = append(b.softSum, make([]float64, len(probs)-len(b.softSum))...)
	}
	for i, v := range probs {
		b.softSum[i] += float64(v)
	}
	b.softN++
}

// Profile returns the profile of everything added so far.
func (b *Builder) Profile() *Profile {
	p := &Profile{
		Model:   b.model,
		Version: b.version,
		Created: time.Now().UTC().Round(0),
		Source:  b.source,
		Count:   b.n,
		Classes: slices.Clone(b.classes),
	}
	k := max(len(b.classes), len(b.classCounts))
	total := 0.0
	for _, c := range b.classCounts {
		total += c
	}
	if total > 0 {
		p.ClassFreq = make([]float64, k)
		for i, c := range b.classCounts {
			p.ClassFreq[i] = c / total
		}
	}
	if b.softN > 0 {
		p.MeanSoftmax = make([]float64, len(b.softSum))
		for i, s := range b.softSum {
			p.MeanSoftmax[i] = s / float64(b.softN)
		}
		// Float32 softmax rounding leaves sums a little off 1; Validate is strict.
		normalise(p.MeanSoftmax)
	}
	for i, v := range b.feats {
		if len(v) == 0 {
			continue
		}
		if p.Features == nil {
			p.Features = make(map[string][]float64, numFeatures)
		}
		s := slices.Clone(v)
		slices.Sort(s)
		p.Features[featureNames[i]] = evenSample(s, MaxFeatureSample)
	}
	return p
}

func normalise(v []float64) {
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	if sum > 0 {
		for i := range v {
			v[i] /= sum
		}
	}
}

// evenSample returns k evenly spaced order statistics of sorted s (all of s
// if it is no longer), keeping the minimum and maximum, so the sample's
// quantiles match the full data's.
func evenSample(s []float64, k int) []float64 {
	if len(s) <= k {
		return s
	}
	out := make([]float64, k)
	for i := range out {
		out[i] = s[int(math.Round(float64(i)*float64(len(s)-1)/float64(k-1)))]
	}
	return out
}
