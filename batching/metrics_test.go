package batching

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// slowCopies makes the copies around a run take time: Input is called
// as the gather starts and Output as the scatter does.
type slowCopies struct {
	*fakeInstance
	in, out time.Duration
}

func (s *slowCopies) Input(rows int) []byte {
	time.Sleep(s.in)
	return s.fakeInstance.Input(rows)
}

func (s *slowCopies) Output(rows int) []float32 {
	time.Sleep(s.out)
	return s.fakeInstance.Output(rows)
}

// The copy into the batch, the run and the copy back are timed apart:
// each series holds its own sleep, and a failed run has no output copy.
func TestMetricsTimeCopiesApart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f := newFake(&recorder{}, 4)
	f.failOn = 300 // request 3's batch fails
	const in, out = 30 * time.Millisecond, 60 * time.Millisecond
	s, err := New(Config{MaxBatchSize: 4}, 4*inLen, outLen, []Instance{&slowCopies{f, in, out}}, m.For("toy", "1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for id := 1; id <= 4; id++ {
		r := <-do(s, context.Background(), id, 2, RequestOptions{})
		if (r.err != nil) != (id == 3) {
			t.Fatalf("request %d: %v", id, r.err)
		}
		// Each request's own timing carries its execution's copies.
		if r.err == nil && (r.t.Input < in || r.t.Output < out || r.t.Compute >= r.t.Input) {
			t.Errorf("request %d: timing %+v, want input ≥ %s and output ≥ %s apart from compute", id, r.t, in, out)
		}
	}
	// The successful executions by batch size (the statistics extension's
	// batch_stats): three of two rows, the failed one not counted.
	if st := s.obs.Stats(); len(st) != 1 || st[0].BatchSize != 2 || st[0].Count != 3 ||
		st[0].Input < 3*in || st[0].Output < 3*out || st[0].Compute >= st[0].Input {
		t.Errorf("Stats() = %+v, want one size (2) of three executions with their copies apart", st)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type hist struct {
		n   uint64
		sum time.Duration
	}
	got := map[string]hist{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			if h := mt.GetHistogram(); h != nil {
				got[f.GetName()] = hist{h.GetSampleCount(), time.Duration(h.GetSampleSum() * 1e9)}
			}
		}
	}
	input := got["fastinfer_compute_input_duration_seconds"]
	compute := got["fastinfer_compute_duration_seconds"]
	output := got["fastinfer_compute_output_duration_seconds"]
	if input.n != 4 || compute.n != 4 || output.n != 3 {
		t.Fatalf("executions observed: input %d, compute %d, output %d; want 4, 4, 3", input.n, compute.n, output.n)
	}
	if input.sum < 4*in || output.sum < 3*out {
		t.Errorf("input %s (want ≥ %s), output %s (want ≥ %s)", input.sum, 4*in, output.sum, 3*out)
	}
	// The run itself is instant: the copies' sleeps are not in it, and
	// the output's are not in the input's.
	if compute.sum >= input.sum || input.sum >= output.sum {
		t.Errorf("compute %s, input %s, output %s: copies counted in the wrong series", compute.sum, input.sum, output.sum)
	}
}
