package server

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// normalised makes an empty slice and a nil one equal, which the decoders
// may leave differently and nothing downstream tells apart.
func normalised(r inferRequest) inferRequest {
	if len(r.Inputs) == 0 {
		r.Inputs = nil
	}
	if len(r.Outputs) == 0 {
		r.Outputs = nil
	}
	for i := range r.Inputs {
		if len(r.Inputs[i].Shape) == 0 {
			r.Inputs[i].Shape = nil
		}
		if len(r.Inputs[i].Data) == 0 {
			r.Inputs[i].Data = nil
		}
	}
	return r
}

// sameAsEncodingJSON fails unless parseInferRequest and json.Unmarshal
// agree on b: both refuse it, or both accept it with the same result.
func sameAsEncodingJSON(t *testing.T, b []byte) {
	t.Helper()
	var want, got inferRequest
	werr := json.Unmarshal(b, &want)
	gerr := parseInferRequest(b, &got)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%q: encoding/json says %v, parseInferRequest %v", b, werr, gerr)
	}
	if werr == nil && !reflect.DeepEqual(normalised(got), normalised(want)) {
		t.Fatalf("%q:\n got %+v\nwant %+v", b, got, want)
	}
}

var inferRequestSeeds = []string{
	`{"inputs":[{"name":"data","shape":[1,3,224,224],"datatype":"FP32","parameters":{"binary_data_size":602112}}],"outputs":[{"name":"logits","parameters":{"classification":5}}]}`,
	`{"id":"r1","inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[[300,200],[50,7]]}]}`,
	`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1e39, -0.5E-3]}],"parameters":{"binary_data_output":true,"priority":1,"timeout":1000}}`,
	` { "ID" : "x" , "Inputs" : [ { "NAME" : "a" , "Shape" : [ 1 ] } ] } `,
	`{"id":"a","id":"b","parameters":{"priority":1},"parameters":{"timeout":5}}`,
	`{"inputs":[{"name":"a"}],"inputs":[{"name":"b"},null]}`,
	// A repeated array decodes into the earlier one's elements, spare
	// capacity included, as encoding/json does.
	`{"inputs":[{"name":"a"},{"name":"b"}],"inputs":[{"shape":[1]}],"inputs":[null,null]}`,
	`{"inputs":[{"shape":[5,6]}],"inputs":[{"shape":[null]}],"outputs":[{"name":"x"}],"outputs":[]}`,
	`{"inputs":[{"data":null,"shape":[null,2],"parameters":{"binary_data_size":null}}]}`,
	`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"parameters":{"shared_memory_region":"in","shared_memory_offset":16,"shared_memory_byte_size":16}}],"outputs":[{"name":"logits","parameters":{"shared_memory_region":"out","shared_memory_byte_size":null,"shared_memory_offset":0}}]}`,
	`{"inputs":null,"outputs":[],"unknown":{"deep":[1,{"x":[true,false,null,"s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"]}]}}`,
	`{"id":"\u0069\ud800x\u00","inputs":[]}`,
	`{"id":"caf\xc3\xa9 \xff"}`,
	`{"\u0069d":"escaped key"}`,
	`{"ſ":1,"id":"k"}`,
	`{"parameters":{"priority":1.5}}`,
	`{"parameters":{"priority":1e2}}`,
	`{"parameters":{"priority":-0}}`,
	`{"parameters":{"timeout":9223372036854775808}}`,
	`{"parameters":{"binary_data":"true"}}`,
	`{"inputs":[{"shape":"1,2"}]}`,
	`{"inputs":{}}`,
	`{"id":5}`,
	`null`,
	`[]`,
	`""`,
	``,
	`{`,
	`{"inputs":[`,
	`{"a":01}`,
	`{"a":1.}`,
	`{"a":.5}`,
	`{"a":-}`,
	`{"a":1e}`,
	`{"a":"\x01"}`,
	`{"a":"\q"}`,
	`{"a":tru}`,
	`{"a":1,}`,
	`{"a" 1}`,
	`{} {}`,
	`{}x`,
	`{"data":[1,2]}` + " \t\r\n",
}

func TestParseInferRequestMatchesEncodingJSON(t *testing.T) {
	for _, s := range inferRequestSeeds {
		sameAsEncodingJSON(t, []byte(s))
	}
	// Nesting: fine well inside the limit, refused past it by both.
	for _, depth := range []int{100, 10_001, 100_000} {
		b := []byte(`{"x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`)
		sameAsEncodingJSON(t, b)
	}
}

// The data array is a view of the body, not a copy, and the message of a
// malformed request says where.
func TestParseInferRequestDataAndErrors(t *testing.T) {
	b := []byte(`{"inputs":[{"name":"data","data": [1, 2] }]}`)
	var req inferRequest
	if err := parseInferRequest(b, &req); err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte("[1, 2]"))
	if d := req.Inputs[0].Data; string(d) != "[1, 2]" || &d[0] != &b[at] {
		t.Errorf("data %q is not a view of the body at byte %d", d, at)
	}
	for _, tt := range []struct{ in, want string }{
		{`{"inputs":[`, "at byte 11: unexpected end of input, want an input"},
		{`{"id":5}`, "at byte 6: id must be a string, not character '5'"},
		{`{"parameters":{"priority":1.5}}`, "at byte 26: priority must be an integer, not 1.5"},
		{`{}x`, "at byte 2: unexpected character 'x' after the request"},
	} {
		var r inferRequest
		if err := parseInferRequest([]byte(tt.in), &r); err == nil || err.Error() != tt.want {
			t.Errorf("%s: error %v, want %q", tt.in, err, tt.want)
		}
	}
}

// FuzzParseInferRequest holds the hand-written decoder to json.Unmarshal's
// answers on any input.
func FuzzParseInferRequest(f *testing.F) {
	for _, s := range inferRequestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsEncodingJSON(t, b)
	})
}

// BenchmarkParseInferRequest is a binary request's header.
func BenchmarkParseInferRequest(b *testing.B) {
	h := []byte(inferRequestSeeds[0])
	b.ReportAllocs()
	for b.Loop() {
		var req inferRequest
		if err := parseInferRequest(h, &req); err != nil {
			b.Fatal(err)
		}
	}
}
