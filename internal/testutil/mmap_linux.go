package testutil

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// MappedFile maps a new file of size bytes, shared, as a client's shared
// memory object is mapped; truncate shrinks the file under the mapping,
// after which reading the pages past its new end raises SIGBUS.
func MappedFile(t testing.TB, size int) (m []byte, truncate func(size int64)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "object")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(m) })
	return m, func(size int64) {
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
}
