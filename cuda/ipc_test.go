//go:build cgo && linux

package cuda

import (
	"bytes"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// readLog is the fake driver's log so far ("" before any call).
func readLog(t *testing.T, logPath string) string {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// heldRefs is the context references retained and not yet released.
func heldRefs(log string) int {
	return strings.Count(log, "retain ") - strings.Count(log, "release ")
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// exported allocates n bytes of fake device memory holding pattern(n, 3)
// and returns it with its IPC handle.
func exported(t *testing.T, n int) (*DeviceBuffer, []byte) {
	t.Helper()
	d, err := AllocDevice(0, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free() })
	if err := d.CopyIn(pattern(n, 3)); err != nil {
		t.Fatal(err)
	}
	h, err := d.IPCHandle()
	if err != nil {
		t.Fatalf("IPCHandle: %v", err)
	}
	if len(h) != IPCHandleSize {
		t.Fatalf("IPCHandle gave %d bytes", len(h))
	}
	return d, h
}

// TestIPCRoundTrip exports fake device memory, opens the handle, reads it
// at several offsets and writes into it, through the current and the
// pre-CUDA 11 name of cuIpcOpenMemHandle, and with copies on the legacy
// default stream when the driver lacks the per-thread stream's.
func TestIPCRoundTrip(t *testing.T) {
	src := readTestdata(t, "fakecuda.c")
	old := strings.Replace(src, "int cuIpcOpenMemHandle_v2(", "int cuIpcOpenMemHandle(", 1)
	if old == src {
		t.Fatal("fakecuda.c no longer defines cuIpcOpenMemHandle_v2")
	}
	legacy := strings.NewReplacer("int cuMemcpyHtoD_v2_ptds(", "int no_htod_ptds(", "int cuMemcpyDtoH_v2_ptds(", "int no_dtoh_ptds(").Replace(src)
	for _, driver := range []struct {
		name, src string
		sync      string // the stream WriteAt waits for
	}{
		{"cuIpcOpenMemHandle_v2", src, "sync 2\n"},
		{"cuIpcOpenMemHandle only", old, "sync 2\n"},
		{"no per-thread stream copies", legacy, "sync 1\n"},
	} {
		t.Run(driver.name, func(t *testing.T) {
			logPath := useFakeDriverSource(t, driver.src)
			const n = 256
			d, h := exported(t, n)
			m, err := OpenIPC(h, 0, n)
			if err != nil {
				t.Fatalf("OpenIPC: %v", err)
			}
			defer m.Close()
			if m.Size() != n || m.Device() != 0 {
				t.Errorf("Size %d, Device %d", m.Size(), m.Device())
			}
			want := pattern(n, 3)
			for _, c := range []struct{ off, n int }{{0, n}, {1, 10}, {100, 156}, {255, 1}, {256, 0}, {17, 0}} {
				got := make([]byte, c.n)
				if err := m.ReadAt(got, int64(c.off)); err != nil {
					t.Errorf("ReadAt(%d bytes, %d): %v", c.n, c.off, err)
				} else if !bytes.Equal(got, want[c.off:c.off+c.n]) {
					t.Errorf("ReadAt(%d bytes, %d) = %v, want %v", c.n, c.off, got, want[c.off:c.off+c.n])
				}
			}
			for _, c := range []struct{ off, n int }{{0, 3}, {10, 20}, {250, 6}} {
				w := pattern(c.n, 100+byte(c.off))
				if err := m.WriteAt(w, int64(c.off)); err != nil {
					t.Fatalf("WriteAt(%d bytes, %d): %v", c.n, c.off, err)
				}
				copy(want[c.off:], w)
			}
			got := make([]byte, n)
			if err := d.CopyOut(got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("the exporter's buffer after WriteAt:\n got %v\nwant %v", got, want)
			}
			log := readLog(t, logPath)
			// The buffer's reference and the mapping's are held.
			if held := heldRefs(log); held != 2 {
				t.Errorf("%d context references held while open, want 2", held)
			}
			// exported's CopyIn waits too.
			if got := strings.Count(log, "sync "); got != 4 || strings.Count(log, driver.sync) != 4 {
				t.Errorf("%d stream waits for a CopyIn and 3 WriteAt, want each %q:\n%s", got, driver.sync, log)
			}
		})
	}
}

// TestIPCDriverLog checks each driver call runs in the primary context,
// that the mapping's context reference lasts exactly until Close, and that
// WriteAt waits for its copy's stream.
func TestIPCDriverLog(t *testing.T) {
	logPath := useLoggingFakeDriver(t)
	d, err := AllocDevice(0, 64)
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.IPCHandle()
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenIPC(h, 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(make([]byte, 10), 4); err != nil {
		t.Fatal(err)
	}
	if err := m.ReadAt(make([]byte, 12), 50); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Free(); err != nil {
		t.Fatal(err)
	}
	checkDriverLog(t, logPath, "retain 0\nalloc 64\n"+
		"retain 0\nipcget 64\nrelease 0\n"+ // IPCHandle
		"retain 0\nipcopen 64\n"+ // OpenIPC keeps its reference
		"retain 0\nptds 0\nhtod 10\nsync 2\nrelease 0\n"+ // WriteAt: the per-thread stream's copy, waited for
		"retain 0\nptds 0\ndtoh 12\nrelease 0\n"+ // ReadAt
		"retain 0\nipcclose 0\nrelease 0\nrelease 0\n"+ // Close gives both back
		"retain 0\nfree 0\nrelease 0\nrelease 0\n")
	if _, err := d.IPCHandle(); err == nil || !strings.Contains(err.Error(), "after Free") {
		t.Errorf("IPCHandle after Free = %v", err)
	}
}

// TestIPCOpenRefusals: what OpenIPC refuses, and that a refusal leaves no
// mapping open and no context reference behind.
func TestIPCOpenRefusals(t *testing.T) {
	logPath := useLoggingFakeDriver(t)
	const n = 256
	d, h := exported(t, n)
	// The fake's handle is a magic and the address: point one 100 bytes in.
	interior := slices.Clone(h)
	*(*uint64)(unsafe.Pointer(&interior[8])) = d.Ptr() + 100
	for _, tc := range []struct {
		name   string
		handle []byte
		dev    int
		size   int64
		env    string // NAME=value set for the case
		want   string // "" for success
		driver bool   // the driver is called
	}{
		{"short handle", h[:IPCHandleSize-1], 0, n, "", "CUDA IPC handle of 63 bytes, want 64", false},
		{"long handle", append(slices.Clone(h), 0), 0, n, "", "CUDA IPC handle of 65 bytes, want 64", false},
		{"nil handle", nil, 0, n, "", "CUDA IPC handle of 0 bytes, want 64", false},
		{"zero size", h, 0, 0, "", "CUDA IPC memory: 0 bytes requested", false},
		{"negative size", h, 0, -1, "", "CUDA IPC memory: -1 bytes requested", false},
		{"garbage handle", bytes.Repeat([]byte{0xab}, IPCHandleSize), 0, n, "", "cuIpcOpenMemHandle(device 0): 400 CUDA_ERROR_INVALID_HANDLE", true},
		{"no such device", h, 7, n, "", "cuIpcOpenMemHandle(device 7): 101 CUDA_ERROR_INVALID_DEVICE", true},
		{"larger than the allocation", h, 0, n + 1, "", "CUDA IPC handle on device 0: its allocation has 256 bytes from the opened address, fewer than the 257 asked for", true},
		{"far larger than the allocation", h, 0, math.MaxInt64, "", "fewer than the 9223372036854775807 asked for", true},
		{"address range fails", h, 0, n, "FAKE_CUDA_RANGE_RESULT=1", "cuIpcOpenMemHandle(device 0): 1 CUDA_ERROR_INVALID_VALUE", true},
		{"interior address, to the end", interior, 0, n - 100, "", "", true},
		{"interior address, past the end", interior, 0, n - 99, "", "its allocation has 156 bytes from the opened address, fewer than the 157", true},
		{"whole allocation", h, 0, n, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tc.env, "="); ok {
				t.Setenv(k, v)
			}
			os.Remove(logPath)
			m, err := OpenIPC(tc.handle, tc.dev, tc.size)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("OpenIPC: %v", err)
				}
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenIPC = %v, %v; want error %q", m, err, tc.want)
			} else if errors.Is(err, ErrNoDriver) {
				t.Errorf("OpenIPC = %v, which wraps ErrNoDriver", err)
			}
			log := readLog(t, logPath)
			if !tc.driver && log != "" {
				t.Errorf("the driver was called:\n%s", log)
			}
			if heldRefs(log) != 0 || strings.Count(log, "ipcopen") != strings.Count(log, "ipcclose") {
				t.Errorf("a mapping or context reference left behind:\n%s", log)
			}
		})
	}
}

// TestIPCCopyBounds: copies outside the opened bytes fail without a driver
// call; an empty one in bounds succeeds without one.
func TestIPCCopyBounds(t *testing.T) {
	logPath := useLoggingFakeDriver(t)
	const n = 64
	_, h := exported(t, n)
	// Open fewer bytes than the allocation has: the bounds are the size
	// asked for, not the allocation's.
	m, err := OpenIPC(h, 0, n-8)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		name string
		off  int64
		n    int
		ok   bool
	}{
		{"negative offset", -1, 1, false},
		{"negative offset, empty", -1, 0, false},
		{"offset past the end, empty", n - 7, 0, false},
		{"one byte past the end", n - 10, 3, false},
		{"past the allocation", 0, n, false},
		{"largest offset", math.MaxInt64, 1, false},
		{"empty at the end", n - 8, 0, true},
		{"empty at the start", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, op := range []struct {
				name string
				f    func([]byte, int64) error
			}{{"ReadAt", m.ReadAt}, {"WriteAt", m.WriteAt}} {
				os.Remove(logPath)
				err := op.f(make([]byte, tc.n), tc.off)
				if (err == nil) != tc.ok {
					t.Errorf("%s(%d bytes, %d) = %v", op.name, tc.n, tc.off, err)
				}
				if log := readLog(t, logPath); log != "" {
					t.Errorf("%s(%d bytes, %d) called the driver:\n%s", op.name, tc.n, tc.off, log)
				}
			}
		})
	}
}

// TestIPCClose: a second Close does nothing and copies after Close fail.
func TestIPCClose(t *testing.T) {
	logPath := useLoggingFakeDriver(t)
	_, h := exported(t, 32)
	m, err := OpenIPC(h, 0, 32)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := m.Close(); err != nil {
			t.Fatalf("Close %d: %v", i+1, err)
		}
	}
	if n := strings.Count(readLog(t, logPath), "ipcclose"); n != 1 {
		t.Errorf("cuIpcCloseMemHandle called %d times", n)
	}
	buf := make([]byte, 4)
	for _, op := range []struct {
		name string
		err  error
	}{{"ReadAt", m.ReadAt(buf, 0)}, {"WriteAt", m.WriteAt(buf, 0)}, {"empty ReadAt", m.ReadAt(nil, 0)}} {
		if !errors.Is(op.err, errIPCClosed) {
			t.Errorf("%s after Close = %v, want %v", op.name, op.err, errIPCClosed)
		}
	}
	if m.Size() != 32 {
		t.Errorf("Size after Close = %d", m.Size())
	}
	if held := heldRefs(readLog(t, logPath)); held != 1 { // the exporter's buffer's
		t.Errorf("%d context references held after Close, want 1", held)
	}
}

// TestIPCConcurrentReadsAndClose reads and writes from many goroutines
// through the fake driver while Close runs (for -race): every copy either
// succeeds with the right bytes or reports the Close.
func TestIPCConcurrentReadsAndClose(t *testing.T) {
	logPath := useLoggingFakeDriver(t)
	const n = 4096
	_, h := exported(t, n)
	m, err := OpenIPC(h, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	want := pattern(n, 3)
	var done atomic.Int64
	var closed atomic.Bool // set once Close has returned
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				off := (g*131 + i*17) % (n - 64)
				after := closed.Load()
				var err error
				if g%2 == 0 {
					got := make([]byte, 64)
					if err = m.ReadAt(got, int64(off)); err == nil && !bytes.Equal(got, want[off:off+64]) {
						errs <- errors.New("ReadAt read other bytes")
						return
					}
				} else {
					err = m.WriteAt(want[off:off+64], int64(off)) // the same bytes: readers see no change
				}
				if err != nil {
					if !errors.Is(err, errIPCClosed) {
						errs <- err
					}
					return
				}
				if after {
					errs <- errors.New("a copy that began after Close returned succeeded")
					return
				}
				done.Add(1)
			}
		})
	}
	for done.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	closed.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	log := readLog(t, logPath)
	if heldRefs(log) != 1 || strings.Count(log, "ipcopen") != 1 || strings.Count(log, "ipcclose") != 1 {
		t.Errorf("after %d copies: %d references held (want the buffer's 1), %d opens, %d closes",
			done.Load(), heldRefs(log), strings.Count(log, "ipcopen"), strings.Count(log, "ipcclose"))
	}
}

// TestIPCNoDriver: without a device, or with a driver lacking the IPC
// calls, OpenIPC and IPCHandle fail with ErrNoDriver.
func TestIPCNoDriver(t *testing.T) {
	src := readTestdata(t, "fakecuda.c")
	cut := strings.Index(src, "/*\n * CUDA IPC")
	if cut < 0 {
		t.Fatal("fakecuda.c no longer has its IPC section")
	}
	handle := make([]byte, IPCHandleSize)

	t.Run("no device", func(t *testing.T) {
		useLoggingFakeDriver(t)
		t.Setenv("FAKE_CUDA_INIT_RESULT", "100")
		if Rediscover().Available() {
			t.Skip("this host has a working driver, which answers after the failing fake")
		}
		if _, err := OpenIPC(handle, 0, 64); !errors.Is(err, ErrNoDriver) {
			t.Errorf("OpenIPC without a device = %v, want ErrNoDriver", err)
		}
	})

	t.Run("driver without the IPC calls", func(t *testing.T) {
		useFakeDriverSource(t, src[:cut])
		if _, err := OpenIPC(handle, 0, 64); !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "lacks the CUDA IPC calls") {
			t.Errorf("OpenIPC = %v, want ErrNoDriver naming the IPC calls", err)
		}
		d, err := AllocDevice(0, 64)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Free()
		if _, err := d.IPCHandle(); !errors.Is(err, ErrNoDriver) {
			t.Errorf("IPCHandle = %v, want ErrNoDriver", err)
		}
	})
}

// gateLib is an ipcAPI in Go whose copies wait at a gate, to see how
// copies and Close overlap.
type gateLib struct {
	mem      []byte
	gate     chan struct{} // copies wait for it to close
	inFlight atomic.Int32
	peak     atomic.Int32
	closedIn atomic.Int32 // copies in flight when IPCClose ran
	closes   atomic.Int32
}

const gateBase = 0x10000

func (g *gateLib) DeviceSupported() bool                   { return true }
func (g *gateLib) DeviceAlloc(int, int) (uint64, cuResult) { return 0, cuErrorNotSupport }
func (g *gateLib) DeviceFree(int, uint64) cuResult         { return cuErrorNotSupport }
func (g *gateLib) IPCSupported() bool                      { return true }
func (g *gateLib) IPCGetHandle(int, uint64) ([IPCHandleSize]byte, cuResult) {
	return [IPCHandleSize]byte{}, cuErrorNotSupport
}
func (g *gateLib) IPCOpen(int, *[IPCHandleSize]byte, int64) (uint64, int64, cuResult) {
	return 0, 0, cuErrorNotSupport
}

func (g *gateLib) IPCClose(int, uint64) cuResult {
	g.closedIn.Store(g.inFlight.Load())
	g.closes.Add(1)
	return cuSuccess
}

func (g *gateLib) DeviceCopy(_ int, toDevice bool, d uint64, h unsafe.Pointer, n int) cuResult {
	now := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for {
		if p := g.peak.Load(); now <= p || g.peak.CompareAndSwap(p, now) {
			break
		}
	}
	<-g.gate
	host := unsafe.Slice((*byte)(h), n)
	dev := g.mem[d-gateBase:][:n]
	if toDevice {
		copy(dev, host)
	} else {
		copy(host, dev)
	}
	return cuSuccess
}

// TestIPCCopiesOverlapCloseWaits: copies run at once (not one at a time),
// and Close waits for those under way before the driver unmaps.
func TestIPCCopiesOverlapCloseWaits(t *testing.T) {
	const copies = 6
	lib := &gateLib{mem: pattern(128, 1), gate: make(chan struct{})}
	m := &IPCMemory{p: gateBase, size: 128, lib: lib}
	var wg sync.WaitGroup
	errs := make([]error, copies)
	for i := range copies {
		wg.Go(func() {
			if i%2 == 0 {
				errs[i] = m.ReadAt(make([]byte, 16), int64(i*16))
			} else {
				errs[i] = m.WriteAt(pattern(16, 1)[:16], int64(i*16))
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for lib.inFlight.Load() < copies {
		if time.Now().After(deadline) {
			close(lib.gate)
			t.Fatalf("only %d of %d copies under way at once", lib.inFlight.Load(), copies)
		}
		time.Sleep(time.Millisecond)
	}
	var closeErr error
	closeDone := make(chan struct{})
	go func() { closeErr = m.Close(); close(closeDone) }()
	select {
	case <-closeDone:
		t.Error("Close returned with copies under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(lib.gate)
	wg.Wait()
	<-closeDone
	if closeErr != nil {
		t.Errorf("Close: %v", closeErr)
	}
	if lib.closedIn.Load() != 0 || lib.closes.Load() != 1 || lib.peak.Load() != copies {
		t.Errorf("IPCClose ran %d times with %d copies in flight; peak %d copies at once",
			lib.closes.Load(), lib.closedIn.Load(), lib.peak.Load())
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("copy %d: %v", i, err)
		}
	}
	if err := m.ReadAt(make([]byte, 1), 0); !errors.Is(err, errIPCClosed) {
		t.Errorf("ReadAt after Close = %v", err)
	}
}
