package runtime

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// TensorInfo describes a model input or output. DataType uses the Open
// Inference Protocol names (FP32, INT64, …); -1 in Shape marks a dynamic
// dimension.
type TensorInfo struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// Elems is the product of the non-batch dimensions (all but the first), or
// -1 if any of them is dynamic.
func (t TensorInfo) Elems() int64 {
	n := int64(1)
	for _, d := range t.Shape[min(1, len(t.Shape)):] {
		if d < 0 {
			return -1
		}
		n *= d
	}
	return n
}

func dataTypeName(t ort.TensorElementDataType) string {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return "FP32"
	case ort.TensorElementDataTypeFloat16:
		return "FP16"
	case ort.TensorElementDataTypeBFloat16:
		return "BF16"
	case ort.TensorElementDataTypeDouble:
		return "FP64"
	case ort.TensorElementDataTypeUint8:
		return "UINT8"
	case ort.TensorElementDataTypeUint16:
		return "UINT16"
	case ort.TensorElementDataTypeUint32:
		return "UINT32"
	case ort.TensorElementDataTypeUint64:
		return "UINT64"
	case ort.TensorElementDataTypeInt8:
		return "INT8"
	case ort.TensorElementDataTypeInt16:
		return "INT16"
	case ort.TensorElementDataTypeInt32:
		return "INT32"
	case ort.TensorElementDataTypeInt64:
		return "INT64"
	case ort.TensorElementDataTypeBool:
		return "BOOL"
	case ort.TensorElementDataTypeString:
		return "BYTES"
	default:
		return fmt.Sprintf("UNSUPPORTED(%d)", int(t))
	}
}

func toInfo(io ort.InputOutputInfo) TensorInfo {
	shape := make([]int64, len(io.Dimensions))
	for i, d := range io.Dimensions {
		if d < 0 {
			d = -1 // ORT reports symbolic dims as -1 already; normalise others.
		}
		shape[i] = d
	}
	return TensorInfo{Name: io.Name, DataType: dataTypeName(io.DataType), Shape: shape}
}

// Element types a Session feeds and reads. Inputs may be FP32, FP16 or
// UINT8: a float16 input halves the bytes a batch moves to the GPU and
// raw pixels quarter them, which is where a GPU server's copies go.
// Outputs may be FP32 or FP16; FP16 outputs are widened to float32 (exact)
// after each run, since a classifier's output rows are small.
type elemType struct {
	ort  ort.TensorElementDataType
	size int // bytes
}

var (
	elemFP32  = elemType{ort.TensorElementDataTypeFloat, 4}
	elemFP16  = elemType{ort.TensorElementDataTypeFloat16, 2}
	elemUINT8 = elemType{ort.TensorElementDataTypeUint8, 1}
)

// servedInput and servedOutput map the datatypes a Session serves.
var (
	servedInput  = map[string]elemType{"FP32": elemFP32, "FP16": elemFP16, "UINT8": elemUINT8}
	servedOutput = map[string]elemType{"FP32": elemFP32, "FP16": elemFP16}
)

// ServedInputTypes and ServedOutputTypes name them, for messages.
const (
	ServedInputTypes  = "FP32, FP16 or UINT8"
	ServedOutputTypes = "FP32 or FP16"
)
