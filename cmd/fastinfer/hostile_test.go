package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/png"
	"io"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hostile-input catalogue: bad requests against a live server with
// the committed default model, each with the status and error code it
// must get, and after every one a check that the server still classifies
// a good image. Requests are written by hand over TCP, so nothing is
// normalised or refused by a client on the way.
//
// Answers worth knowing (each case's note says why it gets what it gets):
//   - 16-bit and CMYK images and APNGs are not refused: OpenCV decodes
//     them (16-bit scaled to 8, CMYK converted, an APNG's default
//     image), and a 16-bit or APNG copy of the ankle boot gets exactly
//     the 8-bit answer.
//   - GIF is a format guard knows but Debian 12's OpenCV 4.6 cannot
//     decode, so every GIF, still or animated, is 400 bad_image.
//   - Path traversal never reaches a model lookup: fasthttp decodes %2e,
//     %2f and collapses "..", "//" before routing, so such paths are
//     404 not_found for the route they normalise to (or 200 when that
//     route is the model's own).
//   - A header over fasthttp's read buffer (16 KiB) is 431
//     headers_too_large; a bad HTTP version is 400 bad_request; both
//     with our JSON.
//   - A gzip-encoded multipart body is inflated by fasthttp's multipart
//     parser; it is held to --max-body (413), not inflated without
//     bound.

const (
	hostModel   = "fashion-resnet"
	hostToken   = "hostile-s3cret"
	tensorBytes = 4 * 28 * 28
	bootLabel   = `"label":"Ankle boot"`
)

type hostileCase struct {
	name  string
	token bool // against the server started with --api-token
	req   []byte
	// stream, when set, writes the request instead of req (bodies too
	// large to build in memory).
	stream func(w io.Writer)
	status int
	// code is the v1 error code; with v2 the body must be the protocol's
	// {"error":"…"}; "" with neither means the body is not checked (200s).
	code string
	v2   bool
	// contains, for a 200, must be in the body.
	contains string
	note     string
}

// request builds a request: the method, the target exactly as given, the
// headers ("Name: value"), Host, Connection: close and, when body is not
// nil, Content-Length.
func request(method, target string, body []byte, headers ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: fastinfer\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

func classifyReq(body []byte, contentType string, headers ...string) []byte {
	if contentType != "" {
		headers = append(headers, "Content-Type: "+contentType)
	}
	return request("POST", "/v1/models/"+hostModel+"/classify", body, headers...)
}

func inferReq(body string, headers ...string) []byte {
	return request("POST", "/v2/models/"+hostModel+"/infer", []byte(body), append(headers, "Content-Type: application/json")...)
}

// binaryInfer is a binary-extension infer request: the JSON header, then
// blob.
func binaryInfer(header string, blob []byte, headerLen string) []byte {
	if headerLen == "" {
		headerLen = strconv.Itoa(len(header))
	}
	return request("POST", "/v2/models/"+hostModel+"/infer", append([]byte(header), blob...),
		"Content-Type: application/octet-stream", "Inference-Header-Content-Length: "+headerLen)
}

func tensorHeader(datatype, shape string, size int) string {
	return `{"inputs":[{"name":"data","datatype":"` + datatype + `","shape":` + shape +
		`,"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]}`
}

// fp32Blob is n little-endian float32s, all v.
func fp32Blob(n int, v float32) []byte {
	b := make([]byte, 0, 4*n)
	for range n {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// scanBomb appends n copies of an AC refinement scan that carries no data
// to a progressive JPEG: a small file that libjpeg decodes over the whole
// image n times.
func scanBomb(jpeg []byte, n int) []byte {
	eoi := bytes.LastIndex(jpeg, []byte{0xFF, 0xD9})
	refine := "\xff\xda\x00\x08\x01\x02\x01\x01\x3f\x10\x16\x07"
	return append(bytes.Clone(jpeg[:eoi]), strings.Repeat(refine, n)+"\xff\xd9"...)
}

func zerosJSON(n int) string {
	return strings.TrimSuffix(strings.Repeat("0,", n), ",")
}

func TestHostileInputs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers; skipped in -short")
	}
	repo := fashionRepo(t)
	base, logs, _ := startServe(t, repo)
	tokenBase, tokenLogs, _ := startServe(t, repo, "--api-token", hostToken)
	good := readFile(t, filepath.Join("..", "..", "testdata", "fashion", "test-0-ankle-boot.png"))
	vision := func(name string) []byte { return readFile(t, filepath.Join("..", "..", "vision", "testdata", name)) }

	mpType, mpTwo := hostileMultipart(t, "image", good, vision("garbage.bin"))
	_, mpPhoto := hostileMultipart(t, "photo", good)
	many := make([][]byte, 65) // --max-images is 64
	for i := range many {
		many[i] = good
	}
	_, mpMany := hostileMultipart(t, "image", many...)
	boundary := strings.TrimPrefix(mpType, "multipart/form-data; boundary=")
	noFilename := []byte("--" + boundary + "\r\nContent-Disposition: form-data; name=\"image\"\r\nContent-Type: image/png\r\n\r\n" +
		string(good) + "\r\n--" + boundary + "--\r\n")
	bomb := multipartGzipBomb(t, boundary, 64<<20)

	auth := "Authorization: Bearer " + hostToken
	cases := []hostileCase{
		// Images that are not images.
		{name: "empty body", req: classifyReq([]byte{}, "image/png"), status: 400, code: "bad_image",
			note: "0 bytes: guard.ErrEmpty"},
		{name: "garbage bytes", req: classifyReq(vision("garbage.bin"), "image/jpeg"), status: 400, code: "bad_image",
			note: "no known magic"},
		{name: "text as image/png", req: classifyReq(vision("text.txt"), "image/png"), status: 400, code: "bad_image",
			note: "the Content-Type is not trusted; the bytes are"},
		{name: "truncated PNG", req: classifyReq(vision("truncated.png"), "image/png"), status: 400, code: "bad_image",
			note: "guard walks the chunks and never reaches IEND"},
		{name: "truncated JPEG", req: classifyReq(vision("truncated.jpg"), "image/jpeg"), status: 400, code: "bad_image",
			note: "no EOI: OpenCV would return a grey-filled image without error"},
		{name: "JPEG truncated after its EXIF thumbnail", req: classifyReq(vision("truncated_thumb.jpg"), "image/jpeg"), status: 400, code: "bad_image",
			note: "the thumbnail's EOI does not count as the image's"},
		{name: "JPEG of 10,000 empty progressive scans", req: classifyReq(scanBomb(vision("Blender_Suzanne1.jpg"), 10000), "image/jpeg"), status: 400, code: "bad_image",
			note: "libjpeg would spend seconds on it; guard counts the scans"},
		{name: "PNG with a zero width", req: classifyReq(zeroWidthPNG(t, good), "image/png"), status: 400, code: "bad_image",
			note: "IHDR width 0 with a valid CRC"},
		{name: "PNG pixel bomb", req: classifyReq(vision("bomb.png"), "image/png"), status: 413, code: "too_large",
			note: "73 bytes claiming 40000x40000: refused from the header, before OpenCV (which aborts the process on it)"},
		{name: "JPEG pixel bomb", req: classifyReq(vision("bomb.jpg"), "image/jpeg"), status: 413, code: "too_large",
			note: "SOF claims 65000x65000"},
		{name: "thin PNG that resizes past the pixel limit", req: classifyReq(grayPNG(t, 1, 100_000), "image/png"), status: 413, code: "too_large",
			note: "1x100000 is 0.1 MP, but scaling its short side to 28 gives 28x2800000"},
		// Odd but valid images: a deliberate 200 or a deliberate 400.
		{name: "16-bit gray PNG", req: classifyReq(gray16PNG(t, good), "image/png"), status: 200, contains: bootLabel,
			note: "the ankle boot at 16 bits: OpenCV's IMREAD_GRAYSCALE scales the samples to 8, same answer"},
		{name: "16-bit RGBA PNG", req: classifyReq(rgba64PNG(t, good), "image/png"), status: 200, contains: bootLabel,
			note: "the ankle boot as opaque 16-bit RGBA: alpha dropped, scaled, converted to gray"},
		{name: "CMYK JPEG (Adobe APP14)", req: classifyReq(cmykJPEG(), "image/jpeg"), status: 200,
			note: "libjpeg decodes 4-component JPEGs and OpenCV converts CMYK to gray"},
		{name: "animated PNG (APNG)", req: classifyReq(apng(t, good), "image/png"), status: 200, contains: bootLabel,
			note: "the ankle boot as frame 0 of two: acTL/fcTL/fdAT are ancillary chunks, libpng skips them and decodes the default image"},
		{name: "still GIF", req: classifyReq(gifImage(t, 1), "image/gif"), status: 400, code: "bad_image",
			note: "guard reads GIF headers, but OpenCV 4.6 has no GIF decoder: IMDecode returns an empty Mat"},
		{name: "animated GIF", req: classifyReq(gifImage(t, 3), "image/gif"), status: 400, code: "bad_image",
			note: "as the still GIF: the format, not the animation, is refused"},
		// Media types.
		{name: "text/plain", req: classifyReq(good, "text/plain"), status: 415, code: "unsupported_media_type"},
		{name: "no Content-Type", req: classifyReq(good, ""), status: 415, code: "unsupported_media_type"},
		{name: "application/json", req: classifyReq(good, "application/json"), status: 415, code: "unsupported_media_type"},
		{name: "upper-case multipart media type", req: classifyReq(mpTwo, strings.Replace(mpType, "multipart/form-data", "Multipart/Form-Data", 1)),
			status: 400, code: "bad_request",
			note: "media types are case-insensitive and the server treats this as multipart, but fasthttp finds the boundary only after a lower-case multipart/form-data"},
		// Body size.
		{name: "Content-Length over --max-body", req: []byte("POST /v1/models/" + hostModel + "/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 33554433\r\n\r\n"),
			status: 413, code: "too_large", note: "refused from the header; the body is never read"},
		{name: "chunked body over --max-body", stream: chunkedUpload(33 << 20), status: 413, code: "too_large",
			note: "no Content-Length: refused once 32 MiB have been read"},
		{name: "multipart gzip bomb", req: classifyReq(bomb, mpType, "Content-Encoding: gzip"), status: 413, code: "too_large",
			note: "64 KiB that inflate to 64 MiB: inflated up to --max-body, then parsed"},
		{name: "multipart with Content-Encoding: br", req: classifyReq(mpTwo, mpType, "Content-Encoding: br"), status: 415, code: "unsupported_media_type",
			note: "gzip and deflate are inflated; any other encoding is refused, as for a raw body"},
		{name: "gzipped raw image", req: classifyReq(gzipBytes(t, good), "image/png", "Content-Encoding: gzip"), status: 200, contains: bootLabel,
			note: "inflated first, as Triton's clients compress bodies"},
		{name: "raw gzip bomb", req: classifyReq(gzipBytes(t, make([]byte, 64<<20)), "image/png", "Content-Encoding: gzip"), status: 413, code: "too_large",
			note: "64 KiB that inflate to 64 MiB: inflated up to --max-body"},
		{name: "raw body with Content-Encoding: br", req: classifyReq(good, "image/png", "Content-Encoding: br"), status: 415, code: "unsupported_media_type"},
		{name: "v2 gzip bomb", req: request("POST", "/v2/models/"+hostModel+"/infer", gzipBytes(t, make([]byte, 64<<20)), "Content-Type: application/json", "Content-Encoding: gzip"),
			status: 413, v2: true},
		// Multipart.
		{name: "malformed multipart", req: classifyReq([]byte("--xyz\r\nbroken"), "multipart/form-data; boundary=xyz"), status: 400, code: "bad_request"},
		{name: "multipart without a boundary", req: classifyReq(mpTwo, "multipart/form-data"), status: 400, code: "bad_request"},
		{name: "multipart without an image part", req: classifyReq(mpPhoto, mpType), status: 400, code: "bad_request"},
		{name: "multipart image part without a filename", req: classifyReq(noFilename, mpType), status: 400, code: "bad_request",
			note: "a part without filename is a form value, not a file"},
		{name: "multipart with one garbage image", req: classifyReq(mpTwo, mpType), status: 400, code: "bad_image",
			note: "one bad image fails the request: image 1"},
		{name: "65 images", req: classifyReq(mpMany, mpType), status: 413, code: "too_large", note: "--max-images 64"},
		// top_k.
		{name: "top_k=0", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=0", good, "Content-Type: image/png"), status: 400, code: "bad_request"},
		{name: "top_k=-3", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=-3", good, "Content-Type: image/png"), status: 400, code: "bad_request"},
		{name: "top_k overflowing int", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=99999999999999999999", good, "Content-Type: image/png"), status: 400, code: "bad_request"},
		{name: "top_k=five", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=five", good, "Content-Type: image/png"), status: 400, code: "bad_request"},
		{name: "top_k=1e3", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=1e3", good, "Content-Type: image/png"), status: 400, code: "bad_request"},
		{name: "top_k empty", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=", good, "Content-Type: image/png"), status: 400, code: "bad_request"},
		{name: "huge top_k is capped", req: request("POST", "/v1/models/"+hostModel+"/classify?top_k=1000000", good, "Content-Type: image/png"), status: 200,
			note: "documented: capped at the 10 classes"},
		// Tensors.
		{name: "tensor: wrong shape", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,784],"data":[` + zerosJSON(784) + `]}]}`), status: 400, v2: true},
		{name: "tensor: 27x28", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,27,28],"data":[` + zerosJSON(756) + `]}]}`), status: 400, v2: true},
		{name: "tensor: huge dimension", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,4611686018427387904],"data":[0]}]}`), status: 400, v2: true},
		{name: "tensor: batch 0", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[0,1,28,28],"data":[]}]}`), status: 400, v2: true},
		{name: "tensor: batch over --max-images", req: binaryInfer(tensorHeader("UINT8", "[65,1,28,28]", 65*784), make([]byte, 65*784), ""), status: 413, v2: true},
		{name: "tensor: BYTES datatype", req: inferReq(`{"inputs":[{"name":"data","datatype":"BYTES","shape":[1,1,28,28],"data":["a"]}]}`), status: 400, v2: true},
		{name: "tensor: unknown datatype", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP8","shape":[1,1,28,28],"data":[` + zerosJSON(784) + `]}]}`), status: 400, v2: true},
		{name: "tensor: 783 values for 784", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,28],"data":[` + zerosJSON(783) + `]}]}`), status: 400, v2: true},
		{name: "tensor: strings for FP32", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,28],"data":["0"]}]}`), status: 400, v2: true},
		{name: "tensor: number over float32", req: inferReq(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,1,28,28],"data":[1e39,` + zerosJSON(783) + `]}]}`), status: 400, v2: true},
		{name: "tensor: malformed JSON", req: inferReq(`{"inputs":[`), status: 400, v2: true},
		{name: "tensor: wrong input name", req: inferReq(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1,28,28],"data":[` + zerosJSON(784) + `]}]}`), status: 400, v2: true},
		{name: "binary: one byte short", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), make([]byte, tensorBytes-1), ""), status: 400, v2: true},
		{name: "binary: size disagrees with shape", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes+4), make([]byte, tensorBytes+4), ""), status: 400, v2: true},
		{name: "binary: NaN", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), fp32Blob(784, float32(math.NaN())), ""), status: 400, v2: true},
		{name: "binary: +Inf", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), fp32Blob(784, float32(math.Inf(1))), ""), status: 400, v2: true},
		{name: "binary: FP64 over float32 range", req: binaryInfer(tensorHeader("FP64", "[1,1,28,28]", 2*tensorBytes), bytes.Repeat(binary.LittleEndian.AppendUint64(nil, math.Float64bits(1e300)), 784), ""), status: 400, v2: true,
			note: "1e300 becomes +Inf as float32 and is refused"},
		{name: "binary: FP16 -Inf", req: binaryInfer(tensorHeader("FP16", "[1,1,28,28]", 2*784), bytes.Repeat([]byte{0x00, 0xfc}, 784), ""), status: 400, v2: true},
		{name: "binary: header length past the body", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), make([]byte, tensorBytes), "999999"), status: 400, v2: true},
		{name: "binary: negative header length", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), make([]byte, tensorBytes), "-1"), status: 400, v2: true},
		{name: "binary: header length cuts the JSON", req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), make([]byte, tensorBytes), "10"), status: 400, v2: true},
		// Names, versions and paths.
		{name: "unknown model", req: request("POST", "/v1/models/nope/classify", good, "Content-Type: image/png"), status: 404, code: "model_not_found"},
		{name: "unknown version", req: request("POST", "/v1/models/"+hostModel+"/versions/9/classify", good, "Content-Type: image/png"), status: 404, code: "model_not_found"},
		{name: "version on disk but not served", req: request("POST", "/v1/models/"+hostModel+"/versions/2/classify", good, "Content-Type: image/png"), status: 404, code: "model_not_found",
			note: "version_policy serves the latest only"},
		{name: "leading-zero version", req: request("POST", "/v1/models/"+hostModel+"/versions/03/classify", good, "Content-Type: image/png"), status: 404, code: "model_not_found",
			note: "03 is not 3: one spelling per version"},
		{name: "signed version", req: request("POST", "/v1/models/"+hostModel+"/versions/+3/classify", good, "Content-Type: image/png"), status: 404, code: "model_not_found"},
		{name: "v2 leading-zero version", req: request("POST", "/v2/models/"+hostModel+"/versions/03/infer", []byte(`{}`), "Content-Type: application/json"), status: 404, v2: true},
		{name: "traversal ../", req: request("POST", "/v1/models/../../etc/passwd/classify", good, "Content-Type: image/png"), status: 404, code: "not_found",
			note: "normalised to /etc/passwd/classify"},
		{name: "traversal %2e%2e", req: request("POST", "/v1/models/%2e%2e/%2e%2e/classify", good, "Content-Type: image/png"), status: 404, code: "not_found",
			note: "decoded, then normalised to /classify"},
		{name: "traversal ..%2f", req: request("POST", "/v1/models/..%2f..%2fetc/classify", good, "Content-Type: image/png"), status: 404, code: "not_found",
			note: "normalised to /etc/classify"},
		{name: "traversal in the version", req: request("POST", "/v1/models/"+hostModel+"/versions/..%2f..%2f..%2fetc/classify", good, "Content-Type: image/png"), status: 404, code: "not_found",
			note: "normalised to /v1/etc/classify"},
		{name: "traversal back to the model", req: request("POST", "/v1/models/"+hostModel+"/versions/..%2f..%2f"+hostModel+"/classify", good, "Content-Type: image/png"), status: 200,
			note: "normalised to /v1/models/fashion-resnet/classify: the URL space only, no file is ever named by a request"},
		{name: "absolute path as model name", req: request("POST", "/v1/models/%2Fetc%2Fpasswd/classify", good, "Content-Type: image/png"), status: 404, code: "not_found",
			note: "// collapses: /v1/models/etc/passwd/classify has no route"},
		{name: "double slash", req: request("POST", "/v1/models//"+hostModel+"/classify", good, "Content-Type: image/png"), status: 200,
			note: "fasthttp collapses // to /: the same as the plain path, not a different model"},
		{name: "v2 traversal", req: request("POST", "/v2/models/..%2f..%2fetc/infer", []byte(`{}`), "Content-Type: application/json"), status: 404, code: "not_found",
			note: "normalised out of /v2/models/ altogether, so the v1 error form"},
		{name: "NUL in the model name", req: request("POST", "/v1/models/fashion%00resnet/classify", good, "Content-Type: image/png"), status: 404, code: "model_not_found"},
		// Methods and endpoints.
		{name: "GET classify", req: request("GET", "/v1/models/"+hostModel+"/classify", nil), status: 405, code: "method_not_allowed"},
		{name: "PUT infer", req: request("PUT", "/v2/models/"+hostModel+"/infer", []byte(`{}`)), status: 405, v2: true},
		{name: "DELETE metrics", req: request("DELETE", "/metrics", nil), status: 405, code: "method_not_allowed"},
		{name: "made-up method", req: request("BREW", "/v1/models/"+hostModel+"/classify", good, "Content-Type: image/png"), status: 405, code: "method_not_allowed"},
		{name: "unknown endpoint", req: request("GET", "/v3/anything", nil), status: 404, code: "not_found"},
		{name: "near-miss endpoint", req: request("GET", "/v1/modelsX", nil), status: 404, code: "not_found"},
		{name: "v2 unknown action", req: request("POST", "/v2/models/"+hostModel+"/explain", []byte(`{}`)), status: 404, v2: true},
		// HTTP itself.
		{name: "header line over the 16 KiB read buffer", req: request("GET", "/v2/health/live", nil, "X-Big: "+strings.Repeat("a", 20<<10)), status: 431, code: "headers_too_large",
			note: "fasthttp cannot fit the headers in ReadBufferSize; answered by the server's protocol error handler"},
		{name: "invalid HTTP version", req: []byte("GET /v2/health/live HTTP/9.9x\r\nHost: x\r\n\r\n"), status: 400, code: "bad_request"},
		{name: "not HTTP at all", req: []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), status: 400, code: "bad_request",
			note: "a TLS ClientHello on the plain port"},
		{name: "non-numeric Content-Length", req: []byte("POST /v1/models/" + hostModel + "/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: ten\r\n\r\n"), status: 400, code: "bad_request"},
		{name: "negative Content-Length", req: []byte("POST /v1/models/" + hostModel + "/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: -5\r\n\r\n"), status: 400, code: "bad_request"},
		// Tokens.
		{name: "token: missing", token: true, req: classifyReq(good, "image/png"), status: 401, code: "unauthorized"},
		{name: "token: wrong", token: true, req: classifyReq(good, "image/png", "Authorization: Bearer guess"), status: 401, code: "unauthorized"},
		{name: "token: right token, Basic scheme", token: true, req: classifyReq(good, "image/png", "Authorization: Basic "+hostToken), status: 401, code: "unauthorized"},
		{name: "token: empty bearer", token: true, req: classifyReq(good, "image/png", "Authorization: Bearer "), status: 401, code: "unauthorized"},
		{name: "token: prefix of the token", token: true, req: classifyReq(good, "image/png", "Authorization: Bearer "+hostToken[:5]), status: 401, code: "unauthorized"},
		{name: "token: v2 infer without", token: true, req: binaryInfer(tensorHeader("FP32", "[1,1,28,28]", tensorBytes), make([]byte, tensorBytes), ""), status: 401, v2: true},
		{name: "token: unknown model is still 401", token: true, req: request("POST", "/v1/models/nope/classify", good, "Content-Type: image/png"), status: 401, code: "unauthorized",
			note: "auth comes first: which models exist does not leak"},
		{name: "token: lower-case scheme accepted", token: true, req: classifyReq(good, "image/png", "authorization: bearer "+hostToken), status: 200,
			note: "the scheme is case-insensitive (RFC 7235)"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target, l := base, logs
			if tc.token {
				target, l = tokenBase, tokenLogs
			}
			status, header, body := sendRaw(t, target, tc)
			t.Logf("%d %.200s", status, bytes.TrimSpace(body))
			if status != tc.status {
				t.Errorf("status %d, want %d: %.300s", status, tc.status, body)
			}
			switch {
			case tc.v2:
				var e struct {
					Error *string `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || *e.Error == "" {
					t.Errorf("body %.300q is not {\"error\":\"…\"}", body)
				}
			case tc.code != "":
				var e struct {
					Error *struct{ Code, Message string } `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" {
					t.Errorf("body %.300q is not {\"error\":{\"code\",\"message\"}}", body)
				} else if e.Error.Code != tc.code {
					t.Errorf("code %q, want %q: %s", e.Error.Code, tc.code, e.Error.Message)
				}
			}
			if tc.contains != "" && !bytes.Contains(body, []byte(tc.contains)) {
				t.Errorf("body lacks %s: %.300s", tc.contains, body)
			}
			if status >= 400 && header.Get("Content-Type") != "application/json" {
				t.Errorf("error with Content-Type %q", header.Get("Content-Type"))
			}
			if status == 405 && header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if status == 401 && header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if status >= 500 {
				t.Errorf("server fault; logs:\n%s", l)
			}
			// The server still works.
			var hdr []string
			if tc.token {
				hdr = []string{auth}
			}
			if code, b := classifyGood(target, good, hdr...); code != 200 || !strings.Contains(string(b), bootLabel) {
				t.Fatalf("after %q the good request got %d %s; logs:\n%s", tc.name, code, b, l)
			}
		})
	}
}

// sendRaw writes the case's request on a fresh connection and reads one
// response.
func sendRaw(t *testing.T, base string, tc hostileCase) (int, http.Header, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	// The server may answer and close before the whole request is written
	// (a body over the limit), so writing runs beside reading.
	go func() {
		if tc.stream != nil {
			tc.stream(c)
		} else {
			c.Write(tc.req)
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no HTTP response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp.StatusCode, resp.Header, body
}

func classifyGood(base string, img []byte, headers ...string) (int, []byte) {
	req, err := http.NewRequest("POST", base+"/v1/models/"+hostModel+"/classify?top_k=1", bytes.NewReader(img))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Content-Type", "image/png")
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hostileMultipart(t *testing.T, field string, files ...[]byte) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary("hostile-boundary-7d1f"); err != nil { // one boundary for every body
		t.Fatal(err)
	}
	for i, f := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename="img%d.png"`, field, i))
		h.Set("Content-Type", "image/png")
		p, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		p.Write(f)
	}
	w.Close()
	return w.FormDataContentType(), b.Bytes()
}

// multipartGzipBomb is a gzip-compressed multipart body whose one image
// part holds n zero bytes.
func multipartGzipBomb(t *testing.T, boundary string, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	fmt.Fprintf(zw, "--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"bomb.png\"\r\nContent-Type: image/png\r\n\r\n", boundary)
	zeros := make([]byte, 1<<20)
	for range n >> 20 {
		zw.Write(zeros)
	}
	fmt.Fprintf(zw, "\r\n--%s--\r\n", boundary)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// chunkedUpload streams n bytes of image/png as a chunked body.
func chunkedUpload(n int) func(io.Writer) {
	return func(w io.Writer) {
		fmt.Fprintf(w, "POST /v1/models/%s/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n", hostModel)
		chunk := make([]byte, 1<<20)
		for sent := 0; sent < n; sent += len(chunk) {
			if _, err := fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return // the server answered and closed
			}
		}
		io.WriteString(w, "0\r\n\r\n")
	}
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func grayPNG(t *testing.T, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	return encodePNG(t, img)
}

// decodeGray decodes an 8-bit gray PNG.
func decodeGray(t *testing.T, b []byte) *image.Gray {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := img.(*image.Gray)
	if !ok {
		t.Fatalf("%T, want *image.Gray", img)
	}
	return g
}

// gray16PNG re-encodes an 8-bit gray PNG at 16 bits (v*257: the same
// image).
func gray16PNG(t *testing.T, src []byte) []byte {
	g := decodeGray(t, src)
	img := image.NewGray16(g.Bounds())
	for y := g.Rect.Min.Y; y < g.Rect.Max.Y; y++ {
		for x := g.Rect.Min.X; x < g.Rect.Max.X; x++ {
			img.SetGray16(x, y, color.Gray16{Y: uint16(g.GrayAt(x, y).Y) * 257})
		}
	}
	return encodePNG(t, img)
}

// rgba64PNG re-encodes an 8-bit gray PNG as opaque 16-bit RGBA.
func rgba64PNG(t *testing.T, src []byte) []byte {
	g := decodeGray(t, src)
	img := image.NewRGBA64(g.Bounds())
	for y := g.Rect.Min.Y; y < g.Rect.Max.Y; y++ {
		for x := g.Rect.Min.X; x < g.Rect.Max.X; x++ {
			v := uint16(g.GrayAt(x, y).Y) * 257
			img.SetRGBA64(x, y, color.RGBA64{R: v, G: v, B: v, A: 0xffff})
		}
	}
	return encodePNG(t, img)
}

// gifImage is a 28x28 GIF of the given number of frames.
func gifImage(t *testing.T, frames int) []byte {
	t.Helper()
	g := &gif.GIF{LoopCount: 0}
	for f := range frames {
		img := image.NewPaletted(image.Rect(0, 0, 28, 28), palette.Plan9)
		for i := range img.Pix {
			img.Pix[i] = uint8(i + 40*f)
		}
		g.Image = append(g.Image, img)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngChunk is one PNG chunk with its CRC.
func pngChunk(typ string, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	b = append(b, typ...)
	b = append(b, data...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(append([]byte(typ), data...)))
}

// pngChunks splits a PNG after its signature into (type, data) pairs.
func pngChunks(t *testing.T, b []byte) [][2][]byte {
	t.Helper()
	var out [][2][]byte
	for b = b[8:]; len(b) >= 12; {
		n := int(binary.BigEndian.Uint32(b))
		out = append(out, [2][]byte{b[4:8], b[8 : 8+n]})
		b = b[12+n:]
	}
	return out
}

// apng turns a 28x28 PNG into a two-frame APNG: acTL after IHDR, an fcTL
// before the IDAT (the default image is frame 0), then a second frame as
// fcTL + fdAT holding a gradient.
func apng(t *testing.T, src []byte) []byte {
	second := grayPNG(t, 28, 28)
	fctl := func(seq uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, seq)
		for _, v := range []uint32{28, 28, 0, 0} {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		return append(b, 0, 10, 0, 100, 0, 0) // delay 10/100 s, dispose none, blend source
	}
	var frame2 []byte
	for _, c := range pngChunks(t, second) {
		if string(c[0]) == "IDAT" {
			frame2 = append(frame2, c[1]...)
		}
	}
	out := append([]byte(nil), src[:8]...)
	for _, c := range pngChunks(t, src) {
		switch string(c[0]) {
		case "IHDR":
			out = append(out, pngChunk("IHDR", c[1])...)
			out = append(out, pngChunk("acTL", []byte{0, 0, 0, 2, 0, 0, 0, 0})...)
			out = append(out, pngChunk("fcTL", fctl(0))...)
		case "IDAT":
			out = append(out, pngChunk("IDAT", c[1])...)
		case "IEND":
			out = append(out, pngChunk("fcTL", fctl(1))...)
			out = append(out, pngChunk("fdAT", append([]byte{0, 0, 0, 2}, frame2...))...)
			out = append(out, pngChunk("IEND", nil)...)
		default:
			out = append(out, pngChunk(string(c[0]), c[1])...)
		}
	}
	return out
}

// zeroWidthPNG rewrites the IHDR of a PNG to a width of 0, with a correct
// CRC, so only the value is wrong.
func zeroWidthPNG(t *testing.T, src []byte) []byte {
	out := append([]byte(nil), src[:8]...)
	for _, c := range pngChunks(t, src) {
		data := c[1]
		if string(c[0]) == "IHDR" {
			data = append([]byte{0, 0, 0, 0}, data[4:]...)
		}
		out = append(out, pngChunk(string(c[0]), data)...)
	}
	return out
}

// cmykJPEG is a hand-made 8x8 baseline JPEG with four components and an
// Adobe APP14 marker saying CMYK (transform 0). Every block is all zero
// coefficients, coded with one-symbol Huffman tables: two bits a block.
func cmykJPEG() []byte {
	b := []byte{0xff, 0xd8}
	// APP14 "Adobe": version 100, flags 0, 0, transform 0 (CMYK).
	b = append(b, 0xff, 0xee, 0x00, 0x0e, 'A', 'd', 'o', 'b', 'e', 0x00, 0x64, 0, 0, 0, 0, 0)
	// DQT: table 0, all ones.
	b = append(b, 0xff, 0xdb, 0x00, 0x43, 0x00)
	b = append(b, bytes.Repeat([]byte{1}, 64)...)
	// SOF0: 8 bits, 8x8, 4 components 1..4, no subsampling, table 0.
	b = append(b, 0xff, 0xc0, 0x00, 0x14, 8, 0, 8, 0, 8, 4)
	for id := byte(1); id <= 4; id++ {
		b = append(b, id, 0x11, 0)
	}
	// DHT: DC table 0 and AC table 0, each one code of length 1 for
	// symbol 0 (DC: difference 0; AC: end of block).
	b = append(b, 0xff, 0xc4, 0x00, 0x26)
	for _, class := range []byte{0x00, 0x10} {
		b = append(b, class, 1)
		b = append(b, make([]byte, 15)...)
		b = append(b, 0)
	}
	// SOS: the four components with tables 0/0, spectral 0..63.
	b = append(b, 0xff, 0xda, 0x00, 0x0e, 4)
	for id := byte(1); id <= 4; id++ {
		b = append(b, id, 0x00)
	}
	b = append(b, 0, 63, 0)
	// Four blocks of "0" (DC 0) + "0" (EOB): one zero byte.
	b = append(b, 0x00)
	return append(b, 0xff, 0xd9)
}
