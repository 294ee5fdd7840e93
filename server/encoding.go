package server

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
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
		// HTTP's deflate is zlib-wrapped (RFC 9110); some clients send the
		// bare stream, which has no zlib header to check.
		if r, err = zlib.NewReader(bytes.NewReader(body)); errors.Is(err, zlib.ErrHeader) {
			r, err = flate.NewReader(bytes.NewReader(body)), nil
		}
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
