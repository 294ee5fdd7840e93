package models

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
// Sigmoid, looking back through reshapes and casts. It streams the
// protobuf wire format, reading only the graph's nodes and outputs and
// seeking past the weights: ResNet-50's 100 MB file costs a few reads, not
// a copy. Anything else, subgraphs included, is logits.
func DetectScores(path, output string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	return detectScores(f, st.Size(), output)
}

type producer struct {
	op, domain string
	input      string // the first input
}

func detectScores(r io.ReadSeeker, size int64, output string) (string, error) {
	w := &wireReader{r: r, br: bufio.NewReaderSize(r, 64<<10), size: size}
	made := map[string]producer{} // tensor name → the node making it
	var outputs []string
	graphs := 0
	// ModelProto: the graph is field 7; the rest is skipped.
	err := w.fields(size, func(num protowire.Number, n int64) (bool, error) {
		if num != 7 {
			return false, nil
		}
		graphs++
		// GraphProto: nodes (1) and outputs (12) are read; initializers
		// (5) and the rest are skipped.
		return true, w.fields(n, func(num protowire.Number, n int64) (bool, error) {
			switch num {
			case 1: // NodeProto
				v, err := w.read(n)
				if err != nil {
					return true, err
				}
				var p producer
				var outs []string
				err = eachField(v, func(num protowire.Number, v []byte) error {
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
					return true, fmt.Errorf("node: %w", err)
				}
				for _, o := range outs {
					made[o] = p
				}
				return true, nil
			case 12: // ValueInfoProto; its name is field 1
				v, err := w.read(n)
				if err != nil {
					return true, err
				}
				name, err := field(v, 1)
				if err != nil {
					return true, fmt.Errorf("graph output: %w", err)
				}
				outputs = append(outputs, string(name))
				return true, nil
			}
			return false, nil
		})
	})
	if err != nil {
		return "", fmt.Errorf("reading the ONNX graph: %w", err)
	}
	if graphs == 0 {
		return "", errors.New("the model has no graph")
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

// wireReader walks a protobuf message from a stream, reading the fields a
// caller wants and seeking past the others.
type wireReader struct {
	r    io.ReadSeeker
	br   *bufio.Reader
	pos  int64 // offset of the next byte br returns
	size int64
}

// fields walks n bytes of message: fn gets each length-delimited field's
// number and length and either consumes it (true) or leaves it to be
// skipped (false); other wire types are skipped.
func (w *wireReader) fields(n int64, fn func(num protowire.Number, n int64) (bool, error)) error {
	end := w.pos + n
	for w.pos < end {
		tag, err := w.uvarint()
		if err != nil {
			return err
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		var skip int64
		switch typ {
		case protowire.VarintType:
			_, err = w.uvarint()
		case protowire.Fixed32Type:
			skip = 4
		case protowire.Fixed64Type:
			skip = 8
		case protowire.BytesType:
			var l uint64
			// A tag can end past the message (its varint crossing end):
			// end-w.pos is then negative, and no length fits.
			if l, err = w.uvarint(); err == nil && (w.pos > end || l > uint64(end-w.pos)) {
				err = fmt.Errorf("field %d of %d bytes overruns its message at offset %d", num, l, w.pos)
			}
			if err == nil {
				start := w.pos
				var used bool
				if used, err = fn(num, int64(l)); err == nil && !used {
					skip = int64(l)
				} else if err == nil && w.pos != start+int64(l) {
					err = fmt.Errorf("field %d read %d of its %d bytes", num, w.pos-start, l)
				}
			}
		default:
			err = fmt.Errorf("wire type %d (groups are not ONNX) at offset %d", typ, w.pos)
		}
		if err == nil && skip > 0 {
			err = w.skip(skip)
		}
		if err != nil {
			return err
		}
	}
	if w.pos != end {
		return fmt.Errorf("a field overruns its message at offset %d", w.pos)
	}
	return nil
}

func (w *wireReader) uvarint() (uint64, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := w.br.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		w.pos++
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, fmt.Errorf("varint overflows at offset %d", w.pos)
}

// read returns the next n bytes, which the caller has checked lie within
// the message (and so the file).
func (w *wireReader) read(n int64) ([]byte, error) {
	if n < 0 || n > w.size-w.pos {
		return nil, fmt.Errorf("%d bytes at offset %d run past the file's %d", n, w.pos, w.size)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(w.br, b)
	w.pos += n
	return b, noEOF(err)
}

// skip moves n bytes on: through the buffer when they are in it, else by
// seeking the file, so weights are never read.
func (w *wireReader) skip(n int64) error {
	if n < 0 {
		return fmt.Errorf("skipping %d bytes at offset %d", n, w.pos)
	}
	if n <= int64(w.br.Buffered()) {
		w.br.Discard(int(n))
		w.pos += n
		return nil
	}
	if w.pos+n > w.size {
		return fmt.Errorf("skipping %d bytes at offset %d runs past the file's %d", n, w.pos, w.size)
	}
	w.pos += n
	if _, err := w.r.Seek(w.pos, io.SeekStart); err != nil {
		return err
	}
	w.br.Reset(w.r)
	return nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
