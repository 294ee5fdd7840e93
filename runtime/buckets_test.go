package runtime

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestBucketSizes(t *testing.T) {
	tests := []struct {
		max  int
		want []int
	}{
		{1, []int{1}},
		{2, []int{1, 2}},
		{3, []int{1, 2, 3}},
		{8, []int{1, 2, 4, 8}},
		{12, []int{1, 2, 4, 8, 12}},
		{20, []int{1, 2, 4, 8, 12, 16, 20}},
		{64, []int{1, 2, 4, 8, 12, 16, 24, 32, 48, 64}},
		{100, []int{1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 100}},
	}
	for _, tt := range tests {
		if got := BucketSizes(tt.max); !slices.Equal(got, tt.want) {
			t.Errorf("BucketSizes(%d) = %v, want %v", tt.max, got, tt.want)
		}
	}
}

// A batch padded up to its bucket gives the rows a plain run of the exact
// size gives, and the padding is zeros, not an earlier batch's rows.
func TestBucketsPadToTheNextSize(t *testing.T) {
	e := env(t)
	path := resnet18(t)
	sizes := []int{1, 2, 4}
	var sessions []*Session
	for range sizes {
		s, err := e.NewSession(path, SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		sessions = append(sessions, s)
	}
	b, err := NewBuckets(sessions, sizes)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	exact, err := sessions[0].NewBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	defer exact.Close()

	inLen, outLen := sessions[0].InputLen(), sessions[0].OutputLen()
	for i := range b.buf.ins[0] {
		b.buf.ins[0][i] = 7 // stale rows from an earlier, larger batch
	}
	const rows = 3
	for i := range b.in32(rows) {
		v := float32(math.Sin(float64(i) * 0.01))
		b.in32(rows)[i] = v
		exact.in32(rows)[i] = v
	}
	if err := b.Run(rows); err != nil {
		t.Fatal(err)
	}
	if err := exact.Run(rows); err != nil {
		t.Fatal(err)
	}
	if pad := b.buf.ins[0][4*rows*inLen : 4*4*inLen]; slices.ContainsFunc(pad, func(v byte) bool { return v != 0 }) {
		t.Error("padding row not zeroed")
	}
	got, want := b.Output(rows), exact.Output(rows)
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); !(d <= 1e-4) {
			t.Fatalf("output %d (row %d): bucketed %v, exact %v", i, i/outLen, got[i], want[i])
		}
	}
	// The size-4 session ran; the others were never bound.
	if b.bind[2].sizes[0][3] == nil || b.bind[0].sizes[0][0] != nil || b.bind[1].sizes[0][1] != nil {
		t.Error("rows=3 did not run on the size-4 bucket alone")
	}
	for _, rows := range []int{0, 5} {
		if err := b.Run(rows); !errors.Is(err, ErrShape) {
			t.Errorf("Run(%d) = %v, want ErrShape", rows, err)
		}
	}
}

func TestNewBucketsRefusesBadSizes(t *testing.T) {
	e := env(t)
	s, err := e.NewSession(resnet18(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, sizes := range [][]int{{}, {2, 1}, {0, 1}, {1, 1}} {
		ss := make([]*Session, len(sizes))
		for i := range ss {
			ss[i] = s
		}
		if _, err := NewBuckets(ss, sizes); !errors.Is(err, ErrShape) {
			t.Errorf("NewBuckets(%v) = %v, want ErrShape", sizes, err)
		}
	}
}

func TestOnGPU(t *testing.T) {
	for p, want := range map[string]bool{ProviderCUDA: true, ProviderTensorRT: true, ProviderCPU: false, ProviderAuto: false, "": false} {
		if OnGPU(p) != want {
			t.Errorf("OnGPU(%q) = %v", p, !want)
		}
	}
}
