package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// checkSnapshot compares every key of both; absent keys count as 0.
func checkSnapshot(t *testing.T, got, want Snapshot) {
	t.Helper()
	for k, w := range want {
		if !near(got[k], w) {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s = %v", k, g)
		}
	}
}

func TestParseSnapshot(t *testing.T) {
	const (
		req   = "fastinfer_request_duration_seconds"
		pre   = "fastinfer_preprocess_duration_seconds"
		queue = "fastinfer_queue_duration_seconds"
		comp  = "fastinfer_compute_duration_seconds"
		cin   = "fastinfer_compute_input_duration_seconds"
		cout  = "fastinfer_compute_output_duration_seconds"
		bs    = "fastinfer_batch_size"
		exe   = "fastinfer_executions_total"
		rej   = "fastinfer_rejections_total"
		cpu   = "process_cpu_seconds_total"
	)
	tests := []struct {
		file, model string
		want        Snapshot
	}{
		// Versions 1 and 2 summed; code 429 and toy-large left out.
		{"metrics_before.txt", "toy", Snapshot{
			req + "_sum": 1.5, req + "_count": 150,
			pre + "_sum": 0.15, pre + "_count": 150,
			queue + "_sum": 0.2, queue + "_count": 100, // version 2 has none yet
			comp + "_sum": 0.75, comp + "_count": 35,
			cin + "_sum": 0.07, cin + "_count": 35,
			cout + "_sum": 0.007, cout + "_count": 34, // a failed execution copies nothing back
			bs + "_sum": 150, bs + "_count": 35,
			exe: 35,
			rej: 4, // both reasons, both versions
			cpu: 12.5,
		}},
		{"metrics_after.txt", "toy", Snapshot{
			req + "_sum": 4.5, req + "_count": 350,
			pre + "_sum": 0.55, pre + "_count": 350,
			queue + "_sum": 1.2, queue + "_count": 300,
			comp + "_sum": 2.25, comp + "_count": 105,
			cin + "_sum": 0.21, cin + "_count": 105,
			cout + "_sum": 0.021, cout + "_count": 103,
			bs + "_sum": 450, bs + "_count": 105,
			exe: 105,
			rej: 14,
			cpu: 13.7,
		}},
		{"metrics_before.txt", "toy-large", Snapshot{
			req + "_sum": 100, req + "_count": 1000,
			pre + "_sum": 10, pre + "_count": 1000,
			queue + "_sum": 5, queue + "_count": 1000,
			comp + "_sum": 50, comp + "_count": 500,
			cin + "_sum": 5, cin + "_count": 500,
			cout + "_sum": 0.5, cout + "_count": 500,
			bs + "_sum": 1000, bs + "_count": 500,
			exe: 500,
			rej: 7,
			cpu: 12.5, // the process's, whichever model
		}},
		{"metrics_before.txt", "absent", Snapshot{cpu: 12.5}},
		{"metrics_before.txt", "", Snapshot{cpu: 12.5}}, // series without a model label are not a model
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.model, func(t *testing.T) {
			got, err := ParseSnapshot(readFixture(t, tc.file), tc.model)
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, got, tc.want)
		})
	}
}

func TestParseSnapshotMalformed(t *testing.T) {
	tests := []struct{ name, text string }{
		{"no value", "fastinfer_executions_total{model=\"toy\"}\n"},
		{"value not a number", "fastinfer_executions_total{model=\"toy\"} lots\n"},
		{"unclosed labels", "fastinfer_executions_total{model=\"toy\" 3\n"},
		{"unquoted label", "fastinfer_executions_total{model=toy} 3\n"},
		{"bad le", "# TYPE fastinfer_batch_size histogram\nfastinfer_batch_size_bucket{model=\"toy\",le=\"big\"} 1\n"},
		{"unknown type", "# TYPE fastinfer_executions_total tally\nfastinfer_executions_total{model=\"toy\"} 3\n"},
		{"second TYPE", "# TYPE fastinfer_executions_total counter\nfastinfer_executions_total{model=\"toy\"} 3\n# TYPE fastinfer_executions_total counter\n"},
		{"HTML error page", "<html><body>502 Bad Gateway</body></html>\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSnapshot([]byte(tc.text), "toy")
			if err == nil {
				t.Fatalf("ParseSnapshot accepted it: %v", s)
			}
			if !strings.Contains(err.Error(), "parsing metrics") {
				t.Errorf("error %q does not say it is the metrics that failed", err)
			}
		})
	}
	// A valid exposition with none of the series is no error.
	if s, err := ParseSnapshot(nil, "toy"); err != nil || len(s) != 0 {
		t.Errorf("empty exposition: %v, %v; want an empty snapshot", s, err)
	}
}

func TestSplit(t *testing.T) {
	snap := func(file string) Snapshot {
		s, err := ParseSnapshot(readFixture(t, file), "toy")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before, after := snap("metrics_before.txt"), snap("metrics_after.txt")
	tests := []struct {
		name          string
		before, after Snapshot
		want          ServerSplit
	}{
		{
			// Differences, both versions: requests Δsum 3.0 s / Δcount 200;
			// preprocess 0.4 / 200; queue (0.4 + 0.6) / (100 + 100);
			// compute (1.0 + 0.5) / (50 + 20) executions; batch size
			// (200 + 100) rows / 70; rejections 5 + 1 + 4; process CPU
			// 13.7 − 12.5 s over the 200 successful requests.
			// Copies: input 0.14 s over 70 executions, output 0.014 s over
			// the 69 that succeeded.
			"step", before, after,
			ServerSplit{RequestMs: 15, PreprocessMs: 2, QueueMs: 5, ComputeMs: 1500.0 / 70, InputMs: 2, OutputMs: 14.0 / 69,
				MeanBatchSize: 300.0 / 70, Executions: 70, Rejections: 10, CPUMsPerRequest: 1200.0 / 200},
		},
		{
			"from nothing", nil, after,
			ServerSplit{RequestMs: 4500.0 / 350, PreprocessMs: 550.0 / 350, QueueMs: 1200.0 / 300, ComputeMs: 2250.0 / 105,
				InputMs: 2, OutputMs: 21.0 / 103,
				MeanBatchSize: 450.0 / 105, Executions: 105, Rejections: 14, CPUMsPerRequest: 13700.0 / 350},
		},
		{
			// 2 s of executions in 4 s of wall time: half an execution at
			// a time on average.
			"executions in flight", Snapshot{scrapedAt: 1000, "fastinfer_compute_duration_seconds_sum": 1},
			Snapshot{scrapedAt: 1004, "fastinfer_compute_duration_seconds_sum": 3},
			ServerSplit{ExecutionsInFlight: 0.5},
		},
		{
			"no scrape time before", Snapshot{"fastinfer_compute_duration_seconds_sum": 1},
			Snapshot{scrapedAt: 1004, "fastinfer_compute_duration_seconds_sum": 3},
			ServerSplit{},
		},
		{
			// The mean batch size is the histogram's: rows per observed
			// execution, whatever the executions counter says.
			"batch size from its histogram", Snapshot{"fastinfer_executions_total": 2},
			Snapshot{"fastinfer_batch_size_sum": 40, "fastinfer_batch_size_count": 10, "fastinfer_executions_total": 14},
			ServerSplit{MeanBatchSize: 4, Executions: 12},
		},
		{"nothing happened", after, after, ServerSplit{}},
		{"empty", Snapshot{}, Snapshot{}, ServerSplit{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Split(tc.before, tc.after)
			if got == nil {
				t.Fatal("nil split")
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{
				{"request ms", got.RequestMs, tc.want.RequestMs},
				{"preprocess ms", got.PreprocessMs, tc.want.PreprocessMs},
				{"queue ms", got.QueueMs, tc.want.QueueMs},
				{"compute ms", got.ComputeMs, tc.want.ComputeMs},
				{"input ms", got.InputMs, tc.want.InputMs},
				{"output ms", got.OutputMs, tc.want.OutputMs},
				{"executions in flight", got.ExecutionsInFlight, tc.want.ExecutionsInFlight},
				{"mean batch size", got.MeanBatchSize, tc.want.MeanBatchSize},
				{"CPU ms per request", got.CPUMsPerRequest, tc.want.CPUMsPerRequest},
			} {
				if !near(f.got, f.want) {
					t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
				}
			}
			if got.Executions != tc.want.Executions || got.Rejections != tc.want.Rejections {
				t.Errorf("executions %d rejections %d, want %d and %d", got.Executions, got.Rejections, tc.want.Executions, tc.want.Rejections)
			}
		})
	}
}

func TestClientScrape(t *testing.T) {
	f := startFakeServer(t)
	text := readFixture(t, "metrics_after.txt")
	f.mu.Lock()
	f.metrics = text
	f.mu.Unlock()
	c := newTestClient(t, f.url)
	t0 := time.Now()
	got, err := c.Scrape("toy")
	if err != nil {
		t.Fatal(err)
	}
	if at := got[scrapedAt]; at < float64(t0.Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("scraped at %v, not between the call's start and end", at)
	}
	delete(got, scrapedAt)
	want, err := ParseSnapshot(text, "toy")
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, got, want)
	if len(got) != 17 {
		t.Errorf("%d keys, want 17 (seven histograms' sum and count, two counters, the process's CPU)", len(got))
	}

	f.mu.Lock()
	f.metrics = []byte("not metrics{\n")
	f.mu.Unlock()
	if _, err := c.Scrape("toy"); err == nil {
		t.Error("Scrape accepted a malformed exposition")
	}
	if _, err := newTestClient(t, deadURL(t)).Scrape("toy"); err == nil {
		t.Error("Scrape of a dead server succeeded")
	}
}

func TestSetInstances(t *testing.T) {
	for _, tc := range []struct {
		instances int
		want      float64
	}{{4, 0.375}, {1, 1.5}, {0, 0}} {
		sp := &ServerSplit{ExecutionsInFlight: 1.5}
		sp.SetInstances(tc.instances)
		if !near(sp.InstanceBusy, tc.want) {
			t.Errorf("%d instances: busy %v, want %v", tc.instances, sp.InstanceBusy, tc.want)
		}
	}
}
