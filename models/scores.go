package models

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// Scores (Config.Scores) says what a classifier's output values are, and so
// how the server turns them into the scores it answers with.
const (
	// ScoresLogits: unnormalised; the server applies softmax. Also right
	// for log-probabilities (LogSoftmax), whose softmax is the
	// probabilities themselves.
	ScoresLogits = "logits"
	// ScoresProbabilities: the model ends in Softmax (or Sigmoid, for
	// independent per-class probabilities); its values are the scores.
	// A second softmax over them would squash every score towards 1/N:
	// 0.99 would come out as 0.0027 over 1,000 classes.
	ScoresProbabilities = "probabilities"
)

// Ops that pass values through unchanged, or reshape or cast them, between
// a Softmax and the graph's output (fp16 copies end in a Cast).
var passThrough = map[string]bool{
	"Identity": true, "Reshape": true, "Flatten": true, "Squeeze": true, "Unsqueeze": true, "Cast": true,
}

// DetectScores reads the ONNX graph in path and says whether the tensor
// output (the first graph output when "") is produced by Softmax or
// Sigmoid, looking back through reshapes and casts. It walks the protobuf
// wire format rather than unmarshalling the model, so the weights are
// skipped, not copied. Anything else, subgraphs included, is logits.
func DetectScores(path, output string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return detectScores(b, output)
}

type producer struct {
	op, domain string
	input      string // the first input
}

func detectScores(model []byte, output string) (string, error) {
	graph, err := field(model, 7) // ModelProto.graph
	if err != nil {
		return "", err
	}
	if graph == nil {
		return "", errors.New("the model has no graph")
	}
	made := map[string]producer{} // tensor name → the node making it
	var outputs []string
	err = eachField(graph, func(num protowire.Number, v []byte) error {
		switch num {
		case 1: // GraphProto.node
			var p producer
			var outs []string
			err := eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1: // NodeProto.input
					if p.input == "" {
						p.input = string(v)
					}
				case 2: // NodeProto.output
					outs = append(outs, string(v))
				case 4: // NodeProto.op_type
					p.op = string(v)
				case 7: // NodeProto.domain
					p.domain = string(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("node: %w", err)
			}
			for _, o := range outs {
				made[o] = p
			}
		case 12: // GraphProto.output (ValueInfoProto; its name is field 1)
			name, err := field(v, 1)
			if err != nil {
				return fmt.Errorf("graph output: %w", err)
			}
			outputs = append(outputs, string(name))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("reading the ONNX graph: %w", err)
	}
	if output == "" {
		if len(outputs) == 0 {
			return "", errors.New("the graph has no outputs")
		}
		output = outputs[0]
	}
	name := output
	for range 64 { // a hostile file may loop; real chains are short
		p, ok := made[name]
		if !ok || (p.domain != "" && p.domain != "ai.onnx") {
			return ScoresLogits, nil
		}
		switch {
		case p.op == "Softmax" || p.op == "Sigmoid":
			return ScoresProbabilities, nil
		case passThrough[p.op] && p.input != "":
			name = p.input
		default:
			return ScoresLogits, nil
		}
	}
	return ScoresLogits, nil
}

// eachField calls fn with every length-delimited field of the message b,
// skipping the others.
func eachField(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}

// field returns the last length-delimited field num of b, or nil.
func field(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := eachField(b, func(n protowire.Number, v []byte) error {
		if n == num {
			out = v
		}
		return nil
	})
	return out, err
}
