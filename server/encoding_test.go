package server

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"strings"
	"testing"
)

func compress(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "raw-deflate":
		w, _ = flate.NewWriter(&buf, flate.DefaultCompression)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Compressed request bodies (Triton's clients with
// request_compression_algorithm) are answered as the plain ones are; the
// inflated size is held to the body limit, and an unknown or broken
// encoding gets a clear 4xx.
func TestCompressedRequests(t *testing.T) {
	ts := newTestServer(t, Options{MaxBodyBytes: 1 << 20}, fakeModel("toy", 1))
	jsonBody := []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[2,2],"data":[[300,200],[50,7]]}]}`)
	binHeader := `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}`
	binLen, binBody := binaryBody(binHeader, fp32Bytes(100, 100))
	baboon := fixture(t, "baboon.jpg")
	type req struct {
		path, contentType, headerLen string
		body                         []byte
	}
	v2JSON := req{"/v2/models/toy/infer", "application/json", "", jsonBody}
	v2Bin := req{"/v2/models/toy/infer", "application/octet-stream", binLen, binBody}
	image := req{"/v1/models/toy/classify", "image/jpeg", "", baboon}
	mpType, mpBody := multipartBody(t, "image", baboon, fixture(t, "smarties.png"))
	multi := req{"/v1/models/toy/classify", mpType, "", mpBody}
	send := func(r req, enc string, body []byte) response {
		h := map[string]string{"Content-Type": r.contentType}
		if r.headerLen != "" {
			h[headerInferLength] = r.headerLen
		}
		if enc != "" {
			h["Content-Encoding"] = enc
		}
		return ts.doHeaders(t, "POST", r.path, h, body...)
	}
	for _, r := range []req{v2JSON, v2Bin, image, multi} {
		plain := send(r, "", r.body)
		if plain.status != 200 {
			t.Fatalf("%s uncompressed: %d %s", r.path, plain.status, plain.body)
		}
		for _, enc := range []string{"gzip", "deflate", "raw-deflate"} {
			header := enc
			if enc == "raw-deflate" {
				header = "deflate"
			}
			got := send(r, header, compress(t, enc, r.body))
			// The timings differ.
			untimed := func(s string) string { s, _, _ = strings.Cut(s, `"timing_ms"`); return s }
			if got.status != 200 || untimed(got.body) != untimed(plain.body) {
				t.Errorf("%s %s: %d %s\nwant %s", r.path, enc, got.status, got.body, plain.body)
			}
		}
	}

	bomb := compress(t, "gzip", make([]byte, 8<<20)) // 8 MiB of zeros in about 8 KB
	zipped := compress(t, "gzip", jsonBody)
	for _, tt := range []struct {
		name, enc string
		body      []byte
		status    int
		want      string
	}{
		{"bomb", "gzip", bomb, 413, "inflates beyond the 1048576-byte limit"},
		{"truncated", "gzip", zipped[:len(zipped)-6], 400, "does not decompress"},
		{"not gzip", "gzip", jsonBody, 400, "does not decompress"},
		{"brotli", "br", jsonBody, 415, `Content-Encoding \"br\" is not supported`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := send(v2JSON, tt.enc, tt.body)
			if r.status != tt.status || !bytes.Contains([]byte(r.body), []byte(tt.want)) {
				t.Errorf("got %d %s, want %d with %s", r.status, r.body, tt.status, tt.want)
			}
		})
	}
	// A multipart body: the same answers, where fasthttp's parser answered
	// 400 to all but gzip.
	for _, tt := range []struct {
		name, enc string
		body      []byte
		status    int
		want      string
	}{
		{"multipart bomb", "gzip", compress(t, "gzip", append(mpBody, make([]byte, 2<<20)...)), 413, "inflates beyond"},
		{"multipart brotli", "br", mpBody, 415, `Content-Encoding \"br\" is not supported`},
		{"multipart identity", "identity", mpBody, 200, `"model":"toy"`},
		{"multipart truncated", "deflate", compress(t, "deflate", mpBody[:len(mpBody)-40]), 400, "malformed multipart body"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := send(multi, tt.enc, tt.body)
			if r.status != tt.status || !bytes.Contains([]byte(r.body), []byte(tt.want)) {
				t.Errorf("got %d %s, want %d with %s", r.status, r.body, tt.status, tt.want)
			}
		})
	}
}
