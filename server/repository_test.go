package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"fastinfer/batching"
)

// fakeRepo loads and unloads fake models straight into the server.
type fakeRepo struct {
	mu   sync.Mutex
	srv  *Server
	held map[string]bool // in the repository
	log  []string
}

func (r *fakeRepo) Index() []RepositoryModel {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []RepositoryModel
	served := r.srv.Served()
	for name := range r.held {
		if vs := served[name]; len(vs) > 0 {
			out = append(out, RepositoryModel{Name: name, Version: fmt.Sprint(vs[len(vs)-1]), State: "READY"})
		} else {
			out = append(out, RepositoryModel{Name: name, State: "UNAVAILABLE", Reason: "unloaded"})
		}
	}
	return out
}

func (r *fakeRepo) Load(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "load "+name)
	switch {
	case name == "broken":
		return errors.New("model broken: model.onnx: not an ONNX file")
	case !r.held[name]:
		return fmt.Errorf("%w: %s", ErrModelNotInRepository, name)
	}
	if old := r.srv.AddModel(fakeModel(name, 1)); old != nil {
		old.Drain()
	}
	return nil
}

func (r *fakeRepo) Unload(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "unload "+name)
	if m := r.srv.RemoveModel(name, 1); m != nil {
		m.Drain()
	}
	return nil
}

func TestRepositoryEndpoints(t *testing.T) {
	repo := &fakeRepo{held: map[string]bool{"toy": true, "other": true, "broken": true}}
	ts := newTestServer(t, Options{Repository: repo, AdminToken: "s3cret"}, fakeModel("toy", 1))
	repo.srv = ts.srv
	auth := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	tests := []struct {
		name, method, path string
		header             map[string]string
		status             int
	}{
		{"no token", "POST", "/v2/repository/index", nil, 401},
		{"wrong token", "POST", "/v2/repository/index", auth("s3cre"), 401},
		{"longer token", "POST", "/v2/repository/index", auth("s3cret!"), 401},
		{"basic auth", "POST", "/v2/repository/index", map[string]string{"Authorization": "Basic czNjcmV0"}, 401},
		{"index", "POST", "/v2/repository/index", auth("s3cret"), 200},
		{"index GET", "GET", "/v2/repository/index", auth("s3cret"), 405},
		{"load other", "POST", "/v2/repository/models/other/load", auth("s3cret"), 200},
		{"load unknown", "POST", "/v2/repository/models/nope/load", auth("s3cret"), 404},
		{"load broken", "POST", "/v2/repository/models/broken/load", auth("s3cret"), 400},
		{"unload toy", "POST", "/v2/repository/models/toy/unload", auth("s3cret"), 200},
		{"bad action", "POST", "/v2/repository/models/toy/reload", auth("s3cret"), 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.doHeaders(t, tt.method, tt.path, tt.header)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.status == 401 && r.header["Www-Authenticate"] == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// After the calls: other serves, toy does not.
	if r := ts.do(t, "GET", "/v2/models/other/ready", "", nil); r.status != 200 {
		t.Errorf("other after load: %d", r.status)
	}
	if r := ts.do(t, "GET", "/v2/models/toy/ready", "", nil); r.status != 404 {
		t.Errorf("toy after unload: %d", r.status)
	}
	r := ts.doHeaders(t, "POST", "/v2/repository/index", auth("s3cret"))
	golden(t, "v2_repository_index.golden", r)
}

func TestAPIToken(t *testing.T) {
	ts := newTestServer(t, Options{APIToken: "tok"}, fakeModel("toy", 1))
	body := `{"inputs":[{"name":"data","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`
	if r := ts.doInfer(t, "/v2/models/toy/infer", "", []byte(body)); r.status != 401 || r.body != `{"error":"a valid bearer token is required (Authorization: Bearer TOKEN)"}`+"\n" {
		t.Errorf("infer without token: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg")); r.status != 401 {
		t.Errorf("classify without token: %d", r.status)
	}
	// Health and metadata stay open.
	if r := ts.do(t, "GET", "/v2/models/toy", "", nil); r.status != 200 {
		t.Errorf("metadata: %d", r.status)
	}
	r := ts.doHeaders(t, "POST", "/v1/models/toy/classify", map[string]string{"Authorization": "Bearer tok", "Content-Type": "image/jpeg"}, fixture(t, "baboon.jpg")...)
	if r.status != 200 {
		t.Errorf("classify with token: %d %s", r.status, r.body)
	}
	// Without a repository, model control is refused.
	if r := ts.do(t, "POST", "/v2/repository/index", "", nil); r.status != 403 {
		t.Errorf("repository without control: %d", r.status)
	}
}

// A replaced version keeps serving the requests already using it; Drain
// returns only after they finish.
func TestReplaceDrainsInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	old := fakeModel("toy", 1)
	infer := old.Infer
	old.Infer = func(ctx context.Context, in []float32, rows int, out []float32, o batching.RequestOptions) (batching.Timing, error) {
		started <- struct{}{}
		<-release
		return infer(ctx, in, rows, out, o)
	}
	ts := newTestServer(t, Options{}, old)
	done := make(chan response, 1)
	go func() { done <- ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg")) }()
	<-started
	if got := ts.srv.AddModel(fakeModel("toy", 1)); got != old {
		t.Fatal("AddModel did not return the replaced model")
	}
	drained := make(chan struct{})
	go func() { old.Drain(); close(drained) }()
	select {
	case <-drained:
		t.Fatal("Drain returned while a request was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	// New requests already reach the new model.
	if r := ts.do(t, "POST", "/v1/models/toy/classify", "image/jpeg", fixture(t, "baboon.jpg")); r.status != 200 {
		t.Fatalf("new request: %d", r.status)
	}
	close(release)
	if r := <-done; r.status != 200 {
		t.Fatalf("in-flight request: %d %s", r.status, r.body)
	}
	<-drained
	if ts.srv.RemoveModel("toy", 1) == nil || ts.srv.RemoveModel("toy", 1) != nil {
		t.Fatal("RemoveModel should return the model once")
	}
}
