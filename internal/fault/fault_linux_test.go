package fault

import (
	"testing"

	"fastinfer/internal/testutil"
)

func TestGuard(t *testing.T) {
	m, truncate := testutil.MappedFile(t, 8192)
	var sum byte
	if Guard(func() { sum += m[4096] }) {
		t.Fatal("a read of a mapped page faulted")
	}
	truncate(4096)
	if !Guard(func() { sum += m[4096] }) {
		t.Fatal("a read past the truncated object did not fault")
	}
	if Guard(func() { sum += m[0] }) {
		t.Fatal("a read of the page still there faulted")
	}
	// Other panics are not faults.
	defer func() {
		if v := recover(); v != "other" {
			t.Fatalf("recovered %v, want the panic to go on", v)
		}
	}()
	Guard(func() { panic("other") })
}
