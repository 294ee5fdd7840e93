package onnxpb

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestWireFormat pins a few encodings to the field numbers in onnx.proto, so
// a regeneration from a wrong or edited proto shows up here rather than as a
// model that ONNX Runtime cannot parse.
func TestWireFormat(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
		want []byte
	}{
		{"ir_version", &ModelProto{IrVersion: proto.Int64(8)}, []byte{0x08, 0x08}},
		{"opset_import", &ModelProto{OpsetImport: []*OperatorSetIdProto{{Version: proto.Int64(17)}}},
			[]byte{0x42, 0x02, 0x10, 0x11}},
		{"tensor raw_data", &TensorProto{DataType: proto.Int32(int32(TensorProto_FLOAT)), RawData: []byte{1, 2}},
			[]byte{0x10, 0x01, 0x4a, 0x02, 0x01, 0x02}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proto.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("Marshal = % x, want % x", got, tc.want)
			}
		})
	}
}

func TestDescriptor(t *testing.T) {
	// Full names come from onnx.proto's package, not the Go one.
	if got := (&ModelProto{}).ProtoReflect().Descriptor().FullName(); got != "onnx.ModelProto" {
		t.Errorf("full name = %s, want onnx.ModelProto", got)
	}
	if got := File_onnx_proto.Path(); got != "onnx.proto" {
		t.Errorf("file path = %s, want onnx.proto", got)
	}
}
