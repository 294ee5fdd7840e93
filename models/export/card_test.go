package export

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"fastinfer/models"
)

var fashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

func testCard() Card {
	c := Card{
		Created: "2026-11-22T10:00:00Z",
		Dataset: CardDataset{Name: "fashion-mnist", Source: "https://example.org/fashion", SHA256: "ab12", Train: 55000, Validation: 5000, Test: 10000},
		Hyperparameters: map[string]any{
			"optimizer": "sgd", "lr": 0.05, "batch_size": 128, "widths": []int{16, 32},
		},
		Epochs: 2, WallTimeSeconds: 61.5, ImagesPerSecond: 1790.2,
		Accuracy:         CardAccuracy{Train: 0.91, Validation: 0.9, Test: 0.895},
		PerClassAccuracy: map[string]float64{"Trouser": 0.98, "Shirt": 0.7},
		ConfusionMatrix:  [][]int{{9, 1}, {2, 8}},
		Classes:          fashionClasses,
		LossCurve:        []float64{0.6, 0.35},
		ValidationCurve:  []float64{0.86, 0.9},
		GitCommit:        "c596106",
	}
	return c
}

var fashionConfig = ConfigYAML(28, "gray", []float32{0.2860}, []float32{0.3530})

func TestConfigYAML(t *testing.T) {
	c, err := models.ParseConfig([]byte(fashionConfig))
	if err != nil {
		t.Fatalf("%v\n%s", err, fashionConfig)
	}
	if c.Input != "data" || c.Output != "logits" || c.Labels != "labels.txt" {
		t.Errorf("config = %+v", c)
	}
	want := models.Preprocess{Resize: 28, Crop: 28, Color: "gray", Scale: 1.0 / 255, Mean: []float32{0.2860}, Std: []float32{0.3530}}
	if !reflect.DeepEqual(*c.Preprocess, want) {
		t.Errorf("preprocess = %+v, want %+v", *c.Preprocess, want)
	}
	// Float32 values survive the decimal round trip exactly.
	odd := []float32{1.0 / 3, 1e-7, 0.485}
	c, err = models.ParseConfig([]byte(ConfigYAML(224, "rgb", odd, []float32{0.229, 0.224, 0.225})))
	if err != nil || !slices.Equal(c.Preprocess.Mean, odd) {
		t.Errorf("rgb config: mean %v, err %v; want %v", c.Preprocess.Mean, err, odd)
	}
}

func TestWriteVersion(t *testing.T) {
	m, err := Build(testNet(1))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "fashion")
	card := testCard()
	v1, err := WriteVersion(dir, m, fashionConfig, fashionClasses, card)
	if err != nil || v1 != 1 {
		t.Fatalf("first WriteVersion = %d, %v; want 1", v1, err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	st1, err := os.Stat(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := WriteVersion(dir, m, fashionConfig, fashionClasses, card)
	if err != nil || v2 != 2 {
		t.Fatalf("second WriteVersion = %d, %v; want 2", v2, err)
	}
	if st2, err := os.Stat(cfgPath); err != nil || !os.SameFile(st1, st2) {
		t.Errorf("config.yaml was rewritten although unchanged (%v)", err)
	}

	for v := 1; v <= 2; v++ {
		var got Card
		b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(v), "card.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("card.json of version %d: %v\n%s", v, err, b)
		}
		want := testCard()
		want.Model, want.Version, want.Parameters = "fashion", v, Params(testNet(1))
		// JSON numbers come back as float64, lists as []any.
		want.Hyperparameters = map[string]any{"optimizer": "sgd", "lr": 0.05, "batch_size": 128.0, "widths": []any{16.0, 32.0}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("card of version %d =\n%+v\nwant\n%+v", v, got, want)
		}
		if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(v), "model.onnx")); err != nil {
			t.Error(err)
		}
		if !strings.Contains(string(b), `"wall_time_seconds": 61.5`) || !strings.Contains(string(b), `"confusion_matrix": [`) {
			t.Errorf("card.json lacks snake_case keys:\n%s", b)
		}
	}
	labels, err := os.ReadFile(filepath.Join(dir, "labels.txt"))
	if err != nil || string(labels) != strings.Join(fashionClasses, "\n")+"\n" {
		t.Errorf("labels.txt = %q, %v", labels, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}

	// The repository reads the folder back, with the newest card.
	rm, ok, err := models.Read(dir)
	if err != nil || !ok {
		t.Fatalf("models.Read = %v, %v", ok, err)
	}
	if rm.Latest().Number != 2 || !slices.Equal(rm.Labels, fashionClasses) || rm.Config.Preprocess.Color != "gray" {
		t.Errorf("read back: latest %d, labels %q, preprocess %+v", rm.Latest().Number, rm.Labels, rm.Config.Preprocess)
	}
	var served Card
	if err := json.Unmarshal(rm.Card, &served); err != nil || served.Version != 2 {
		t.Errorf("served card version %d, %v", served.Version, err)
	}

	// A different configuration replaces config.yaml.
	other := ConfigYAML(32, "gray", []float32{0.5}, []float32{0.25})
	if v, err := WriteVersion(dir, m, other, fashionClasses, card); err != nil || v != 3 {
		t.Fatalf("third WriteVersion = %d, %v", v, err)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != other {
		t.Errorf("config.yaml not updated:\n%s", b)
	}
}

func TestWriteVersionConcurrent(t *testing.T) {
	m, err := Build(testNet(1))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Versions that already exist, in the repository's sense or not.
	for _, name := range []string{"1", "07", "latest"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const writers = 4
	got := make([]int, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			v, err := WriteVersion(dir, m, fashionConfig, fashionClasses, testCard())
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	slices.Sort(got)
	if !slices.Equal(got, []int{2, 3, 4, 5}) {
		t.Errorf("versions = %v, want 2..5 each once", got)
	}
}

func TestWriteVersionRefuses(t *testing.T) {
	m, err := Build(testNet(1))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		config  string
		labels  []string
		card    func(c *Card)
		wantErr string
	}{
		{"config typo", "preproces: {crop: 28}\n", fashionClasses, nil, "config.yaml text does not parse"},
		{"config input name", "input: image\n", fashionClasses, nil, `names input "image"`},
		{"label count", fashionConfig, fashionClasses[:9], nil, "9 labels for a model with 10 outputs"},
		{"label newline", fashionConfig, slices.Concat(fashionClasses[:9], []string{"Ankle\nboot"}), nil, "line break"},
		{"labels named but missing", fashionConfig, nil, nil, "no labels were given"},
		{"NaN loss", fashionConfig, fashionClasses, func(c *Card) { c.LossCurve[1] = math.NaN() }, "loss_curve[1] is NaN"},
		{"Inf hyperparameter", fashionConfig, fashionClasses, func(c *Card) { c.Hyperparameters["lr"] = math.Inf(1) }, "encoding card.json"},
		{"created", fashionConfig, fashionClasses, func(c *Card) { c.Created = "22/11/2026" }, "not RFC 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			card := testCard()
			if tt.card != nil {
				tt.card(&card)
			}
			v, err := WriteVersion(dir, m, tt.config, tt.labels, card)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("WriteVersion = %d, %v; want an error mentioning %q", v, err, tt.wantErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("a refused write touched the folder (%v)", err)
			}
		})
	}
	if _, err := WriteVersion(t.TempDir(), nil, fashionConfig, fashionClasses, testCard()); err == nil {
		t.Error("WriteVersion of a nil model succeeded")
	}
}

func TestWriteVersionDefaults(t *testing.T) {
	m, err := Build(testNet(1))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "mnist-small")
	// No labels, and a configuration that names none.
	cfg := strings.Replace(fashionConfig, "labels: labels.txt\n", "", 1)
	if _, err := WriteVersion(dir, m, cfg, nil, Card{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "1", "card.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c Card
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Model != "mnist-small" || c.Version != 1 || c.Created == "" || c.Parameters != 1382 {
		t.Errorf("defaults: %+v", c)
	}
	if strings.Contains(string(b), `"notes"`) {
		t.Errorf("empty notes written:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "labels.txt")); !os.IsNotExist(err) {
		t.Errorf("labels.txt written without labels (%v)", err)
	}
}
