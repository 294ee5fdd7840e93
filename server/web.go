package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"

	"github.com/valyala/fasthttp"
)

// webFiles is the page that tries a model from a browser: plain HTML, CSS
// and JavaScript with no build step and nothing fetched from elsewhere, so
// it works offline.
//
//go:embed web
var webFiles embed.FS

// webAsset is one embedded file, ready to answer with.
type webAsset struct {
	body        []byte
	contentType string
	etag        string
}

// webTypes are the media types of the extensions the page uses. A fixed
// table rather than mime.TypeByExtension: the answer must not depend on
// the host's /etc/mime.types.
var webTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// webAssets maps each exact request path to its file: "/" to index.html
// and /ui/NAME to every embedded web/NAME. Nothing else is served, so no
// path can reach outside the embedded folder.
var webAssets = loadWebAssets(webFiles)

func loadWebAssets(fsys fs.FS) map[string]*webAsset {
	out := map[string]*webAsset{}
	err := fs.WalkDir(fsys, "web", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		ct, ok := webTypes[path.Ext(name)]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		a := &webAsset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		rel := name[len("web/"):]
		out["/ui/"+rel] = a
		if rel == "index.html" {
			out["/"] = a
		}
		return nil
	})
	if err != nil {
		panic("server: reading the embedded web page: " + err.Error())
	}
	return out
}

// webCSP keeps the page to its own origin: scripts and styles only from
// /ui/, images from the origin and from the blob: URL of the preview.
const webCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// web serves the embedded page that tries a model from a browser: GET /
// and its assets under /ui/.
func (s *Server) web(ctx *fasthttp.RequestCtx, path []byte) {
	a := webAssets[string(path)]
	if a == nil {
		writeError(ctx, errorf(404, codeNotFound, "no such page or asset: "+string(path)))
		return
	}
	h := &ctx.Response.Header
	h.Set("ETag", a.etag)
	// Names are not fingerprinted, so the browser revalidates each time;
	// the ETag makes that a 304 with no body.
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if a.contentType == webTypes[".html"] {
		h.Set("Content-Security-Policy", webCSP)
		h.Set("Referrer-Policy", "no-referrer")
	}
	if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatch(inm, a.etag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(a.contentType)
	ctx.Response.SetBodyRaw(a.body)
}

// etagMatch reports whether an If-None-Match header names etag: "*", or a
// comma-separated list compared weakly (a W/ prefix is ignored).
func etagMatch(header []byte, etag string) bool {
	for _, t := range bytes.Split(header, []byte{','}) {
		t = bytes.TrimSpace(t)
		t = bytes.TrimPrefix(t, []byte("W/"))
		if string(t) == "*" || string(t) == etag {
			return true
		}
	}
	return false
}
