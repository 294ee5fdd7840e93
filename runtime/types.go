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
