package train

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"fastinfer/train/data"
)

// SweepKeys are the hyperparameters --sweep can vary.
var SweepKeys = []string{"lr", "width", "batch", "epochs", "blocks", "stem_pool", "weight_decay", "warmup"}

// ParseSweep turns "key=v1,v2" specs into every combination, in a fixed
// order (the first key varies slowest). No specs give one empty
// combination: a single run with the base options.
func ParseSweep(specs []string) ([]map[string]string, error) {
	combos := []map[string]string{{}}
	seen := map[string]bool{}
	for _, spec := range specs {
		key, vals, ok := strings.Cut(spec, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || vals == "" {
			return nil, fmt.Errorf("--sweep %q: want key=v1,v2,…", spec)
		}
		if !slices.Contains(SweepKeys, key) {
			return nil, fmt.Errorf("--sweep %q: unknown key %q (want one of %s)", spec, key, strings.Join(SweepKeys, ", "))
		}
		if seen[key] {
			return nil, fmt.Errorf("--sweep: %s given twice", key)
		}
		seen[key] = true
		// blocks values are themselves lists: blocks=1-1-1,2-2-2
		var next []map[string]string
		for _, c := range combos {
			for _, v := range strings.Split(vals, ",") {
				m := make(map[string]string, len(c)+1)
				for k, x := range c {
					m[k] = x
				}
				m[key] = strings.TrimSpace(v)
				next = append(next, m)
			}
		}
		combos = next
	}
	return combos, nil
}

// Apply sets the combination's values on o.
func Apply(o Options, combo map[string]string) (Options, error) {
	keys := make([]string, 0, len(combo))
	for k := range combo {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := combo[k]
		var err error
		switch k {
		case "lr":
			o.LR, err = strconv.ParseFloat(v, 64)
		case "weight_decay":
			o.WeightDecay, err = strconv.ParseFloat(v, 64)
		case "warmup":
			o.WarmupEpochs, err = strconv.ParseFloat(v, 64)
		case "width":
			o.Arch.Width, err = strconv.Atoi(v)
		case "batch":
			o.Batch, err = strconv.Atoi(v)
		case "epochs":
			o.Epochs, err = strconv.Atoi(v)
		case "stem_pool":
			o.Arch.StemPool, err = strconv.Atoi(v)
		case "blocks":
			o.Arch.Stages, err = ParseBlocks(v)
		default:
			err = fmt.Errorf("unknown key")
		}
		if err != nil {
			return o, fmt.Errorf("%s=%s: %w", k, v, err)
		}
	}
	return o, nil
}

// ParseBlocks reads blocks per stage written as "1,1,1" or "1-1-1".
func ParseBlocks(s string) ([]int, error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '-' })
	if len(f) == 0 {
		return nil, fmt.Errorf("no stages in %q", s)
	}
	out := make([]int, len(f))
	for i, x := range f {
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("stage %d of %q: want 1..16 blocks", i+1, s)
		}
		out[i] = n
	}
	return out, nil
}

// Evaluation is a model's accuracy on a labelled set.
type Evaluation struct {
	Accuracy  float64
	PerClass  []float64
	Confusion [][]int // [true][predicted]
}

// Evaluate runs p on every image of s.
func Evaluate(p *Params, s *data.Set, batch int) (Evaluation, error) {
	logits, err := Predict(p, s, batch)
	if err != nil {
		return Evaluation{}, err
	}
	k := p.Arch.Classes
	e := Evaluation{PerClass: make([]float64, k), Confusion: make([][]int, k)}
	for i := range e.Confusion {
		e.Confusion[i] = make([]int, k)
	}
	counts := make([]int, k)
	correct := 0
	for i, y := range s.Y {
		pred := argmax(logits[i*k : (i+1)*k])
		e.Confusion[y][pred]++
		counts[y]++
		if pred == y {
			correct++
		}
	}
	for c := range k {
		if counts[c] > 0 {
			e.PerClass[c] = float64(e.Confusion[c][c]) / float64(counts[c])
		}
	}
	e.Accuracy = float64(correct) / float64(max(len(s.Y), 1))
	return e, nil
}
