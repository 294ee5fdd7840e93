package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"fastinfer/models"
	"fastinfer/models/onnxpb"
	"fastinfer/models/resnet"
)

// Card is a trained model's model card, written as card.json next to its
// model.onnx. The server shows the served version's card in GET /v1/models.
type Card struct {
	Model   string `json:"model"`
	Version int    `json:"version"` // set by WriteVersion
	Created string `json:"created"` // RFC 3339

	Dataset         CardDataset    `json:"dataset"`
	Hyperparameters map[string]any `json:"hyperparameters"`

	Epochs          int     `json:"epochs"`
	WallTimeSeconds float64 `json:"wall_time_seconds"`
	ImagesPerSecond float64 `json:"images_per_second"` // training throughput

	Accuracy         CardAccuracy       `json:"accuracy"`
	PerClassAccuracy map[string]float64 `json:"per_class_accuracy"` // on the test split, by class name
	ConfusionMatrix  [][]int            `json:"confusion_matrix"`   // test split: row = true class, column = predicted
	Classes          []string           `json:"classes"`
	LossCurve        []float64          `json:"loss_curve"`       // mean training loss per epoch
	ValidationCurve  []float64          `json:"validation_curve"` // validation accuracy per epoch

	Parameters int64  `json:"parameters"`
	GitCommit  string `json:"git_commit"`
	Notes      string `json:"notes,omitempty"`
}

// CardDataset says what the model was trained and evaluated on.
type CardDataset struct {
	Name       string `json:"name"`
	Source     string `json:"source"` // where it was fetched from
	SHA256     string `json:"sha256"`
	Train      int    `json:"train"` // images in each split
	Validation int    `json:"validation"`
	Test       int    `json:"test"`
}

// CardAccuracy is top-1 accuracy (0..1) on each split.
type CardAccuracy struct {
	Train      float64 `json:"train"`
	Validation float64 `json:"validation"`
	Test       float64 `json:"test"`
}

// LabelsFile is the labels file ConfigYAML names and WriteVersion writes
// when the configuration names none.
const LabelsFile = "labels.txt"

// ConfigYAML returns a model's config.yaml for size×size images: input
// "data", output "logits", labels.txt, and preprocessing that resizes and
// crops to size, converts to color (gray, rgb or bgr), scales pixels to
// 0..1 and normalises them with mean and std (one value per channel, or one
// for all).
func ConfigYAML(size int, color string, mean, std []float32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# A small ResNet trained and exported by fastinfer for %d×%d %s images.\n", size, size, color)
	fmt.Fprintf(&b, "input: %s\noutput: %s\nlabels: %s\n", InputName, OutputName, LabelsFile)
	b.WriteString("preprocess:\n")
	fmt.Fprintf(&b, "  resize: %d\n  crop: %d\n  color: %s\n", size, size, color)
	b.WriteString("  scale: 0.00392156862745098\n") // 1/255
	fmt.Fprintf(&b, "  mean: %s\n  std: %s\n", yamlFloats(mean), yamlFloats(std))
	return b.String()
}

// yamlFloats is a YAML flow sequence of the shortest decimals that read
// back as the same float32 values.
func yamlFloats(v []float32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(float64(x), 'g', -1, 32)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// WriteVersion adds m as a new version of the model folder dir (created if
// missing) and returns its number: one more than the highest version there,
// claimed with os.Mkdir so concurrent writers each get their own. It writes
//
//   - dir/config.yaml from configYAML, unless the file already holds exactly
//     that text. The text must parse (models.ParseConfig).
//   - dir/labels.txt (or the labels file the configuration names), one class
//     per line, when labels is not empty; its count must match the model's
//     output.
//   - dir/<v>/card.json, with card.Version set to v; an empty Model becomes
//     dir's base name, an empty Created the current time, and zero
//     Parameters the graph's parameter count.
//   - dir/<v>/model.onnx, last: a loader skips a version folder without
//     model.onnx, so it never sees the version before its card is in place.
//
// Every file is written under a temporary name in its folder and renamed
// into place, so a reader never sees a partial file. On an error after the
// version folder was claimed, the folder is removed again.
func WriteVersion(dir string, m *onnxpb.ModelProto, configYAML string, labels []string, card Card) (version int, err error) {
	if m == nil {
		return 0, errors.New("export: nil model")
	}
	cfg, err := models.ParseConfig([]byte(configYAML))
	if err != nil {
		return 0, fmt.Errorf("export: config.yaml text does not parse: %w", err)
	}
	if err := checkTensorNames(cfg, m); err != nil {
		return 0, err
	}
	labelsText, err := labelLines(labels, m)
	if err != nil {
		return 0, err
	}
	if len(labels) == 0 && cfg.Labels != "" {
		return 0, fmt.Errorf("export: config.yaml names labels file %s, but no labels were given", cfg.Labels)
	}
	if card.Model == "" {
		card.Model = filepath.Base(dir)
	}
	if card.Created == "" {
		card.Created = time.Now().UTC().Format(time.RFC3339)
	} else if _, err := time.Parse(time.RFC3339, card.Created); err != nil {
		return 0, fmt.Errorf("export: card created %q is not RFC 3339: %w", card.Created, err)
	}
	if card.Parameters == 0 {
		card.Parameters = resnet.ParamCount(m)
	}
	if err := checkCardFloats(&card); err != nil {
		return 0, err
	}
	if _, err := json.Marshal(card); err != nil { // fail before claiming a version
		return 0, fmt.Errorf("export: encoding card.json: %w", err)
	}
	model, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("export: encoding model: %w", err)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	if err := writeIfChanged(dir, models.ConfigFile, []byte(configYAML)); err != nil {
		return 0, err
	}
	if len(labels) > 0 {
		name := cfg.Labels
		if name == "" {
			name = LabelsFile
		}
		if err := writeIfChanged(dir, name, labelsText); err != nil {
			return 0, err
		}
	}

	version, vdir, err := models.ClaimVersion(dir)
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(vdir)
			version = 0
		}
	}()
	card.Version = version
	cardJSON, err := json.MarshalIndent(card, "", "  ")
	if err != nil {
		return 0, fmt.Errorf("export: encoding card.json: %w", err)
	}
	if err := writeAtomic(vdir, models.CardFile, append(cardJSON, '\n')); err != nil {
		return 0, err
	}
	if err := writeAtomic(vdir, models.ModelFile, model); err != nil {
		return 0, err
	}
	// Last: a polling server loads the version as soon as this appears.
	if err := writeAtomic(vdir, models.ReadyFile, nil); err != nil {
		return 0, err
	}
	return version, nil
}

// labelLines is labels as labels.txt holds them. It refuses labels that
// models.ReadLabels would not read back as given, and a count that differs
// from the model's output size.
func labelLines(labels []string, m *onnxpb.ModelProto) ([]byte, error) {
	if len(labels) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	for i, l := range labels {
		if strings.ContainsAny(l, "\r\n") || strings.TrimSpace(l) != l {
			return nil, fmt.Errorf("export: label %d %q has a line break or surrounding space", i, l)
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if labels[len(labels)-1] == "" {
		return nil, fmt.Errorf("export: the last label is empty, and labels.txt drops trailing blank lines")
	}
	if classes, ok := outputClasses(m); ok && classes != int64(len(labels)) {
		return nil, fmt.Errorf("export: %d labels for a model with %d outputs", len(labels), classes)
	}
	return b.Bytes(), nil
}

// checkTensorNames refuses a configuration naming an input or output the
// graph does not have: the server could not load that version.
func checkTensorNames(cfg models.Config, m *onnxpb.ModelProto) error {
	for _, t := range []struct {
		kind, name string
		infos      []*onnxpb.ValueInfoProto
	}{{"input", cfg.Input, m.GetGraph().GetInput()}, {"output", cfg.Output, m.GetGraph().GetOutput()}} {
		if t.name == "" {
			continue
		}
		var have []string
		for _, vi := range t.infos {
			have = append(have, vi.GetName())
		}
		if !slices.Contains(have, t.name) {
			return fmt.Errorf("export: config.yaml names %s %q, but the model's are %q", t.kind, t.name, have)
		}
	}
	return nil
}

// outputClasses is the fixed second dimension of the graph's first output.
func outputClasses(m *onnxpb.ModelProto) (int64, bool) {
	outs := m.GetGraph().GetOutput()
	if len(outs) == 0 {
		return 0, false
	}
	dims := outs[0].GetType().GetTensorType().GetShape().GetDim()
	if len(dims) != 2 {
		return 0, false
	}
	v, ok := dims[1].GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue)
	if !ok {
		return 0, false
	}
	return v.DimValue, true
}

// checkCardFloats names the first NaN or infinite number among the card's
// own float fields: JSON cannot hold one, and encoding/json's error would
// not say where it is.
func checkCardFloats(c *Card) error {
	fields := []struct {
		name string
		v    []float64
	}{
		{"wall_time_seconds", []float64{c.WallTimeSeconds}},
		{"images_per_second", []float64{c.ImagesPerSecond}},
		{"accuracy", []float64{c.Accuracy.Train, c.Accuracy.Validation, c.Accuracy.Test}},
		{"loss_curve", c.LossCurve},
		{"validation_curve", c.ValidationCurve},
	}
	for class, v := range c.PerClassAccuracy {
		fields = append(fields, struct {
			name string
			v    []float64
		}{"per_class_accuracy." + class, []float64{v}})
	}
	for _, f := range fields {
		for i, v := range f.v {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("export: card %s[%d] is %g, which JSON cannot hold", f.name, i, v)
			}
		}
	}
	return nil
}

// writeIfChanged writes dir/name unless it already holds exactly data.
func writeIfChanged(dir, name string, data []byte) error {
	old, err := os.ReadFile(filepath.Join(dir, name))
	if err == nil && bytes.Equal(old, data) {
		return nil
	}
	return writeAtomic(dir, name, data)
}

// writeAtomic is models.WriteFileAtomic with this package's error prefix.
func writeAtomic(dir, name string, data []byte) error {
	if err := models.WriteFileAtomic(dir, name, data); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}
