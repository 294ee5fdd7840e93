package server

import (
	"math"
	"strings"
	"sync"
	"testing"

	"fastinfer/monitor/predlog"
)

type fakeLog struct {
	mu   sync.Mutex
	recs []predlog.Record
}

func (f *fakeLog) Add(r predlog.Record) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = append(f.recs, r)
	return true
}

func (f *fakeLog) take() []predlog.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.recs
	f.recs = nil
	return r
}

func TestPredictionLogRecords(t *testing.T) {
	log := &fakeLog{}
	baboon := fixture(t, "baboon.jpg")
	ts := newTestServer(t, Options{PredictionLog: log, LogImageBytes: len(baboon)}, fakeModel("toy", 1))

	// Two images in one request: two records sharing a generated id that
	// the response echoes; the small image is logged, the large is not.
	ct, body := multipartBody(t, "image", baboon, fixture(t, "starry_night.jpg"))
	r := ts.do(t, "POST", "/v1/models/toy/classify", ct, body)
	if r.status != 200 {
		t.Fatalf("classify: %d %s", r.status, r.body)
	}
	recs := log.take()
	if len(recs) != 2 {
		t.Fatalf("%d records for 2 images", len(recs))
	}
	id := r.header["X-Request-Id"]
	for i, rec := range recs {
		if rec.RequestID == "" || rec.RequestID != id || rec.Model != "toy" || rec.Version != 1 || rec.Time.IsZero() {
			t.Errorf("record %d: %+v (response id %q)", i, rec, id)
		}
		if len(rec.TopK) != 4 || rec.TopK[0].Index != 0 || rec.TopK[0].Label != "cat" || rec.TopK[0].Score < rec.TopK[1].Score {
			t.Errorf("record %d top-k %+v", i, rec.TopK)
		}
		var sum float64
		for _, c := range rec.TopK {
			sum += c.Score
		}
		if math.Abs(sum-1) > 1e-6 { // all 4 classes: the scores are the full softmax
			t.Errorf("record %d scores sum to %v", i, sum)
		}
		if rec.Width == 0 || math.IsNaN(rec.Brightness) || rec.Latency.TotalMs <= 0 || rec.Latency.InferMs != 2 {
			t.Errorf("record %d: size %dx%d brightness %v latency %+v", i, rec.Width, rec.Height, rec.Brightness, rec.Latency)
		}
	}
	if string(recs[0].Image) != string(baboon) || recs[1].Image != nil {
		t.Errorf("images logged: %d and %d bytes", len(recs[0].Image), len(recs[1].Image))
	}

	// A client's X-Request-Id is kept; a tensor request logs without
	// image facts; its protocol id wins.
	r = ts.doHeaders(t, "POST", "/v1/models/toy/classify", map[string]string{"Content-Type": "image/jpeg", "X-Request-Id": "client-42"}, baboon...)
	if recs := log.take(); len(recs) != 1 || recs[0].RequestID != "client-42" || r.header["X-Request-Id"] != "client-42" {
		t.Errorf("client id: %+v, header %q", recs, r.header["X-Request-Id"])
	}
	ts.doInfer(t, "/v2/models/toy/infer", "", []byte(`{"id":"oip-7","inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`))
	if recs := log.take(); len(recs) != 1 || recs[0].RequestID != "oip-7" || recs[0].Width != 0 || !math.IsNaN(recs[0].Brightness) {
		t.Errorf("tensor request: %+v", recs)
	}
	// Failed requests are not predictions.
	ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "garbage.bin"))
	if recs := log.take(); len(recs) != 0 {
		t.Errorf("a failed request was logged: %+v", recs)
	}
	if id := strings.Repeat("x", 200); true {
		r = ts.doHeaders(t, "POST", "/v1/models/toy/classify", map[string]string{"Content-Type": "image/jpeg", "X-Request-Id": id}, baboon...)
		if recs := log.take(); len(recs) != 1 || recs[0].RequestID == id {
			t.Errorf("an over-long client id was kept: %+v", recs)
		}
	}
}

type discardLog struct{}

func (discardLog) Add(predlog.Record) bool { return true }

// BenchmarkLogPredictions is the request path's cost of the prediction
// log for one image of a 10-class model (the record, not its writing).
func BenchmarkLogPredictions(b *testing.B) {
	m := fakeModel("fashion-resnet", 1)
	m.Classes = 10
	m.Labels = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
	logits := []float32{0.1, -2, 3.5, 0.7, 1.1, -0.3, 2.2, -1, 0.05, 1.9}
	stats := []ImageStats{{Width: 28, Height: 28, Brightness: 0.3, Contrast: 0.2}}
	s := &Server{opts: Options{PredictionLog: discardLog{}}}
	sm := softmaxRows(m, logits, 1, nil) // computed once per request, for the response too
	b.ReportAllocs()
	for b.Loop() {
		s.logPredictions(m, "abc-1", logits, 1, nil, stats, timings{}, sm)
	}
}
