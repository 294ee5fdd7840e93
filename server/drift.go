package server

import (
	"bytes"
	"encoding/json"

	"github.com/valyala/fasthttp"

	"fastinfer/monitor/drift"
)

// driftReport answers GET /v1/models/{m}[/versions/{v}]/drift: the drift
// tests of the version's recent predictions against its reference
// profile, as JSON, or as an HTML page with plots for ?format=html.
func (s *Server) driftReport(ctx *fasthttp.RequestCtx, name, version string) {
	m, aerr := s.models.get(name, version)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	if m.Drift == nil {
		writeError(ctx, errorf(404, codeNotFound, "model "+m.Name+" version "+m.versionLabel+
			" has no reference profile ("+drift.ReferenceFile+"); create one with `fastinfer monitor reference`"))
		return
	}
	r := m.Drift.Check()
	if string(ctx.QueryArgs().Peek("format")) == "html" {
		var b bytes.Buffer
		if err := drift.WriteHTML(&b, r, m.Drift.Profile()); err != nil {
			writeError(ctx, errorf(500, codeInternal, "drift report: "+err.Error()))
			return
		}
		ctx.SetContentType("text/html; charset=utf-8")
		ctx.Response.SetBodyRaw(b.Bytes())
		return
	}
	out, err := json.Marshal(r)
	if err != nil {
		writeError(ctx, errorf(500, codeInternal, "drift report: "+err.Error()))
		return
	}
	ctx.SetContentType("application/json")
	ctx.Response.SetBodyRaw(append(out, '\n'))
}
