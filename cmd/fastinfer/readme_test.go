package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The README's API examples are what a user types first, so they run here
// against a served repository like `make run`'s, in README order: every
// ```sh block that talks to localhost:8080, with the ```json block after it
// (if any) as the expected answer. An HTML comment on the line before a
// block changes that: `<!-- readme-test: skip -->` leaves it out, and
// `<!-- readme-test: run -->` runs it without comparing (its answer varies,
// as a random photo's does) but still fails on an error answer.
//
// Matching, for prose-shaped examples: the example's JSON documents must
// appear in order among the documents the commands print (lines that are
// not JSON, as headers from curl -i, are passed over); objects match when
// every key shown matches (so examples may leave keys out), timing_ms
// values are not compared, numbers match to 1e-4 relative, and an array
// ending in … matches any array that starts with the elements shown.
func TestREADMEExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server; skipped in -short")
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples := readmeExamples(string(readme))
	if len(examples) < 5 {
		t.Fatalf("found %d runnable examples in README.md; the parser lost them", len(examples))
	}

	// make run's repository: the committed default model and a ResNet-50.
	repo := fashionRepo(t)
	if err := os.Symlink(filepath.Join(testRepo(t), "resnet50"), filepath.Join(repo, "resnet50")); err != nil {
		t.Fatal(err)
	}
	const token = "readme-token"
	base, _, stop := startServe(t, repo, "--admin-token", token)
	defer stop()
	addr := strings.TrimPrefix(base, "http://")
	// Examples marked "shm" need a server started with --allow-client-shm.
	shmAddr := ""

	// The files the examples name, in a folder of their own.
	dir := t.TempDir()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "testdata"), filepath.Join(dir, "testdata")); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{
		"photo.jpg": "vision/testdata/baboon.jpg",
		"a.jpg":     "vision/testdata/fruits.jpg",
		"b.png":     "vision/testdata/smarties.png",
	} {
		b, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, ex := range examples {
		name := fmt.Sprintf("line%d", ex.line)
		if ex.mode == "skip" {
			t.Logf("%s: skipped (marked)", name)
			continue
		}
		target := addr
		if ex.mode == "shm" {
			if shmAddr == "" {
				b, _, stopShm := startServe(t, repo, "--allow-client-shm")
				defer stopShm()
				shmAddr = strings.TrimPrefix(b, "http://")
			}
			target = shmAddr
		}
		script := strings.ReplaceAll(ex.sh, "localhost:8080", target)
		cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TOKEN="+token)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("README line %d: %v\n%s\nstderr: %s", ex.line, err, ex.sh, stderr.String())
			continue
		}
		got := jsonDocs(out)
		for _, d := range got {
			if m, ok := d.(map[string]any); ok && m["error"] != nil {
				t.Errorf("README line %d answered an error: %v", ex.line, m["error"])
			}
		}
		if ex.mode == "run" || ex.want == "" {
			continue
		}
		want, err := exampleDocs(ex.want)
		if err != nil {
			t.Errorf("README line %d's expected answer is not JSON: %v", ex.line, err)
			continue
		}
		if err := matchDocs(want, got); err != nil {
			t.Errorf("README line %d: %v\ncommands:\n%s\nprinted:\n%s", ex.line, err, ex.sh, out)
		}
	}
}

type readmeExample struct {
	line int    // the ```sh fence's line number
	sh   string // the commands
	want string // the ```json block after it, or ""
	mode string // "", "skip", "run" or "shm" (a server with --allow-client-shm)
}

// readmeExamples finds the ```sh blocks that talk to localhost:8080 (fences
// may be indented, as in a list) and the ```json block following each
// before the next ```sh.
func readmeExamples(md string) []readmeExample {
	var out []readmeExample
	var cur *readmeExample
	var block strings.Builder
	kind, mode := "", ""
	inBlock := false
	sc := bufio.NewScanner(strings.NewReader(md))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if !inBlock {
			switch {
			case strings.HasPrefix(trim, "```"):
				inBlock, kind = true, strings.TrimPrefix(trim, "```")
				block.Reset()
				if kind == "sh" {
					if cur != nil {
						out = append(out, *cur)
					}
					cur = &readmeExample{line: n, mode: mode}
				}
			case strings.HasPrefix(trim, "<!-- readme-test:"):
				// The first word is the mode; the rest says why.
				mode, _, _ = strings.Cut(strings.TrimSpace(strings.TrimPrefix(trim, "<!-- readme-test:")), " ")
				continue
			}
			if trim != "" {
				mode = ""
			}
			continue
		}
		if strings.HasPrefix(trim, "```") {
			inBlock = false
			switch {
			case kind == "sh" && cur != nil:
				cur.sh = block.String()
			case kind == "json" && cur != nil && cur.want == "":
				cur.want = block.String()
			}
			continue
		}
		block.WriteString(line)
		block.WriteByte('\n')
	}
	if cur != nil {
		out = append(out, *cur)
	}
	var talk []readmeExample
	for _, ex := range out {
		if strings.Contains(ex.sh, "localhost:8080") {
			talk = append(talk, ex)
		}
	}
	return talk
}

// jsonDocs decodes every JSON object or array that starts a line of out.
func jsonDocs(out []byte) []any {
	var docs []any
	for i := 0; i < len(out); {
		if out[i] == '{' || out[i] == '[' {
			dec := json.NewDecoder(bytes.NewReader(out[i:]))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err == nil {
				docs = append(docs, v)
				i += int(dec.InputOffset())
				continue
			}
		}
		nl := bytes.IndexByte(out[i:], '\n')
		if nl < 0 {
			break
		}
		i += nl + 1
	}
	return docs
}

// ellipsis stands for the elements an example leaves out of an array.
const ellipsis = "…"

// exampleDocs parses an expected-answer block: JSON documents, where
// ", …]" ends an array that goes on.
func exampleDocs(s string) ([]any, error) {
	s = strings.ReplaceAll(s, ", "+ellipsis+"]", `,"`+ellipsis+`"]`)
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			return nil, err
		}
		docs = append(docs, v)
	}
}

// matchDocs checks that want's documents appear, in order, among got's.
func matchDocs(want, got []any) error {
	j := 0
	for i, w := range want {
		var misses []string
		for ; j < len(got); j++ {
			err := matchJSON("$", w, got[j])
			if err == nil {
				break
			}
			misses = append(misses, err.Error())
		}
		if j == len(got) {
			return fmt.Errorf("expected document %d not printed; against each document left: %s", i+1, strings.Join(misses, "; "))
		}
		j++
	}
	return nil
}

func matchJSON(path string, want, got any) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %v", path, got)
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: missing", path, k)
			}
			if k == "timing_ms" {
				continue
			}
			if err := matchJSON(path+"."+k, wv, gv); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, got %v", path, got)
		}
		open := len(w) > 0 && w[len(w)-1] == ellipsis
		if open {
			w = w[:len(w)-1]
		}
		if len(g) < len(w) || (!open && len(g) != len(w)) {
			return fmt.Errorf("%s: want %d elements, got %d", path, len(w), len(g))
		}
		for i := range w {
			if err := matchJSON(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want %s, got %v", path, w, got)
		}
		wf, _ := w.Float64()
		gf, _ := g.Float64()
		if !closeEnough(wf, gf) {
			return fmt.Errorf("%s: want %s, got %s", path, w, g)
		}
		return nil
	case string:
		g, ok := got.(string)
		if !ok || !sameScoreString(w, g) {
			return fmt.Errorf("%s: want %q, got %v", path, w, got)
		}
		return nil
	}
	if want != got {
		return fmt.Errorf("%s: want %v, got %v", path, want, got)
	}
	return nil
}

func closeEnough(a, b float64) bool {
	return math.Abs(a-b) <= 1e-4*math.Max(math.Abs(a), math.Abs(b))+1e-6
}

// sameScoreString compares strings, and Triton's "score:index:label"
// classification strings with the score to closeEnough (logits differ in
// their last bits between CPUs).
func sameScoreString(want, got string) bool {
	if want == got {
		return true
	}
	ws, wrest, ok1 := strings.Cut(want, ":")
	gs, grest, ok2 := strings.Cut(got, ":")
	if !ok1 || !ok2 || wrest != grest {
		return false
	}
	wf, err1 := strconv.ParseFloat(ws, 64)
	gf, err2 := strconv.ParseFloat(gs, 64)
	return err1 == nil && err2 == nil && closeEnough(wf, gf)
}

// The matcher itself must be able to say no.
func TestMatchDocs(t *testing.T) {
	docs := func(s string) []any {
		t.Helper()
		d, err := exampleDocs(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	printed := jsonDocs([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" +
		`{"a":1,"b":[1,2,3],"s":"5.580411:0:T-shirt/top","timing_ms":{"total":3}}` + "\n" +
		"# HELP x\nx 1\n" + `[{"v":"3"}]` + "\n"))
	if len(printed) != 2 {
		t.Fatalf("decoded %d documents from the output, want 2: %v", len(printed), printed)
	}
	tests := []struct {
		want string
		ok   bool
	}{
		{`{"a":1}`, true},
		{`{"a":1.00001}`, true},
		{`{"a":1.1}`, false},
		{`{"c":1}`, false},
		{`{"b":[1,2,3]}`, true},
		{`{"b":[1,2]}`, false},
		{`{"b":[1,2, …]}`, true},
		{`{"b":[2, …]}`, false},
		{`{"s":"5.5804114:0:T-shirt/top"}`, true},
		{`{"s":"5.580411:1:T-shirt/top"}`, false},
		{`{"s":"5.6:0:T-shirt/top"}`, false},
		{`{"timing_ms":{"total":99}}`, true},
		{`{"a":1} [{"v":"3"}]`, true},
		{`[{"v":"3"}] {"a":1}`, false}, // out of order
		{`[{"v":"4"}]`, false},
		{`{"a":"1"}`, false},
	}
	for _, tt := range tests {
		err := matchDocs(docs(tt.want), printed)
		if (err == nil) != tt.ok {
			t.Errorf("%s: match = %v, want ok=%v", tt.want, err, tt.ok)
		}
	}
}

func TestReadmeExamplesParse(t *testing.T) {
	md := "text\n```sh\ncurl localhost:8080/a\n```\n\nsays\n\n```json\n{\"x\":1}\n```\n" +
		"<!-- readme-test: run -->\n  ```sh\n  curl localhost:8080/b\n  ```\n" +
		"```sh\nmake run\n```\n```json\n{}\n```\n" +
		"<!-- readme-test: skip (why) -->\n\n```sh\ncurl localhost:8080/c\n```\n"
	got := readmeExamples(md)
	want := []readmeExample{
		{line: 2, sh: "curl localhost:8080/a\n", want: "{\"x\":1}\n"},
		{line: 12, sh: "  curl localhost:8080/b\n", mode: "run"},
		{line: 23, sh: "curl localhost:8080/c\n", mode: "skip"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// Every serve flag has its row in the README's Configuration table, and
// every flag there exists.
func TestServeFlagsDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		names, _, _ := strings.Cut(line[1:], "|")
		for _, f := range strings.Split(names, ",") {
			documented[strings.Trim(strings.TrimSpace(f), "`-")] = true
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	serveFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !documented[f.Name] {
			t.Errorf("serve --%s is not in the README's Configuration table", f.Name)
		}
		delete(documented, f.Name)
	})
	for name := range documented {
		t.Errorf("the README documents --%s, which serve does not have", name)
	}
}
