package models

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/onnxpb"
)

// scoresGraph is x → MatMul(w) → "logits", followed by the nodes tail
// adds, with the given graph outputs (each a node's output name).
func scoresGraph(t testing.TB, tail func(g *onnxpb.Graph), outputs ...string) []byte {
	t.Helper()
	g := &onnxpb.Graph{}
	g.FloatInit("w", []int64{4, 3}, func(i int) float32 { return float32(i) })
	g.Node("MatMul", "fc", "logits", []string{"x", "w"})
	tail(g)
	var outs []*onnxpb.ValueInfoProto
	for _, o := range outputs {
		outs = append(outs, onnxpb.FloatTensor(o, onnxpb.Dim(1), onnxpb.Dim(3)))
	}
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("scores"), Node: g.Nodes, Initializer: g.Inits,
			Input:  []*onnxpb.ValueInfoProto{onnxpb.FloatTensor("x", onnxpb.Dim(1), onnxpb.Dim(4))},
			Output: outs,
		},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDetectScores(t *testing.T) {
	none := func(*onnxpb.Graph) {}
	softmax := func(g *onnxpb.Graph) { g.Node("Softmax", "sm", "probs", []string{"logits"}) }
	tests := []struct {
		name   string
		tail   func(g *onnxpb.Graph)
		outs   []string
		output string // asked for; "" = the first
		want   string
	}{
		{"logits", none, []string{"logits"}, "", ScoresLogits},
		{"softmax", softmax, []string{"probs"}, "", ScoresProbabilities},
		{"sigmoid", func(g *onnxpb.Graph) { g.Node("Sigmoid", "sg", "probs", []string{"logits"}) }, []string{"probs"}, "", ScoresProbabilities},
		{"log-softmax", func(g *onnxpb.Graph) { g.Node("LogSoftmax", "lsm", "logp", []string{"logits"}) }, []string{"logp"}, "", ScoresLogits},
		{"softmax, reshaped and cast", func(g *onnxpb.Graph) {
			softmax(g)
			g.Node("Flatten", "fl", "flat", []string{"probs"})
			g.Node("Reshape", "rs", "shaped", []string{"flat", "shape"})
			g.Node("Cast", "cast", "out", []string{"shaped"}, onnxpb.AttrInt("to", 1))
			g.Node("Identity", "id", "y", []string{"out"})
		}, []string{"y"}, "", ScoresProbabilities},
		{"softmax then an op that changes values", func(g *onnxpb.Graph) {
			softmax(g)
			g.Node("Log", "log", "y", []string{"probs"})
		}, []string{"y"}, "", ScoresLogits},
		{"two outputs: the first", softmax, []string{"logits", "probs"}, "", ScoresLogits},
		{"two outputs: the second, by name", softmax, []string{"logits", "probs"}, "probs", ScoresProbabilities},
		{"a custom domain's Softmax", func(g *onnxpb.Graph) {
			g.Node("Softmax", "sm", "probs", []string{"logits"})
			g.Nodes[len(g.Nodes)-1].Domain = proto.String("com.example")
		}, []string{"probs"}, "", ScoresLogits},
		{"a cycle of identities", func(g *onnxpb.Graph) {
			g.Node("Identity", "a", "p", []string{"q"})
			g.Node("Identity", "b", "q", []string{"p"})
		}, []string{"p"}, "", ScoresLogits},
		{"an output no node makes", none, []string{"x"}, "", ScoresLogits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := scoresGraph(t, tt.tail, tt.outs...)
			got, err := detectScores(bytes.NewReader(b), int64(len(b)), tt.output)
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDetectScoresFiles(t *testing.T) {
	// The committed default model ends in its fully connected layer.
	if got, err := DetectScores(filepath.Join("fashion-resnet", "3", "model.onnx"), ""); err != nil || got != ScoresLogits {
		t.Errorf("fashion-resnet: %q, %v; want logits", got, err)
	}
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"garbage", []byte("\xff\xff\xff\xff not protobuf")},
		{"no graph", []byte{}},
	} {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, tt.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := DetectScores(p, ""); err == nil {
			t.Errorf("%s: %q and no error", tt.name, got)
		}
	}
	if _, err := DetectScores(filepath.Join(dir, "missing.onnx"), ""); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfigScores(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		ok   bool
	}{
		{"scores: logits\n", true},
		{"scores: probabilities\n", true},
		{"scores: softmax\n", false},
	} {
		c, err := ParseConfig([]byte(tt.yaml))
		if (err == nil) != tt.ok {
			t.Errorf("%q: %v", tt.yaml, err)
		}
		if tt.ok && c.Scores == "" {
			t.Errorf("%q: scores not kept", tt.yaml)
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	*bytes.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	c.n += int64(n)
	return n, err
}

// The weights are sought past, not read: a graph with 8 MB of weights
// ahead of its nodes is walked reading a small part of the file.
func TestDetectScoresSkipsWeights(t *testing.T) {
	b := scoresGraph(t, func(g *onnxpb.Graph) {
		for i := range 4 {
			g.FloatInit(fmt.Sprint("big", i), []int64{512, 1024}, func(int) float32 { return 1 })
		}
		g.Node("Softmax", "sm", "probs", []string{"logits"})
	}, "probs")
	r := &countingReader{Reader: bytes.NewReader(b)}
	got, err := detectScores(r, int64(len(b)), "")
	if err != nil || got != ScoresProbabilities {
		t.Fatalf("got %q, %v", got, err)
	}
	if r.n > int64(len(b))/8 {
		t.Errorf("read %d of %d bytes", r.n, len(b))
	}
	// Cut anywhere, the file is an error, not a guess or a hang.
	for _, cut := range []int{1, 100, len(b) / 2, len(b) - 1} {
		if got, err := detectScores(bytes.NewReader(b[:cut]), int64(cut), ""); err == nil {
			t.Errorf("cut at %d: %q and no error", cut, got)
		}
	}
}
