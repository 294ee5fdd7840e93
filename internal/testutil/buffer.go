// Package testutil holds small helpers shared by tests.
package testutil

import (
	"strings"
	"sync"
)

// Buffer is a strings.Builder safe for concurrent writers, for capturing
// logs from servers under test.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
