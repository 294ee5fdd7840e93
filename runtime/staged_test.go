package runtime

import (
	"errors"
	"slices"
	"testing"
)

// checkTiny fails unless out is the tiny model's answer for in.
func checkTiny(t *testing.T, what string, in, out []float32) {
	t.Helper()
	want := tinyExpect(in)
	if !slices.Equal(out, want) {
		t.Fatalf("%s: output %v, want %v", what, out, want)
	}
}

// A staged Binding's two slots are separate buffers, each run from its
// own, in any order and at any size.
func TestStagedBindingSlots(t *testing.T) {
	s, err := env(t).NewSession(tinyModel(t), SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewStagedBinding(5)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Slots() != 2 {
		t.Fatalf("Slots() = %d, want 2", b.Slots())
	}
	if &b.inSlot32(0, 1)[0] == &b.inSlot32(1, 1)[0] {
		t.Fatal("the two slots share a buffer")
	}
	for step, tc := range []struct{ slot, rows int }{{1, 3}, {0, 3}, {1, 5}, {0, 2}, {1, 2}, {0, 5}} {
		in0, in1 := b.inSlot32(0, tc.rows), b.inSlot32(1, tc.rows)
		fillInts(in0, 2*step)
		fillInts(in1, 2*step+1)
		if err := b.RunSlot(tc.slot, tc.rows); err != nil {
			t.Fatal(err)
		}
		checkTiny(t, "step "+string(rune('0'+step)), b.inSlot32(tc.slot, tc.rows), b.Output(tc.rows))
	}
	if err := b.RunSlot(2, 1); !errors.Is(err, ErrShape) {
		t.Errorf("RunSlot(2) = %v, want ErrShape", err)
	}
	plain, err := s.NewBinding(2)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.Slots() != 1 {
		t.Errorf("a plain Binding has %d slots", plain.Slots())
	}
	if err := plain.RunSlot(1, 1); !errors.Is(err, ErrShape) {
		t.Errorf("RunSlot(1) on a plain Binding = %v, want ErrShape", err)
	}
}

// Staged Buckets pad each slot's batch in that slot's buffer.
func TestStagedBucketsSlots(t *testing.T) {
	var sessions []*Session
	for range 2 {
		s, err := env(t).NewSession(tinyModel(t), SessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		sessions = append(sessions, s)
	}
	b, err := NewStagedBuckets(sessions, []int{1, 4})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Slots() != 2 {
		t.Fatalf("Slots() = %d, want 2", b.Slots())
	}
	for slot := range 2 {
		for i := range b.inSlot32(slot, 4) {
			b.inSlot32(slot, 4)[i] = 7 // stale rows
		}
	}
	in1 := b.inSlot32(1, 3)
	fillInts(in1, 4)
	if err := b.RunSlot(1, 3); err != nil {
		t.Fatal(err)
	}
	checkTiny(t, "slot 1", in1, b.Output(3))
	if pad := b.inSlot32(1, 4)[3*tinyIn:]; slices.ContainsFunc(pad, func(v float32) bool { return v != 0 }) {
		t.Errorf("slot 1's padding row %v, want zeros", pad)
	}
	if slot0 := b.inSlot32(0, 4); slices.ContainsFunc(slot0, func(v float32) bool { return v != 7 }) {
		t.Errorf("running slot 1 changed slot 0: %v", slot0)
	}
	in0 := b.inSlot32(0, 1)
	fillInts(in0, 5)
	if err := b.RunSlot(0, 1); err != nil {
		t.Fatal(err)
	}
	checkTiny(t, "slot 0", in0, b.Output(1))
}

// On a GPU session both slots are pinned, zeroed and freed; if the last
// allocation fails, the ones made are freed and Go memory is used.
func TestStagedPinned(t *testing.T) {
	p := &fakePinned{}
	useFakePinned(t, p)
	s := pinnedSession(t)
	b, err := s.NewStagedBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	if p.allocs != 3 || !slices.Equal(p.sizes, []int{4 * 4 * tinyIn, 4 * 4 * tinyIn, 4 * 4 * tinyOut}) || !b.Pinned() {
		t.Fatalf("pinned allocations %d of %v bytes, Pinned() %v; want two inputs and an output", p.allocs, p.sizes, b.Pinned())
	}
	for slot := range 2 {
		if in := b.inSlot32(slot, 4); slices.ContainsFunc(in, func(v float32) bool { return v != 0 }) {
			t.Fatalf("slot %d not zeroed: %v", slot, in)
		}
		in := b.inSlot32(slot, 2)
		fillInts(in, slot+1)
		if err := b.RunSlot(slot, 2); err != nil {
			t.Fatal(err)
		}
		checkTiny(t, "pinned slot", in, b.Output(2))
	}
	if err := b.Close(); err != nil || p.frees != 3 {
		t.Fatalf("Close = %v with %d frees, want 3", err, p.frees)
	}

	q := &fakePinned{fail: errors.New("no page-locked memory left (test)"), failAfter: 2}
	useFakePinned(t, q)
	b, err = pinnedSession(t).NewStagedBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Pinned() || q.allocs != 2 || q.frees != 2 {
		t.Fatalf("after a failed third allocation: Pinned() %v, %d allocations, %d frees; want Go memory and both freed", b.Pinned(), q.allocs, q.frees)
	}
	in := b.inSlot32(1, 1)
	fillInts(in, 9)
	if err := b.RunSlot(1, 1); err != nil {
		t.Fatal(err)
	}
	checkTiny(t, "fallback slot 1", in, b.Output(1))
}

// With CUDA graphs both slots feed the one device buffer the graph was
// captured over: each run copies its own slot in.
func TestStagedDeviceIO(t *testing.T) {
	d := &fakeDevice{}
	s := graphSession(t, d)
	b, err := s.NewStagedBinding(4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if d.allocs != 2 {
		t.Fatalf("%d device buffers, want one input and one output for both slots", d.allocs)
	}
	for run := range 4 {
		slot := run % 2
		in := b.inSlot32(slot, 3)
		fillInts(in, run)
		fillInts(b.inSlot32(1-slot, 3), run+7) // the other slot holds other rows
		if err := b.RunSlot(slot, 3); err != nil {
			t.Fatal(err)
		}
		checkTiny(t, "device slot", plusOne(in), b.Output(3))
	}
}
