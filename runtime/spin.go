package runtime

import (
	"fmt"
	"strconv"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// SpinORT leaves the spinning of idle compute threads to ONNX Runtime.
// Its threads then spin for tens of milliseconds after each parallel
// section (about 2^20 pause instructions), which on a busy server is
// always: they take a share of the cores from whatever else runs
// (decoding, HTTP) between two runs.
const SpinORT = "ort"

// DefaultSpin is long enough to bridge the gaps inside one run and
// between back-to-back batches, and short enough that threads sleep
// while the server decodes the next requests. Measured on 2 cores
// (README, Performance): images/s +34 % for JPEGs to a small model, the
// default model's tensor path +1 to +6 %, ResNet-50 within noise.
const DefaultSpin = 200 * time.Microsecond

// ParseSpin reads Config.IntraOpSpin: "" is DefaultSpin, SpinORT is -1.
func ParseSpin(s string) (time.Duration, error) {
	switch s {
	case "":
		return DefaultSpin, nil
	case SpinORT:
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("intra-op spin %q: want a duration such as 200us (0 = never spin) or %q", s, SpinORT)
	}
	return d, nil
}

// spinEntries are the session config entries for spin (ORT 1.26 and later
// read spin_duration_us; older ones ignore it and spin their own time).
func spinEntries(spin time.Duration) [][2]string {
	switch {
	case spin < 0:
		return nil
	case spin == 0:
		return [][2]string{{"session.intra_op.allow_spinning", "0"}}
	}
	us := max(spin.Microseconds(), 1)
	return [][2]string{
		{"session.intra_op.allow_spinning", "1"},
		{"session.intra_op.spin_duration_us", strconv.FormatInt(us, 10)},
	}
}

// newSessionOptions holds what every session shares: its compute threads,
// the graph optimisation level and how idle threads spin.
func newSessionOptions(threads int, opt ort.GraphOptimizationLevel, spin time.Duration) (*ort.SessionOptions, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	if err := opts.SetIntraOpNumThreads(threads); err != nil {
		opts.Destroy()
		return nil, fmt.Errorf("intra-op threads: %w", err)
	}
	if err := opts.SetGraphOptimizationLevel(opt); err != nil {
		opts.Destroy()
		return nil, fmt.Errorf("graph optimisation level: %w", err)
	}
	for _, kv := range spinEntries(spin) {
		if err := opts.AddSessionConfigEntry(kv[0], kv[1]); err != nil {
			opts.Destroy()
			return nil, fmt.Errorf("session config %s: %w", kv[0], err)
		}
	}
	return opts, nil
}
