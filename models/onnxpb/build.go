package onnxpb

import "google.golang.org/protobuf/proto"

// Helpers for writing graphs by hand (models/resnet, models/export).

// AttrInts is an INTS attribute.
func AttrInts(name string, v ...int64) *AttributeProto {
	return &AttributeProto{Name: proto.String(name), Type: AttributeProto_INTS.Enum(), Ints: v}
}

// AttrInt is an INT attribute.
func AttrInt(name string, v int64) *AttributeProto {
	return &AttributeProto{Name: proto.String(name), Type: AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// AttrFloat is a FLOAT attribute.
func AttrFloat(name string, v float32) *AttributeProto {
	return &AttributeProto{Name: proto.String(name), Type: AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// Dim is a fixed tensor dimension.
func Dim(v int64) *TensorShapeProto_Dimension {
	return &TensorShapeProto_Dimension{Value: &TensorShapeProto_Dimension_DimValue{DimValue: v}}
}

// DimParam is a named, dynamic tensor dimension.
func DimParam(name string) *TensorShapeProto_Dimension {
	return &TensorShapeProto_Dimension{Value: &TensorShapeProto_Dimension_DimParam{DimParam: name}}
}

// FloatTensor describes a float32 graph input or output.
func FloatTensor(name string, dims ...*TensorShapeProto_Dimension) *ValueInfoProto {
	return &ValueInfoProto{
		Name: proto.String(name),
		Type: &TypeProto{Value: &TypeProto_TensorType{TensorType: &TypeProto_Tensor{
			ElemType: proto.Int32(int32(TensorProto_FLOAT)),
			Shape:    &TensorShapeProto{Dim: dims},
		}}},
	}
}
