//go:build cgo && linux

package cuda

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Tests through the real dlopen path. They use the package-wide state, so
// none is parallel; each resets it when done.

func resetState(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		SetLibDirs(nil)
		Shutdown()
	})
}

// TestDiscoverHost runs discovery as the server would. On a machine without
// an NVIDIA driver (the usual one for these tests) it must say why, not fail.
func TestDiscoverHost(t *testing.T) {
	resetState(t)
	info := Rediscover()
	t.Logf("host: %+v", info)
	if info.Available() == (info.Reason != "") {
		t.Fatalf("Available() = %v with Reason %q", info.Available(), info.Reason)
	}
	if !info.Available() && !strings.Contains(info.Reason, "libcuda.so.1") && !strings.HasPrefix(info.Reason, "cu") &&
		!strings.HasPrefix(info.Reason, "no CUDA") {
		t.Errorf("Reason %q names neither the library nor a CUDA call", info.Reason)
	}
	samples, ok := Samples()
	if ok != (info.NVMLLibrary != "") {
		t.Errorf("Samples ok = %v, NVMLLibrary %q", ok, info.NVMLLibrary)
	}
	t.Logf("samples: %+v, %v", samples, ok)
}

// TestGarbageLibrary points FASTINFER_CUDA_LIB_DIR at files that are not
// ELF objects: dlopen must fail cleanly and the Reason quote its error.
func TestGarbageLibrary(t *testing.T) {
	resetState(t)
	dir := t.TempDir()
	for _, name := range []string{cudaSoname, nvmlSoname} {
		junk := []byte("\x7fELF? not really: just some garbage bytes \x00\x01\x02\x03\xff\xfe")
		if err := os.WriteFile(filepath.Join(dir, name), junk, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(LibDirEnv, dir)
	info := Rediscover()
	t.Logf("%+v", info)
	if info.Available() {
		t.Skip("this host has a working driver, whose answer wins over the broken file")
	}
	garbage := filepath.Join(dir, cudaSoname)
	if !strings.HasPrefix(info.Reason, "cannot load libcuda.so.1: ") || !strings.Contains(info.Reason, garbage+": ") {
		t.Errorf("Reason = %q, want the dlopen error for %s", info.Reason, garbage)
	}
	if info.NVMLLibrary == "" && !strings.Contains(info.NVMLReason, filepath.Join(dir, nvmlSoname)) {
		t.Errorf("NVMLReason = %q, want the dlopen error for the broken NVML", info.NVMLReason)
	}
	if _, ok := Samples(); ok != (info.NVMLLibrary != "") {
		t.Errorf("Samples ok = %v with NVMLLibrary %q", ok, info.NVMLLibrary)
	}
}

// TestGarbageLibraryDeterministic loads the broken file through the real
// loader while hiding every other candidate, so it checks the error text
// on any host, GPU or not.
func TestGarbageLibraryDeterministic(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, cudaSoname)
	if err := os.WriteFile(garbage, []byte("garbage"), 0o755); err != nil {
		t.Fatal(err)
	}
	sys := hostSystem()
	sys.exists = func(p string) bool { return p == garbage }
	realLoad := sys.loadCUDA
	sys.loadCUDA = func(p string) (cudaAPI, error) {
		if p != garbage {
			return realLoad(filepath.Join(dir, "absent", cudaSoname))
		}
		return realLoad(p)
	}
	sys.loadNVML = func(p string) (nvmlAPI, error) { return loadNVMLLib(filepath.Join(dir, "absent", nvmlSoname)) }
	info, nv, lib := discover(sys, []string{dir})
	if nv != nil || lib != nil || info.Available() {
		t.Fatalf("discover = %+v with a garbage library only", info)
	}
	// glibc says "file too short" or "invalid ELF header"; either way the
	// Reason is the path and dlerror's text.
	if !strings.HasPrefix(info.Reason, "cannot load libcuda.so.1: "+garbage+": ") {
		t.Errorf("Reason = %q", info.Reason)
	}
	if !strings.HasPrefix(info.NVMLReason, "libnvidia-ml.so.1 not found") {
		t.Errorf("NVMLReason = %q", info.NVMLReason)
	}
}

// TestMissingSymbol loads a valid shared object that is not libcuda.
func TestMissingSymbol(t *testing.T) {
	dir := buildFakes(t, map[string]string{cudaSoname: "int cuInit(unsigned int f) { return 0; }\n"})
	lib, err := loadCUDALib(filepath.Join(dir, cudaSoname))
	if err == nil {
		lib.Close()
		t.Fatal("a library without cuDriverGetVersion loaded")
	}
	if !strings.Contains(err.Error(), "cuDriverGetVersion") {
		t.Errorf("error %q does not name the missing symbol", err)
	}
}

// buildFakes compiles each C source into dir/name as a shared object.
func buildFakes(t *testing.T, sources map[string]string) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc) to build the fake driver libraries")
	}
	dir := t.TempDir()
	for name, src := range sources {
		c := filepath.Join(dir, name+".c")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", filepath.Join(dir, name), c).CombinedOutput()
		if err != nil {
			t.Fatalf("cc %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFakeDriverEndToEnd builds a fake libcuda.so.1 and libnvidia-ml.so.1
// (testdata/*.c) and discovers through them: dlopen, dlsym, the C calls,
// and the UUID join of CUDA and NVML numbering.
func TestFakeDriverEndToEnd(t *testing.T) {
	dir := buildFakes(t, map[string]string{
		cudaSoname: readTestdata(t, "fakecuda.c"),
		nvmlSoname: readTestdata(t, "fakenvml.c"),
	})
	resetState(t)
	t.Setenv(LibDirEnv, "/nonexistent-fastinfer-dir:"+dir)

	fakeUUID := func(k int) string {
		return "GPU-00112233-4455-6677-8899-aabbccddee0" + string(rune('0'+k))
	}
	for _, tc := range []struct {
		name    string
		count   string
		devices []Device
		samples []Sample
	}{
		{
			name:  "one device",
			count: "1",
			devices: []Device{{Index: 0, Name: "Fake GPU", UUID: fakeUUID(0),
				TotalMemory: 80 * gib, FreeMemory: 79 * gib, ComputeMajor: 9}},
			samples: []Sample{{Index: 0, UUID: fakeUUID(0), UtilizationPct: 42,
				MemoryUsed: gib, MemoryTotal: 80 * gib, PowerWatts: 123.456}},
		},
		{
			// NVML lists the devices in the other order; free memory must
			// follow the UUID.
			name:  "two devices, NVML order reversed",
			count: "2",
			devices: []Device{
				{Index: 0, Name: "Fake GPU", UUID: fakeUUID(0), TotalMemory: 80 * gib, FreeMemory: 79 * gib, ComputeMajor: 9},
				{Index: 1, Name: "Fake GPU", UUID: fakeUUID(1), TotalMemory: 80 * gib, FreeMemory: 78 * gib, ComputeMajor: 9},
			},
			samples: []Sample{
				{Index: 0, UUID: fakeUUID(1), UtilizationPct: 43, MemoryUsed: 2 * gib, MemoryTotal: 80 * gib, PowerWatts: 123.456},
				{Index: 1, UUID: fakeUUID(0), UtilizationPct: 42, MemoryUsed: gib, MemoryTotal: 80 * gib, PowerWatts: 123.456},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("FAKE_CUDA_DEVICE_COUNT", tc.count)
			info := Rediscover()
			if !info.Available() || info.Reason != "" {
				t.Fatalf("Discover with the fake driver = %+v", info)
			}
			if want := filepath.Join(dir, cudaSoname); info.Library != want {
				t.Errorf("Library = %q, want %q", info.Library, want)
			}
			if want := filepath.Join(dir, nvmlSoname); info.NVMLLibrary != want {
				t.Errorf("NVMLLibrary = %q, want %q", info.NVMLLibrary, want)
			}
			if info.CUDAVersion != "13.0" || info.DriverVersion != "580.00.01" {
				t.Errorf("CUDAVersion %q, DriverVersion %q; want 13.0 and 580.00.01", info.CUDAVersion, info.DriverVersion)
			}
			if !slices.Equal(info.Devices, tc.devices) {
				t.Errorf("Devices:\n got %+v\nwant %+v", info.Devices, tc.devices)
			}
			if again := Discover(); !infoEqual(again, info) {
				t.Errorf("cached Discover = %+v, want %+v", again, info)
			}
			samples, ok := Samples()
			if !ok || !slices.Equal(samples, tc.samples) {
				t.Errorf("Samples:\n got %+v, %v\nwant %+v", samples, ok, tc.samples)
			}
		})
	}

	t.Run("cuInit fails", func(t *testing.T) {
		t.Setenv("FAKE_CUDA_INIT_RESULT", "100")
		info := Rediscover()
		if info.Available() {
			t.Skip("this host has a working driver, which answers after the failing fake")
		}
		if info.Reason != "cuInit failed: 100 CUDA_ERROR_NO_DEVICE" {
			t.Errorf("Reason = %q", info.Reason)
		}
		if info.Library != filepath.Join(dir, cudaSoname) || info.CUDAVersion != "13.0" {
			t.Errorf("Library %q, CUDAVersion %q: want the fake's", info.Library, info.CUDAVersion)
		}
		// NVML works on its own and still samples.
		if s, ok := Samples(); !ok || len(s) != 1 {
			t.Errorf("Samples = %+v, %v", s, ok)
		}
	})

	t.Run("Shutdown ends the NVML session, Samples starts a new one", func(t *testing.T) {
		t.Setenv("FAKE_CUDA_DEVICE_COUNT", "1")
		Shutdown()
		if s, ok := Samples(); !ok || len(s) != 1 || s[0].PowerWatts != 123.456 {
			t.Errorf("Samples after Shutdown = %+v, %v", s, ok)
		}
	})
}

// TestConcurrentUse runs Discover, Samples and Rediscover from several
// goroutines over the fake driver, for the race detector.
func TestConcurrentUse(t *testing.T) {
	dir := buildFakes(t, map[string]string{
		cudaSoname: readTestdata(t, "fakecuda.c"),
		nvmlSoname: readTestdata(t, "fakenvml.c"),
	})
	resetState(t)
	t.Setenv(LibDirEnv, dir)
	t.Setenv("FAKE_CUDA_DEVICE_COUNT", "2")
	done := make(chan error)
	for g := range 8 {
		go func() {
			var err error
			for i := range 50 {
				switch (g + i) % 3 {
				case 0:
					if info := Discover(); !info.Available() {
						err = errors.New("Discover: " + info.Reason)
					}
				case 1:
					if s, ok := Samples(); !ok || len(s) != 2 {
						err = fmt.Errorf("Samples = %+v, %v", s, ok)
					}
				case 2:
					Rediscover()
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// useLoggingFakeDriver makes the fake libcuda the discovered driver and
// returns the file it logs its host- and device-memory calls to.
func useLoggingFakeDriver(t *testing.T) string {
	t.Helper()
	return useFakeDriverSource(t, readTestdata(t, "fakecuda.c"))
}

// useFakeDriverSource is useLoggingFakeDriver for a variant of fakecuda.c.
func useFakeDriverSource(t *testing.T, src string) string {
	t.Helper()
	dir := buildFakes(t, map[string]string{cudaSoname: src})
	resetState(t)
	t.Setenv(LibDirEnv, dir)
	logPath := filepath.Join(t.TempDir(), "host.log")
	t.Setenv("FAKE_CUDA_HOST_LOG", logPath)
	if info := Rediscover(); !info.Available() || info.Library != filepath.Join(dir, cudaSoname) {
		t.Skipf("the fake driver was not the one discovered: %+v", info)
	}
	return logPath
}

// checkDriverLog compares the fake driver's call log with want.
func checkDriverLog(t *testing.T, logPath, want string) {
	t.Helper()
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(log) != want {
		t.Errorf("driver calls:\n%s\nwant\n%s", log, want)
	}
}

// TestFakeDriverHostMemory pins host memory through the fake driver: the
// primary context is current for each call (the fake refuses otherwise),
// every context reference taken is given back when the buffer is freed,
// and failures are errors, not panics.
func TestFakeDriverHostMemory(t *testing.T) {
	logPath := useLoggingFakeDriver(t)

	b, err := AllocHost(0, 4000)
	if err != nil {
		t.Fatalf("AllocHost: %v", err)
	}
	f := b.Bytes()
	if len(f) != 4000 || b.Len() != 4000 {
		t.Fatalf("Bytes has %d, Len %d; want 4000", len(f), b.Len())
	}
	for i := range f { // the memory is usable from Go
		f[i] = byte(i)
	}
	if f[3999] != byte(3999%256) || !b.Pinned() {
		t.Errorf("f[3999] = %v, Pinned() = %v", f[3999], b.Pinned())
	}
	if err := b.Free(); err != nil {
		t.Fatalf("Free: %v", err)
	}
	if err := b.Free(); err != nil || b.Bytes() != nil || b.Len() != 0 || b.Pinned() {
		t.Errorf("after Free: second Free %v, Bytes %v, Len %d, Pinned %v", err, b.Bytes(), b.Len(), b.Pinned())
	}
	// Alloc: retain for the call, kept by the buffer. Pinned: retain,
	// release. Free: retain, free, release twice.
	checkDriverLog(t, logPath, "retain 0\nalloc 4000\nretain 0\nrelease 0\nretain 0\nfree 0\nrelease 0\nrelease 0\n")

	for _, tc := range []struct {
		name, env, val string
		dev, bytes     int
		want           string
	}{
		{"out of memory", "FAKE_CUDA_HOSTALLOC_RESULT", "2", 0, 64, "cuMemHostAlloc(64 bytes, device 0): 2 CUDA_ERROR_OUT_OF_MEMORY"},
		{"no such device", "", "", 7, 64, "cuMemHostAlloc(64 bytes, device 7): 101 CUDA_ERROR_INVALID_DEVICE"},
		{"nothing asked", "", "", 0, 0, "pinned host memory: 0 bytes requested"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(tc.env, tc.val)
			}
			os.Remove(logPath)
			b, err := AllocHost(tc.dev, tc.bytes)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("AllocHost = %v, %v; want error %q", b, err, tc.want)
			}
			// A failed allocation keeps no context reference.
			log, _ := os.ReadFile(logPath)
			if strings.Count(string(log), "retain") != strings.Count(string(log), "release") {
				t.Errorf("unbalanced context references:\n%s", log)
			}
		})
	}

	t.Run("driver without the host-memory calls", func(t *testing.T) {
		src := readTestdata(t, "fakecuda.c")
		cut := strings.Index(src, "/*\n * Page-locked host memory")
		if cut < 0 {
			t.Fatal("fakecuda.c no longer has its host-memory section")
		}
		old := buildFakes(t, map[string]string{cudaSoname: src[:cut]})
		t.Setenv(LibDirEnv, old)
		if info := Rediscover(); info.Library != filepath.Join(old, cudaSoname) {
			t.Skipf("the old fake driver was not the one discovered: %+v", info)
		}
		_, err := AllocHost(0, 64)
		if !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "lacks cuMemHostAlloc") {
			t.Errorf("AllocHost = %v, want ErrNoDriver naming cuMemHostAlloc", err)
		}
	})

	t.Run("no device", func(t *testing.T) {
		t.Setenv("FAKE_CUDA_INIT_RESULT", "100")
		if Rediscover().Available() {
			t.Skip("this host has a working driver, which answers after the failing fake")
		}
		if _, err := AllocHost(0, 64); !errors.Is(err, ErrNoDriver) {
			t.Errorf("AllocHost without a device = %v, want ErrNoDriver", err)
		}
	})
}

// TestFakeDriverDeviceMemory round-trips floats through device memory of
// the fake driver and checks each call's context references balance.
func TestFakeDriverDeviceMemory(t *testing.T) {
	logPath := useLoggingFakeDriver(t)
	d, err := AllocDevice(0, 64)
	if err != nil {
		t.Fatal(err)
	}
	if d.Ptr() == 0 || d.Len() != 64 {
		t.Fatalf("Ptr %#x, Len %d", d.Ptr(), d.Len())
	}
	in := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	if err := d.CopyIn(in); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 20)
	if err := d.CopyOut(out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in, out) {
		t.Errorf("round trip gave %v, want %v", out, in)
	}
	if err := d.CopyIn(make([]byte, 68)); err == nil || !strings.Contains(err.Error(), "68 bytes into a 64-byte") {
		t.Errorf("oversized copy = %v", err)
	}
	if err := d.Free(); err != nil {
		t.Fatal(err)
	}
	if err := d.Free(); err != nil || d.Ptr() != 0 {
		t.Errorf("second Free = %v, Ptr %#x", err, d.Ptr())
	}
	if err := d.CopyOut(out); err == nil {
		t.Error("CopyOut after Free succeeded")
	}
	// The copies go through the per-thread default stream's entry points.
	checkDriverLog(t, logPath, "retain 0\nalloc 64\nretain 0\nptds 0\nhtod 20\nsync 2\nrelease 0\nretain 0\nptds 0\ndtoh 20\nrelease 0\nretain 0\nfree 0\nrelease 0\nrelease 0\n")
}
