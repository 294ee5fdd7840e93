package drift

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// parseXML checks the page is well-formed XML (the template writes
// XHTML-compatible markup) and counts elements by name.
func parseXML(t *testing.T, page []byte) map[string]int {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(page))
	d.Strict = true
	counts := map[string]int{}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return counts
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, page)
		}
		if se, ok := tok.(xml.StartElement); ok {
			counts[se.Name.Local]++
			for _, a := range se.Attr {
				if a.Name.Local == "class" && strings.HasPrefix(a.Value, "test") {
					counts["test-row"]++
				}
			}
		}
	}
}

func TestWriteHTML(t *testing.T) {
	p := testProfile(t) // model "cifar<&>"
	p.Classes[3] = `<script>alert("x")</script>`
	m := newMonitor(t, p, Options{})
	rng := rand.New(rand.NewPCG(9, 9))
	for range 600 {
		m.Add(world{brightShift: -0.1}.draw(rng))
	}
	r := m.Check()
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r, p); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{"<svg", "cifar&lt;&amp;&gt;", "&lt;script&gt;", "brightness_ks", "drift: "} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"cifar<&", "<script", "src=", "href=", "http://", "https://"} {
		if strings.Contains(strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, ""), bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	counts := parseXML(t, buf.Bytes())
	if counts["test-row"] != len(r.Tests) || len(r.Tests) == 0 {
		t.Errorf("%d test rows, want %d", counts["test-row"], len(r.Tests))
	}
	// Class chart plus one histogram per feature.
	if counts["svg"] != 1+numFeatures {
		t.Errorf("%d svg charts, want %d", counts["svg"], 1+numFeatures)
	}
	// Reference and live bar per class.
	if counts["rect"] < 2*len(testClasses)+histBins {
		t.Errorf("only %d rects", counts["rect"])
	}
	if counts["path"] != numFeatures {
		t.Errorf("%d live step lines, want %d", counts["path"], numFeatures)
	}
}

func TestWriteHTMLManyClassesNoProfile(t *testing.T) {
	ref := make([]float64, 1000)
	live := make([]float64, 1000)
	for i := range ref {
		ref[i], live[i] = 0.001, 0.001
	}
	live[500], live[501] = 0.0015, 0.0005
	r := Report{
		Model: "imagenet", Window: 0,
		Tests:     []Test{{Name: "class_chi2", PValue: 1}},
		Reason:    "warming up: 0 of 200 observations",
		Reference: Distribution{ClassFreq: ref},
		Live:      Distribution{ClassFreq: live},
	}
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r, nil); err != nil {
		t.Fatal(err)
	}
	counts := parseXML(t, buf.Bytes())
	if counts["rect"] != 2*maxClassBars || counts["svg"] != 1 || counts["test-row"] != 1 {
		t.Errorf("counts = %v", counts)
	}
	page := buf.String()
	if !strings.Contains(page, "40 of 1000 classes") || !strings.Contains(page, ">#500<") {
		t.Error("the most-changed classes should be shown, with index labels")
	}
}

func TestNiceCeil(t *testing.T) {
	tests := []struct{ in, want float64 }{
		{0.19, 0.2}, {0.2, 0.2}, {0.21, 0.25}, {0.3, 0.5}, {0.07, 0.1}, {1, 1}, {0, 1}, {1200, 2000},
	}
	for _, tt := range tests {
		if got := NiceCeil(tt.in); !near(got, tt.want, 1e-12) {
			t.Errorf("NiceCeil(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
