package server

import (
	"encoding/json"
	"strings"
	"testing"

	"fastinfer/monitor/drift"
)

// The fake model's "brightness" is width%100/100 (see fakeModel), so
// uploads of one photo are a one-valued stream the monitor can compare.
func TestDriftEndpoint(t *testing.T) {
	b := drift.NewBuilder("toy", 1, "test", []string{"cat", "dog", "", "bird"})
	for i := range 300 {
		// Reference: brightness 0.12 (baboon is 512 wide), class 0.
		b.Add(drift.Observation{Class: 0, Confidence: 0.5, Brightness: 0.12 + float64(i%3)*0.001, Contrast: 0.2, Width: 512, Height: 512, Aspect: 1})
	}
	mon, err := drift.New(b.Profile(), drift.Options{Window: 100, MinSamples: 50})
	if err != nil {
		t.Fatal(err)
	}
	withRef := fakeModel("toy", 1)
	withRef.Drift = mon
	ts := newTestServer(t, Options{}, withRef, fakeModel("plain", 1))

	if r := ts.do(t, "GET", "/v1/models/plain/drift", "", nil); r.status != 404 || !strings.Contains(r.body, "reference profile") {
		t.Errorf("model without a reference: %d %s", r.status, r.body)
	}
	report := func() drift.Report {
		t.Helper()
		r := ts.do(t, "GET", "/v1/models/toy/versions/1/drift", "", nil)
		var rep drift.Report
		if err := json.Unmarshal([]byte(r.body), &rep); err != nil || r.status != 200 {
			t.Fatalf("%d %s: %v", r.status, r.body, err)
		}
		return rep
	}
	baboon := fixture(t, "baboon.jpg")
	for range 60 {
		ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", baboon)
	}
	if rep := report(); rep.Window != 60 {
		t.Fatalf("window %d after 60 predictions", rep.Window)
	}
	// Tensor requests are counted too, with unknown image facts.
	ts.doInfer(t, "/v2/models/toy/infer", "", []byte(`{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[512,512]}]}`))
	if rep := report(); rep.Window != 61 {
		t.Fatalf("window %d after a tensor request", rep.Window)
	}
	if r := ts.do(t, "GET", "/v1/models/toy/drift?format=html", "", nil); r.status != 200 || !strings.Contains(r.body, "<svg") {
		t.Errorf("HTML report: %d", r.status)
	}
}
