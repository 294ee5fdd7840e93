package server

import "github.com/valyala/fasthttp"

// web serves the embedded page that tries a model from a browser: GET /
// and its assets under /ui/.
func (s *Server) web(ctx *fasthttp.RequestCtx, path []byte) {
	writeError(ctx, errorf(404, codeNotFound, "no such endpoint: "+string(path)))
}
