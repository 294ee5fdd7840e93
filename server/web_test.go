package server

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWebServesPageAndAssets(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	index := readWebFile(t, "index.html")
	tests := []struct {
		name, method, path string
		wantType           string
		wantBody           string // the whole body, for GET
	}{
		{"index", "GET", "/", "text/html; charset=utf-8", index},
		{"index by name", "GET", "/ui/index.html", "text/html; charset=utf-8", index},
		{"script", "GET", "/ui/app.js", "text/javascript; charset=utf-8", readWebFile(t, "app.js")},
		{"style", "GET", "/ui/style.css", "text/css; charset=utf-8", readWebFile(t, "style.css")},
		{"icon", "GET", "/ui/favicon.svg", "image/svg+xml", readWebFile(t, "favicon.svg")},
		{"query ignored", "GET", "/ui/app.js?v=2", "text/javascript; charset=utf-8", readWebFile(t, "app.js")},
		{"index HEAD", "HEAD", "/", "text/html; charset=utf-8", ""},
		{"script HEAD", "HEAD", "/ui/app.js", "text/javascript; charset=utf-8", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.do(t, tt.method, tt.path, "", nil)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if got := r.header["Content-Type"]; got != tt.wantType {
				t.Errorf("Content-Type %q, want %q", got, tt.wantType)
			}
			if r.body != tt.wantBody {
				t.Errorf("body is %d bytes, want %d", len(r.body), len(tt.wantBody))
			}
			if tt.method == "HEAD" {
				a := webAssets[strings.SplitN(tt.path, "?", 2)[0]]
				if got := r.header["Content-Length"]; got != strconv.Itoa(len(a.body)) {
					t.Errorf("HEAD Content-Length %q, want %d", got, len(a.body))
				}
			}
			if r.header["Etag"] == "" || r.header["Cache-Control"] != "no-cache" {
				t.Errorf("caching headers: ETag %q, Cache-Control %q", r.header["Etag"], r.header["Cache-Control"])
			}
			if r.header["X-Content-Type-Options"] != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", r.header["X-Content-Type-Options"])
			}
			csp := r.header["Content-Security-Policy"]
			if isHTML := strings.HasPrefix(tt.wantType, "text/html"); isHTML != (csp != "") {
				t.Errorf("Content-Security-Policy %q on %s", csp, tt.wantType)
			}
		})
	}
}

func TestWebNotFound(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	tests := []struct{ name, path string }{
		{"unknown asset", "/ui/nope.js"},
		{"folder", "/ui/"},
		{"embedded folder name", "/ui/web/app.js"},
		{"trailing slash", "/ui/app.js/"},
		{"case differs", "/ui/App.js"},
		{"traversal", "/ui/../server.go"},
		{"encoded traversal", "/ui/%2e%2e/web.go"},
		{"encoded slash traversal", "/ui/..%2fweb.go"},
		{"deep traversal", "/ui/../../../../etc/passwd"},
		{"NUL", "/ui/app.js%00"},
		{"Go source", "/ui/web.go"},
		{"index outside ui", "/index.html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Sent raw, so no client tidies the path before the server sees it.
			status, ct, body := rawRequest(t, ts, "GET", tt.path, "")
			if status != 404 || ct != "application/json" {
				t.Fatalf("%s: status %d, Content-Type %q: %s", tt.path, status, ct, body)
			}
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != codeNotFound || e.Error.Message == "" {
				t.Fatalf("%s: body %q (%v)", tt.path, body, err)
			}
			if strings.Contains(body, "package server") {
				t.Fatalf("%s: served Go source", tt.path)
			}
		})
	}
}

func TestWebMethodAndRevalidation(t *testing.T) {
	ts := newTestServer(t, Options{}, fakeModel("toy", 1))
	if r := ts.do(t, "POST", "/", "text/plain", []byte("x")); r.status != 405 || !strings.Contains(r.body, codeMethod) {
		t.Errorf("POST /: %d %s", r.status, r.body)
	}
	etag := webAssets["/ui/app.js"].etag
	tests := []struct {
		name, ifNoneMatch string
		want              int
	}{
		{"same", etag, 304},
		{"weak", "W/" + etag, 304},
		{"in a list", `"other", ` + etag, 304},
		{"star", "*", 304},
		{"stale", `"stale"`, 200},
		{"none", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := rawRequest(t, ts, "GET", "/ui/app.js", tt.ifNoneMatch)
			if status != tt.want {
				t.Fatalf("If-None-Match %q: status %d, want %d", tt.ifNoneMatch, status, tt.want)
			}
			if (status == 304) != (body == "") {
				t.Fatalf("status %d with a %d-byte body", status, len(body))
			}
		})
	}
}

// The page is self-contained: every asset it names is embedded and typed,
// nothing points off the server, and the ids the browser test and app.js
// rely on are there.
func TestWebPageIsSelfContained(t *testing.T) {
	index := readWebFile(t, "index.html")
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(index, -1)
	if len(refs) == 0 {
		t.Fatal("index.html names no assets")
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "/ui/") && webAssets[ref] == nil {
			t.Errorf("index.html names %s, which is not embedded", ref)
		}
		if strings.Contains(ref, "//") {
			t.Errorf("index.html names %s, off this server", ref)
		}
	}
	offsite := regexp.MustCompile(`(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for p, a := range webAssets {
		if a.contentType == "application/octet-stream" {
			t.Errorf("%s has no media type: add its extension to webTypes", p)
		}
		for _, u := range offsite.FindAllString(string(a.body), -1) {
			if u != "http://www.w3.org" { // the SVG namespace
				t.Errorf("%s refers to %s: the page must work offline", p, u)
			}
		}
	}
	for _, id := range []string{"model", "file", "preview", "predictions", "timing", "card", "confusion", "error"} {
		if !strings.Contains(index, `id="`+id+`"`) {
			t.Errorf("index.html has no #%s", id)
		}
	}
}

func readWebFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("web", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rawRequest sends one request with the path exactly as given and returns
// the status, Content-Type and body.
func rawRequest(t *testing.T, ts *testServer, method, path, ifNoneMatch string) (int, string, string) {
	t.Helper()
	conn, err := ts.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := method + " " + path + " HTTP/1.1\r\nHost: fastinfer\r\nConnection: close\r\n"
	if ifNoneMatch != "" {
		req += "If-None-Match: " + ifNoneMatch + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// The page's script parses: node checks its syntax when it is installed
// (npm, which scripts/deps.sh installs to fetch ONNX Runtime, brings it).
func TestWebScriptParses(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	for _, f := range []string{"app.js"} {
		if out, err := exec.Command(node, "--check", filepath.Join("web", f)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}
