package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportsRoute(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "reports")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Written in an order unlike the names' to show the index sorts.
	names := []string{"report-20260314-090000.html", "report-20260315-000000.html", "report-20260314-120000.html"}
	for _, n := range names {
		write(filepath.Join(dir, n), "<!DOCTYPE html><title>"+n+"</title>")
	}
	write(filepath.Join(dir, "notes.txt"), "not a report")
	write(filepath.Join(dir, ".report-20260316-000000.html.tmp"), "half written")
	write(filepath.Join(root, "secret.html"), "secret")
	write(filepath.Join(root, "report-20260101-000000.html"), "outside the folder")
	if err := os.Mkdir(filepath.Join(dir, "report-20260317-000000.html"), 0o755); err != nil { // a folder with a report's name
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "secret.html"), filepath.Join(dir, "report-20260318-000000.html")); err != nil {
		t.Fatal(err)
	}

	ts := newTestServer(t, Options{ReportsDir: dir})

	r := ts.do(t, "GET", "/reports/", "", nil)
	if r.status != 200 || !strings.HasPrefix(r.header["Content-Type"], "text/html") {
		t.Fatalf("index: %d %s", r.status, r.header["Content-Type"])
	}
	if !strings.Contains(r.header["Content-Security-Policy"], "default-src 'none'") {
		t.Errorf("index CSP %q", r.header["Content-Security-Policy"])
	}
	i0 := strings.Index(r.body, `href="report-20260315-000000.html"`)
	i1 := strings.Index(r.body, `href="report-20260314-120000.html"`)
	i2 := strings.Index(r.body, `href="report-20260314-090000.html"`)
	if i0 < 0 || !(i0 < i1 && i1 < i2) {
		t.Errorf("index is not the three reports newest first (%d %d %d):\n%s", i0, i1, i2, r.body)
	}
	for _, hidden := range []string{"notes.txt", ".report-", "20260317", "20260318", "secret"} {
		if strings.Contains(r.body, hidden) {
			t.Errorf("index lists %q", hidden)
		}
	}
	if !strings.Contains(r.body, "2026-03-15 00:00:00") {
		t.Error("index lacks the reports' times")
	}

	r = ts.do(t, "GET", "/reports/report-20260314-120000.html", "", nil)
	if r.status != 200 || r.header["Content-Type"] != "text/html; charset=utf-8" || r.body != "<!DOCTYPE html><title>report-20260314-120000.html</title>" {
		t.Errorf("report: %d %q %q", r.status, r.header["Content-Type"], r.body)
	}
	if csp := r.header["Content-Security-Policy"]; !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script") {
		t.Errorf("report CSP %q", csp)
	}
	if r := ts.do(t, "HEAD", "/reports/report-20260314-120000.html", "", nil); r.status != 200 {
		t.Errorf("HEAD: %d", r.status)
	}
	if r := ts.do(t, "POST", "/reports/report-20260314-120000.html", "", nil); r.status != 405 {
		t.Errorf("POST: %d", r.status)
	}
	if r := ts.do(t, "GET", "/reports", "", nil); r.status != 301 || !strings.HasSuffix(r.header["Location"], "/reports/") {
		t.Errorf("/reports: %d %q", r.status, r.header["Location"])
	}

	for _, p := range []string{
		"/reports/notes.txt",
		"/reports/secret.html",
		"/reports/../secret.html",
		"/reports/%2e%2e/secret.html",
		"/reports/..%2fsecret.html",
		"/reports/%2e%2e%2freport-20260101-000000.html",
		"/reports/../reports/../report-20260101-000000.html",
		"/reports//etc/passwd",
		"/reports/report-20260314-120000.html/",
		"/reports/report-20260314-120000.html%00",
		"/reports/report-20260314-120000.htm",
		"/reports/REPORT-20260314-120000.html",
		"/reports/report-2026031-1200000.html",
		"/reports/x/report-20260314-120000.html",
		"/reports/.report-20260316-000000.html.tmp",
		"/reports/report-20260317-000000.html", // a folder
		"/reports/report-20260318-000000.html", // a symlink out of the folder
		"/reports/report-20991231-235959.html", // no such file
	} {
		r := ts.do(t, "GET", p, "", nil)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if r.status != 404 || json.Unmarshal([]byte(r.body), &e) != nil || e.Error.Code != "not_found" {
			t.Errorf("GET %s: %d %q, want a 404 JSON error", p, r.status, r.body)
		}
		if strings.Contains(r.body, "secret") && !strings.Contains(r.body, "no such") {
			t.Errorf("GET %s leaked a file: %q", p, r.body)
		}
	}
}

func TestReportsRouteOffAndEmpty(t *testing.T) {
	off := newTestServer(t, Options{})
	if r := off.do(t, "GET", "/reports/", "", nil); r.status != 404 || !strings.Contains(r.body, "not_found") {
		t.Errorf("without ReportsDir: %d %s", r.status, r.body)
	}
	empty := newTestServer(t, Options{ReportsDir: filepath.Join(t.TempDir(), "not-yet")})
	if r := empty.do(t, "GET", "/reports/", "", nil); r.status != 200 || !strings.Contains(r.body, `id="none"`) {
		t.Errorf("missing folder: %d %s", r.status, r.body)
	}
}
