package batching

import (
	"context"
	"errors"
	"testing"
	"unsafe"

	"fastinfer/internal/testutil"
)

// faultingRows is rows of input in a shared mapping of a file that has
// since been truncated: reading it raises SIGBUS, as a client's shared
// memory object does when the client shrinks it under the server.
func faultingRows(t *testing.T, rows int) []float32 {
	t.Helper()
	m, truncate := testutil.MappedFile(t, 4096)
	truncate(0)
	return unsafe.Slice((*float32)(unsafe.Pointer(&m[0])), rows*inLen)
}

// A request whose input faults while the batch is gathered (MayFault)
// fails with ErrInputFault; the request beside it in the same batch gets
// its answer, and the scheduler goes on.
func TestInputFault(t *testing.T) {
	for _, parallel := range []bool{false, true} {
		name := map[bool]string{false: "serial gather", true: "parallel gather"}[parallel]
		t.Run(name, func(t *testing.T) {
			if parallel {
				defer func(old int) { parallelGatherBytes = old }(parallelGatherBytes)
				parallelGatherBytes = 1
			}
			rec := &recorder{}
			f := newFake(rec, 8)
			f.hold, f.started = make(chan struct{}), make(chan int, 8)
			s := newScheduler(t, Config{MaxBatchSize: 8, MaxQueueDelay: 0}, f)
			blocker := do(s, context.Background(), 1, 1, RequestOptions{})
			<-f.started // the blocker's batch runs, held
			bad := faultingRows(t, 2)
			faulted := make(chan error, 1)
			go func() {
				_, err := s.Do(context.Background(), bad, 2, make([]float32, 2*outLen), RequestOptions{MayFault: true})
				faulted <- err
			}()
			waitPending(t, s, 2)
			good := do(s, context.Background(), 2, 3, RequestOptions{})
			waitPending(t, s, 5)
			f.hold <- struct{}{} // the blocker
			close(f.hold)        // and every batch after
			if r := <-blocker; r.err != nil {
				t.Fatal(r.err)
			}
			if err := <-faulted; !errors.Is(err, ErrInputFault) {
				t.Fatalf("faulting request: %v, want ErrInputFault", err)
			}
			r := <-good
			if r.err != nil {
				t.Fatal(r.err)
			}
			checkRows(t, 2, r.in, r.out, 3)
			if r := <-do(s, context.Background(), 3, 2, RequestOptions{}); r.err != nil {
				t.Fatalf("after the fault: %v", r.err)
			}
		})
	}
}
