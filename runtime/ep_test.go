package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// The OrtApi indices hard-coded in ep_cgo.go must match offsetof() in the
// C API header that ships with the onnxruntime_go module.
func TestOrtAPIIndicesMatchHeader(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locating onnxruntime_go: %v", err)
	}
	inc := strings.TrimSpace(string(dir))
	idx := apiIndices()
	names := make([]string, 0, len(idx))
	for n := range idx {
		names = append(names, n)
	}
	sort.Strings(names)
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include \"onnxruntime_c_api.h\"\nint main(void) {\n")
	for _, n := range names {
		fmt.Fprintf(&src, "\tprintf(\"%s %%zu\\n\", offsetof(OrtApi, %s) / sizeof(void *));\n", n, n)
	}
	src.WriteString("\tprintf(\"GPU %d\\n\", (int)OrtHardwareDeviceType_GPU);\n")
	consts := apiConstants()
	for n, expr := range map[string]string{
		"DeviceAllocator": "OrtDeviceAllocator", "ArenaAllocator": "OrtArenaAllocator",
		"MemTypeDefault": "OrtMemTypeDefault", "DeviceMemoryTypeDefault": "OrtDeviceMemoryType_DEFAULT",
		"Float": "ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT", "Float16": "ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16",
		"Uint8": "ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8",
	} {
		if _, ok := consts[n]; !ok {
			t.Fatalf("apiConstants lacks %s", n)
		}
		fmt.Fprintf(&src, "\tprintf(\"%s %%d\\n\", (int)%s);\n", n, expr)
	}
	src.WriteString("\treturn 0;\n}\n")
	tmp := t.TempDir()
	c := filepath.Join(tmp, "offsets.c")
	if err := os.WriteFile(c, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "offsets")
	if out, err := exec.Command(cc, "-I", inc, "-o", bin, c).CombinedOutput(); err != nil {
		t.Fatalf("compiling: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var name string
		var v int
		fmt.Sscanf(line, "%s %d", &name, &v)
		got[name] = v
	}
	for _, n := range names {
		if got[n] != idx[n] {
			t.Errorf("OrtApi.%s is entry %d in the header, ep_cgo.go uses %d", n, got[n], idx[n])
		}
	}
	if got["GPU"] != 1 {
		t.Errorf("OrtHardwareDeviceType_GPU = %d, ep_cgo.go assumes 1", got["GPU"])
	}
	for n, v := range consts {
		if got[n] != v {
			t.Errorf("%s is %d in the header, ep_cgo.go assumes %d", n, got[n], v)
		}
	}
}

// bindValue reads onnxruntime_go's IoBinding as one pointer.
func TestIoBindingLayout(t *testing.T) {
	typ := reflect.TypeFor[ort.IoBinding]()
	if typ.NumField() != 1 || typ.Field(0).Type.Kind() != reflect.Pointer || typ.Size() != unsafe.Sizeof(uintptr(0)) {
		t.Fatalf("onnxruntime_go.IoBinding is %v; bindValue needs updating", typ)
	}
}

// sessionOptionsHandle reads onnxruntime_go's SessionOptions as one pointer.
func TestSessionOptionsLayout(t *testing.T) {
	typ := reflect.TypeFor[ort.SessionOptions]()
	if typ.NumField() != 1 || typ.Field(0).Type.Kind() != reflect.Pointer || typ.Size() != unsafe.Sizeof(uintptr(0)) {
		t.Fatalf("onnxruntime_go.SessionOptions is %v; sessionOptionsHandle needs updating", typ)
	}
	env(t) // NewSessionOptions needs the ORT environment
	o, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Destroy()
	if sessionOptionsHandle(o) == nil {
		t.Fatal("nil OrtSessionOptions handle")
	}
}
