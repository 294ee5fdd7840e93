//go:build matprofile

// Run with: go test -tags matprofile -run MatProfile ./vision/
// (gocv records every Mat it creates in gocv.MatProfile only under this tag).

package vision

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"gocv.io/x/gocv"
)

func TestMatProfileReturnsToStart(t *testing.T) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var inputs [][]byte
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") {
			inputs = append(inputs, fixture(t, e.Name()))
		}
	}
	start := gocv.MatProfile.Count()
	// Specs that take every path: reduced decode, area, bilinear, no
	// resize at all (28×28 from a 28×28 reduced decode is not possible
	// with these photos, so also a spec matching smarties' short side).
	specs := []Spec{imagenet, gray28, enlarge, small64, {Resize: 356, Crop: 300}}
	for _, s := range specs {
		p := newP(t, s, Options{})
		dst := make([]float32, s.Len())
		for _, in := range inputs {
			p.Into(in, dst)
			p.Into(in, dst[:1]) // wrong length
		}
	}
	if got := gocv.MatProfile.Count(); got != start {
		var b bytes.Buffer
		gocv.MatProfile.WriteTo(&b, 1)
		t.Errorf("MatProfile count %d after Into calls, %d before; open Mats:\n%s", got, start, b.String())
	}
	// The profile must see Mats at all, or this test proves nothing.
	m := gocv.NewMat()
	if gocv.MatProfile.Count() != start+1 {
		t.Error("MatProfile does not count Mats")
	}
	m.Close()
}
