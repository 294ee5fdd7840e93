package server

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error codes of the {"error":{"code","message"}} body. Clients switch on
// the code; the message is for people.
const (
	codeBadImage        = "bad_image"
	codeBadRequest      = "bad_request"
	codeModelNotFound   = "model_not_found"
	codeNotFound        = "not_found"
	codeMethod          = "method_not_allowed"
	codeTooLarge        = "too_large"
	codeHeadersTooLarge = "headers_too_large"
	codeMediaType       = "unsupported_media_type"
	codeQueueFull       = "queue_full"
	codeQueueTimeout    = "queue_timeout"
	codeUnmeetable      = "deadline_unmeetable"
	codeClientGone      = "client_gone"
	codeUnavailable     = "unavailable"
	codeNonFinite       = "non_finite_output"
	codeInternal        = "internal"
)

// apiError is an error with the HTTP status and code it is answered with.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

// writeError answers with the JSON error body. It is written by hand: error
// paths are hot under overload.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.Response.Reset()
	ctx.SetStatusCode(e.status)
	ctx.SetContentType("application/json")
	b := ctx.Response.Body()[:0]
	b = append(b, `{"error":{"code":`...)
	b = appendJSONString(b, e.code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.message)
	b = append(b, "}}\n"...)
	ctx.Response.SetBodyRaw(b)
	if e.status == fasthttp.StatusTooManyRequests || e.status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal (RFC 8259 escaping;
// invalid UTF-8 passes through as the bytes it is, which JSON decoders
// replace, rather than failing the response).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendFloat appends f with the fewest digits that round-trip as float32.
func appendFloat(b []byte, f float64, bits int) []byte {
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}
