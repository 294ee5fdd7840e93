package server

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// reportName is the only file name /reports/ serves: what `fastinfer serve
// --report-every` writes (report-YYYYMMDD-HHMMSS.html, UTC). Anything else
// in the folder, and any other path, is not found.
var reportName = regexp.MustCompile(`^report-[0-9]{8}-[0-9]{6}\.html$`)

var (
	pathReportsDir = []byte("/reports")
	pathReports    = []byte("/reports/")
)

// reportCSP: a report is static, self-contained HTML with inline styles
// and SVG; it may run no script and load nothing.
const reportCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// maxReportBytes bounds a report file served (a report is tens of kB).
const maxReportBytes = 64 << 20

// reports answers GET /reports/ (an index of the report files, newest
// first) and GET /reports/{name} for an exact report file name, from
// Options.ReportsDir.
func (s *Server) reports(ctx *fasthttp.RequestCtx, path []byte) {
	if !allow(ctx, "GET") {
		return
	}
	if bytes.Equal(path, pathReportsDir) {
		ctx.Redirect("/reports/", fasthttp.StatusMovedPermanently)
		return
	}
	if s.opts.ReportsDir == "" {
		writeError(ctx, errorf(404, codeNotFound, "reports are not kept by this server (see serve --report-every)"))
		return
	}
	name := string(path[len(pathReports):])
	if name == "" {
		s.reportIndex(ctx)
		return
	}
	if !reportName.MatchString(name) {
		writeError(ctx, errorf(404, codeNotFound, "no such report: "+name))
		return
	}
	full := filepath.Join(s.opts.ReportsDir, name)
	// Only a regular file: not a symlink that leads elsewhere.
	st, err := os.Lstat(full)
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxReportBytes {
		writeError(ctx, errorf(404, codeNotFound, "no such report: "+name))
		return
	}
	body, err := os.ReadFile(full)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			writeError(ctx, errorf(404, codeNotFound, "no such report: "+name))
			return
		}
		s.log.Error("reading a report", "file", full, "err", err)
		writeError(ctx, errorf(500, codeInternal, "reading the report failed"))
		return
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", reportCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.SetLastModified(st.ModTime())
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.Response.SetBodyRaw(body)
}

type reportEntry struct {
	Name, Time, Size string
}

var reportIndexTmpl = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>Prediction reports</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 760px; padding: 0 1em; color: #1f2328; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #e4e8ec; padding: 4px 12px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #59636e; }
</style>
</head>
<body>
<h1>Prediction reports</h1>
{{- if .}}
<table>
<thead><tr><th>Report</th><th>Period ending (UTC)</th><th>Size</th></tr></thead>
<tbody>
{{- range .}}
<tr><td><a href="{{.Name}}">{{.Name}}</a></td><td>{{.Time}}</td><td class="n">{{.Size}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p class="muted" id="none">No reports yet: <code>fastinfer serve --report-every 3h</code> writes one per period.</p>
{{- end}}
</body>
</html>
`))

// reportIndex lists the report files, newest first (the names sort by
// time). A missing folder is an empty list.
func (s *Server) reportIndex(ctx *fasthttp.RequestCtx) {
	entries, err := os.ReadDir(s.opts.ReportsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("listing reports", "dir", s.opts.ReportsDir, "err", err)
		writeError(ctx, errorf(500, codeInternal, "listing the reports failed"))
		return
	}
	var list []reportEntry
	for _, e := range entries {
		name := e.Name()
		if !reportName.MatchString(name) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		when := strings.TrimSuffix(strings.TrimPrefix(name, "report-"), ".html")
		ts := when
		if t, err := time.Parse("20060102-150405", when); err == nil {
			ts = t.Format("2006-01-02 15:04:05")
		}
		list = append(list, reportEntry{Name: name, Time: ts, Size: fmtBytes(info.Size())})
	}
	slices.SortFunc(list, func(a, b reportEntry) int { return strings.Compare(b.Name, a.Name) })
	var b bytes.Buffer
	if err := reportIndexTmpl.Execute(&b, list); err != nil {
		writeError(ctx, errorf(500, codeInternal, "reports index: "+err.Error()))
		return
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", reportCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.Response.SetBodyRaw(b.Bytes())
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
