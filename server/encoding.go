package server

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"strconv"

	"github.com/valyala/fasthttp"
)

// requestBody is the request's body, inflated when it came with
// Content-Encoding gzip or deflate: Triton's clients send either when told
// to compress requests (request_compression_algorithm), and the
// Inference-Header-Content-Length they send counts the inflated JSON.
// The inflated body is held to MaxBodyBytes as a plain one is: a body
// within the limit can inflate a thousandfold.
func (s *Server) requestBody(ctx *fasthttp.RequestCtx) ([]byte, *apiError) {
	body := ctx.PostBody()
	enc := ctx.Request.Header.ContentEncoding()
	if len(enc) == 0 { // the hot path: nothing to look at or allocate
		return body, nil
	}
	enc = bytes.ToLower(bytes.TrimSpace(enc))
	var r io.Reader
	var err error
	switch string(enc) {
	case "", "identity":
		return body, nil
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(body))
	case "deflate":
		r, err = inflate(bytes.NewReader(body))
	default:
		return nil, errorf(415, codeMediaType, "Content-Encoding "+strconv.Quote(string(enc))+" is not supported: send gzip, deflate or an uncompressed body")
	}
	if err != nil {
		return nil, errorf(400, codeBadRequest, "the "+string(enc)+" body does not decompress: "+err.Error())
	}
	limit := int64(s.opts.MaxBodyBytes)
	var out bytes.Buffer
	out.Grow(int(min(int64(len(body))*4, limit)))
	n, err := out.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, errorf(400, codeBadRequest, "the "+string(enc)+" body does not decompress: "+err.Error())
	}
	if n > limit {
		return nil, errorf(413, codeTooLarge, "the "+string(enc)+" body inflates beyond the "+strconv.FormatInt(limit, 10)+"-byte limit")
	}
	return out.Bytes(), nil
}

// inflate reads deflate as HTTP and gRPC mean it: zlib-wrapped (RFC 9110,
// RFC 1950), or the bare stream some clients send, which has no header to
// check. A zlib header is compression method 8 in two bytes that are a
// multiple of 31 (RFC 1950 §2.2).
func inflate(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	if h, err := br.Peek(2); err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}
