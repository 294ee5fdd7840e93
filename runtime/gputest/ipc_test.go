package gputest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"fastinfer/cuda"
)

// ipcChildEnv set to 1 makes the test binary the exporting process of
// TestIPCTwoProcesses: a CUDA IPC handle cannot be opened in the process
// that made it.
const ipcChildEnv = "FASTINFER_TEST_IPC_CHILD"

// ipcBytes is the exported allocation's size, deliberately not a multiple
// of a page.
const ipcBytes = 1<<20 + 4099

// The child runs from init, before TestMain opens ONNX Runtime, which it
// does not need.
func init() {
	if os.Getenv(ipcChildEnv) == "1" {
		os.Exit(ipcChild(os.Stdin, os.Stdout, os.Stderr))
	}
}

func ipcPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131+i>>8) ^ seed
	}
	return b
}

// ipcWant is the exporter's memory once the importer has written
// ipcPattern(n, 2) at off.
func ipcWant(off, n int) []byte {
	b := ipcPattern(ipcBytes, 1)
	copy(b[off:off+n], ipcPattern(n, 2))
	return b
}

// ipcChild allocates device memory holding ipcPattern(ipcBytes, 1), prints
// "handle HEX", waits for "check OFF N" and checks the memory is ipcWant.
func ipcChild(in io.Reader, out, errw io.Writer) int {
	d, err := cuda.AllocDevice(0, ipcBytes)
	if err != nil {
		fmt.Fprintln(errw, "child: AllocDevice:", err)
		return 1
	}
	defer d.Free()
	if err := d.CopyIn(ipcPattern(ipcBytes, 1)); err != nil {
		fmt.Fprintln(errw, "child: CopyIn:", err)
		return 1
	}
	h, err := d.IPCHandle()
	if err != nil {
		fmt.Fprintln(errw, "child: IPCHandle:", err)
		return 1
	}
	fmt.Fprintf(out, "handle %x\n", h)
	var off, n int
	if _, err := fmt.Fscanf(in, "check %d %d\n", &off, &n); err != nil {
		fmt.Fprintln(errw, "child: reading the parent's check line:", err)
		return 1
	}
	if off < 0 || n < 0 || off > ipcBytes-n {
		fmt.Fprintf(errw, "child: check of %d bytes at %d\n", n, off)
		return 1
	}
	got := make([]byte, ipcBytes)
	if err := d.CopyOut(got); err != nil {
		fmt.Fprintln(errw, "child: CopyOut:", err)
		return 1
	}
	want := ipcWant(off, n)
	for i := range got {
		if got[i] != want[i] {
			fmt.Fprintf(errw, "child: byte %d is %#x, want %#x (the parent wrote %d bytes at %d)\n", i, got[i], want[i], n, off)
			return 1
		}
	}
	fmt.Fprintln(out, "ok")
	return 0
}

// TestIPCTwoProcesses opens device memory another process exported, as
// the server does for Triton's CUDA shared memory: the child allocates and
// fills it, this process reads it through the handle and writes part of
// it, and the child sees the write.
func TestIPCTwoProcesses(t *testing.T) {
	if graphsMode {
		t.Skip("FASTINFER_TEST_CUDA_GRAPHS=1 runs only the CUDA-graph tests")
	}
	if gpus := cuda.Discover(); !gpus.Available() {
		t.Skip("no GPU: " + gpus.Reason)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), ipcChildEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waited := false
	wait := func() error {
		waited = true
		stdin.Close()
		for range lines { // drain, so Wait may close the pipe
		}
		return cmd.Wait()
	}
	// fail stops the child (it may be blocked on stdin) and reports what
	// it said. Only after Wait may stderr be read.
	fail := func(format string, args ...any) {
		t.Helper()
		cmd.Process.Kill()
		wait()
		t.Fatalf(format+"\nchild stderr:\n%s", append(args, stderr.String())...)
	}
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			wait()
		}
	})
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				fail("the child exited early")
			}
			return l
		case <-time.After(2 * time.Minute):
			fail("no word from the child in 2 minutes")
		}
		return ""
	}

	hexHandle, ok := strings.CutPrefix(next(), "handle ")
	if !ok {
		fail("the child did not print its handle")
	}
	h, err := hex.DecodeString(hexHandle)
	if err != nil || len(h) != cuda.IPCHandleSize {
		fail("handle %q: %d bytes, %v", hexHandle, len(h), err)
	}

	// More than the allocation: refused, and the handle closed again, so
	// the open below succeeds.
	if m, err := cuda.OpenIPC(h, 0, 1<<40); err == nil {
		m.Close()
		fail("OpenIPC of 1 TiB from a %d-byte allocation succeeded", ipcBytes)
	} else {
		t.Logf("OpenIPC of 1 TiB: %v", err)
	}

	m, err := cuda.OpenIPC(h, 0, ipcBytes)
	if err != nil {
		fail("OpenIPC: %v", err)
	}
	got := make([]byte, ipcBytes)
	if err := m.ReadAt(got, 0); err != nil {
		fail("ReadAt: %v", err)
	}
	if !bytes.Equal(got, ipcPattern(ipcBytes, 1)) {
		fail("ReadAt gave other bytes than the child wrote")
	}
	tail := make([]byte, 100)
	if err := m.ReadAt(tail, ipcBytes-100); err != nil || !bytes.Equal(tail, ipcPattern(ipcBytes, 1)[ipcBytes-100:]) {
		fail("ReadAt of the last 100 bytes: %v", err)
	}
	const off, n = 4097, 65536 + 3
	if err := m.WriteAt(ipcPattern(n, 2), off); err != nil {
		fail("WriteAt: %v", err)
	}
	if err := m.ReadAt(got, 0); err != nil || !bytes.Equal(got, ipcWant(off, n)) {
		fail("ReadAt after WriteAt: %v, or other bytes", err)
	}
	// The importer closes before the exporter frees, as CUDA requires.
	if err := m.Close(); err != nil {
		fail("Close: %v", err)
	}
	if _, err := fmt.Fprintf(stdin, "check %d %d\n", off, n); err != nil {
		fail("telling the child: %v", err)
	}
	if l := next(); l != "ok" {
		fail("the child answered %q", l)
	}
	if err := wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
}
