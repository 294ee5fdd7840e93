package bench

import (
	"bytes"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenSteps covers every table column form: closed and open loop,
// with and without server split and errors, unstable, warnings.
func goldenSteps() []Step {
	return []Step{
		{
			Target: TargetHTTPImage, Model: "resnet50", Mode: ModeConcurrency, Concurrency: 16, BatchSize: 1,
			Seconds: 10, Requests: 4213, Images: 4213, Throughput: 421.3, ImagesPerSec: 421.3,
			Latency: Latency{Mean: 37.1, P50: 36.42, P90: 44.1, P95: 47.9, P99: 58.27, P999: 91.3, Max: 130.55},
			Errors:  map[string]int64{"transport": 1, "429": 3},
			Windows: []float64{420, 422, 421}, Stable: true,
			Server: &ServerSplit{RequestMs: 35.2, PreprocessMs: 4.12, QueueMs: 12.5, ComputeMs: 17.83, MeanBatchSize: 7.6, Executions: 554, CPUMsPerRequest: 4.75, CPUShare: 0.9,
				InputMs: 0.42, OutputMs: 0.01, ExecutionsInFlight: 0.93, InstanceBusy: 0.465},
			ClientCPU: 0.183,
		},
		{
			Target: TargetHTTPTensor, Model: "resnet50", Mode: ModeRate, Rate: 100, Arrivals: "poisson", BatchSize: 4,
			Seconds: 10, Requests: 998, Images: 3992, Throughput: 99.8, ImagesPerSec: 399.2,
			Latency:   Latency{Mean: 9.2, P50: 8.031, P90: 12.2, P95: 14.7, P99: 21.05, P999: 33.9, Max: 40.2},
			Windows:   []float64{80, 120, 99},
			Stable:    false,
			ClientCPU: 0.05,
			Warnings:  []string{"windows did not settle within 10%", "client CPU above 50% on one core"},
		},
		{
			Target: TargetRaw, Model: "mobilenet_v2", Mode: ModeConcurrency, Concurrency: 1, BatchSize: 32,
			Seconds: 5, Requests: 120, Images: 3840, Throughput: 24, ImagesPerSec: 768,
			Latency:   Latency{Mean: 41.6, P50: 41.5, P90: 42, P95: 42.2, P99: 43.9, P999: 120.44, Max: 1234.5},
			Windows:   []float64{24, 24, 24},
			Stable:    true,
			ClientCPU: 0.92,
		},
	}
}

func TestWriteTableGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, goldenSteps()); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "table.golden", buf.Bytes())
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./bench -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (rerun with -update if intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestWriteTableCells(t *testing.T) {
	tests := []struct {
		name string
		step Step
		want []string // substrings of the row
		not  []string
	}{
		{"closed loop", Step{Mode: ModeConcurrency, Concurrency: 16, Stable: true}, []string{"c=16", " - "}, []string{"unstable"}},
		{"open loop", Step{Mode: ModeRate, Rate: 100, Arrivals: "poisson", Stable: true}, []string{"r=100/s poisson"}, nil},
		{"open loop fractional rate", Step{Mode: ModeRate, Rate: 12.5, Arrivals: "constant", Stable: true}, []string{"r=12.5/s constant"}, nil},
		{"errors sorted", Step{Errors: map[string]int64{"transport": 1, "503": 2, "429": 3}, Stable: true}, []string{"429:3 503:2 transport:1"}, nil},
		{"zero error counts dropped", Step{Errors: map[string]int64{"429": 0}, Stable: true}, []string{" - "}, []string{"429"}},
		{"server split", Step{Server: &ServerSplit{QueueMs: 1.5, PreprocessMs: 2.25, InputMs: 0.5, ComputeMs: 150, OutputMs: 0.03, MeanBatchSize: 3.5}, Stable: true},
			[]string{"1.50/2.25/0.50/150.0/0.03", "3.5"}, nil},
		{"instances busy", Step{Server: &ServerSplit{InstanceBusy: 0.874}, Stable: true}, []string{" 87% "}, nil},
		{"unstable", Step{Stable: false}, []string{"unstable"}, nil},
		{"client cpu", Step{ClientCPU: 0.5, Stable: true}, []string{"50%"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteTable(&buf, []Step{tt.step}); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
			if len(lines) != 2 {
				t.Fatalf("want header and one row, got:\n%s", buf.String())
			}
			row := lines[1] + " "
			for _, w := range tt.want {
				if !strings.Contains(row, w) {
					t.Errorf("row %q lacks %q", row, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(row, n) {
					t.Errorf("row %q has %q", row, n)
				}
			}
			for _, l := range lines {
				if strings.HasSuffix(l, " ") {
					t.Errorf("trailing space in %q", l)
				}
			}
		})
	}
}

func TestWriteComparisons(t *testing.T) {
	tests := []struct {
		name string
		cs   []Comparison
		want string
	}{
		{"none", nil, ""},
		{"meets goal", []Comparison{{Name: "server jpeg / raw", Value: 0.914, Goal: 0.9}},
			"server jpeg / raw: 0.91 (goal ≥ 0.90) ok\n"},
		{"exactly at goal", []Comparison{{Name: "tensor / raw", Value: 0.9, Goal: 0.9}},
			"tensor / raw: 0.90 (goal ≥ 0.90) ok\n"},
		{"below goal", []Comparison{{Name: "server jpeg / raw", Value: 0.62, Goal: 0.9}},
			"server jpeg / raw: 0.62 (goal ≥ 0.90) BELOW GOAL\n"},
		{"NaN is below goal", []Comparison{{Name: "x", Value: math.NaN(), Goal: 0.9}},
			"x: NaN (goal ≥ 0.90) BELOW GOAL\n"},
		{"no goal", []Comparison{{Name: "batch 8 / batch 1", Value: 3.5}}, "batch 8 / batch 1: 3.50\n"},
		{"upper bound met", []Comparison{{Name: "p50 added", Value: 0.31, Unit: "ms", Goal: 0.5, AtMost: true}},
			"p50 added: 0.31 ms (goal ≤ 0.50 ms) ok\n"},
		{"upper bound missed", []Comparison{{Name: "p50 added", Value: 0.8, Unit: "ms", Goal: 0.5, AtMost: true}},
			"p50 added: 0.80 ms (goal ≤ 0.50 ms) OVER GOAL\n"},
		{"several", []Comparison{{Name: "a", Value: 1, Goal: 0.5}, {Name: "b", Value: 0.1, Goal: 0.5}},
			"a: 1.00 (goal ≥ 0.50) ok\nb: 0.10 (goal ≥ 0.50) BELOW GOAL\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteComparisons(&buf, tt.cs); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("got %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

// fullResults sets every field of result.go's types, so a field that
// does not survive JSON shows up in the round trip.
func fullResults() *Results {
	steps := goldenSteps()
	steps[0].Warnings = []string{"w"}
	steps[0].Server.Rejections = 2
	steps[0].Mode, steps[0].Rate, steps[0].Arrivals = ModeRate, 50, "constant"
	steps[0].Rounds = []float64{39.5, 41.2, 40.1}
	return &Results{
		Schema: SchemaVersion,
		Meta: Meta{
			Time:      time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC),
			GitCommit: "0020a1b", Fastinfer: "v0.3.0", GoVersion: "go1.26.0", Host: "bench-1",
			OS: "linux/amd64", CPUModel: "AMD EPYC 9454", Cores: 16, Device: "NVIDIA H100",
			Provider: "cuda", ORTVersion: "1.20.1", Command: "fastinfer bench -c 1,16",
			Description: "nightly",
		},
		Steps: steps[:1],
		Comparisons: []Comparison{{Name: "tensor p50 added at c=1", Of: steps[1].Key(), Over: steps[2].Key(),
			Value: 0.3, Unit: "ms", Goal: 0.5, AtMost: true, Rounds: []float64{0.3, 0.25, 0.4}}},
	}
}

// checkAllSet fails on any zero field reachable from v, so adding a
// field to result.go without extending fullResults is caught.
func checkAllSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	if v.IsZero() {
		t.Errorf("%s is zero", path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		checkAllSet(t, v.Elem(), path)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return
		}
		for i := range v.NumField() {
			checkAllSet(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice:
		for i := range v.Len() {
			checkAllSet(t, v.Index(i), path+"[]")
		}
	}
}

func TestResultsRoundTrip(t *testing.T) {
	want := fullResults()
	checkAllSet(t, reflect.ValueOf(want).Elem(), "Results")
	path := filepath.Join(t.TempDir(), "r.json")
	if err := want.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip differs:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestReadFileRejects(t *testing.T) {
	tests := []struct {
		name, json, wantErr string
	}{
		{"unknown field", `{"schema":1,"meta":{"os":"linux"},"steps":[],"bogus":true}`, "bogus"},
		{"unknown nested field", `{"schema":1,"meta":{"os":"linux"},"steps":[{"target":"raw","qps":3}]}`, "qps"},
		{"wrong schema", `{"schema":2,"meta":{},"steps":[]}`, "schema 2"},
		{"no schema", `{"meta":{},"steps":[]}`, "schema 0"},
		{"not json", `steps: []`, "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.json")
			if err := os.WriteFile(path, []byte(tt.json), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := ReadFile(path)
			if err == nil {
				t.Fatalf("ReadFile accepted it: %+v", r)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should name %q and the file", err, tt.wantErr)
			}
		})
	}
}
