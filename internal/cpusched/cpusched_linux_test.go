package cpusched

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// The test switches its own process: it runs in a test binary of its own.
func TestSetBatchCoversExistingAndLaterThreads(t *testing.T) {
	if _, err := Set("fifo"); err == nil {
		t.Fatal("Set accepted an unknown policy")
	}
	if _, err := Set(Batch); err != nil {
		t.Fatal(err)
	}
	if got, err := Current(); err != nil || got != Batch {
		t.Fatalf("after Set(batch): policy %q, %v", got, err)
	}
	// Force new OS threads: goroutines that hold theirs locked while
	// blocked in a syscall make the runtime start others.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-release
			time.Sleep(time.Millisecond)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	if len(tids) < 8 {
		t.Fatalf("only %d threads: the test did not create new ones", len(tids))
	}
	if got, err := Current(); err != nil || got != Batch {
		t.Errorf("threads started later: policy %q, %v", got, err)
	}
	close(release)
	wg.Wait()
	n, err := Set(Batch)
	if err != nil || n != 0 {
		t.Errorf("second Set(batch) changed %d threads, %v; want 0", n, err)
	}
}
