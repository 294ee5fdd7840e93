package onnxpb

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/proto"
)

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

// Graph accumulates nodes and initializers in topological order.
type Graph struct {
	Nodes []*NodeProto
	Inits []*TensorProto
}

// Op adds a node whose single output tensor is named after the node.
func (g *Graph) Op(opType, name string, inputs []string, attrs ...*AttributeProto) string {
	return g.Node(opType, name, name, inputs, attrs...)
}

// Node adds a node with one named output and returns that output.
func (g *Graph) Node(opType, name, output string, inputs []string, attrs ...*AttributeProto) string {
	g.Nodes = append(g.Nodes, &NodeProto{
		Name:      proto.String(name),
		OpType:    proto.String(opType),
		Input:     inputs,
		Output:    []string{output},
		Attribute: attrs,
	})
	return output
}

// FloatInit adds a float32 initializer of dims whose i-th value is at(i).
// It is stored as little-endian raw_data, far smaller and faster to
// marshal than the repeated float_data field.
func (g *Graph) FloatInit(name string, dims []int64, at func(i int) float32) string {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	raw := make([]byte, 4*n)
	for i := range n {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(at(i)))
	}
	g.Inits = append(g.Inits, &TensorProto{
		Name:     proto.String(name),
		Dims:     append([]int64(nil), dims...),
		DataType: proto.Int32(int32(TensorProto_FLOAT)),
		RawData:  raw,
	})
	return name
}
