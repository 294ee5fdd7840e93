package data

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// FashionMNISTDir is where Debian's dataset-fashion-mnist package puts
// the files (`make deps` installs it).
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// FashionMNISTClasses are the names of Fashion-MNIST's labels 0 to 9.
var FashionMNISTClasses = []string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// FashionMNIST loads the "train" (60,000 images) or "t10k" (10,000
// images) split of Fashion-MNIST from dir, or from FashionMNISTDir when
// dir is "". It reads SPLIT-images-idx3-ubyte.gz and
// SPLIT-labels-idx1-ubyte.gz, or the same names without .gz when the
// compressed file is absent. The result is 1×28×28 images with pixel/255
// values.
//
// Source lists the two files, images first. SHA256 is the sha256 of the
// images file's bytes followed by the labels file's bytes, as stored on
// disk, so it can be checked with
//
//	cat train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz | sha256sum
func FashionMNIST(dir, split string) (*Set, error) {
	if dir == "" {
		dir = FashionMNISTDir
	}
	if split != "train" && split != "t10k" {
		return nil, fmt.Errorf("data: Fashion-MNIST split %q; want train or t10k", split)
	}
	imgPath, err := idxPath(dir, split+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	lblPath, err := idxPath(dir, split+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}

	h := sha256.New()
	idims, pix, err := readIDXFile(imgPath, h)
	if err != nil {
		return nil, err
	}
	ldims, lbl, err := readIDXFile(lblPath, h)
	if err != nil {
		return nil, err
	}
	if len(idims) != 3 {
		return nil, fmt.Errorf("data: %s: dimensions %v; want 3 (images×rows×columns)", imgPath, idims)
	}
	if len(ldims) != 1 {
		return nil, fmt.Errorf("data: %s: dimensions %v; want 1 (labels)", lblPath, ldims)
	}
	if idims[0] != ldims[0] {
		return nil, fmt.Errorf("data: %s holds %d images but %s holds %d labels", imgPath, idims[0], lblPath, ldims[0])
	}
	if idims[1] == 0 || idims[2] == 0 {
		return nil, fmt.Errorf("data: %s: images are %d×%d", imgPath, idims[1], idims[2])
	}
	s := &Set{
		X:       make([]float32, len(pix)),
		Y:       make([]int, len(lbl)),
		C:       1,
		H:       idims[1],
		W:       idims[2],
		Classes: append([]string(nil), FashionMNISTClasses...),
		Source:  imgPath + ", " + lblPath,
		SHA256:  hex.EncodeToString(h.Sum(nil)),
	}
	for i, l := range lbl {
		if int(l) >= len(s.Classes) {
			return nil, fmt.Errorf("data: %s: label %d of image %d is not below %d", lblPath, l, i, len(s.Classes))
		}
		s.Y[i] = int(l)
	}
	bytesToUnit(s.X, pix)
	return s, nil
}

// idxPath returns dir/name.gz if it exists, else dir/name if that exists.
func idxPath(dir, name string) (string, error) {
	gz := filepath.Join(dir, name+".gz")
	plain := filepath.Join(dir, name)
	for _, p := range []string{gz, plain} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("data: %w", err)
		}
	}
	return "", fmt.Errorf("data: neither %s nor %s exists (`make deps` installs Debian's dataset-fashion-mnist): %w", gz, plain, fs.ErrNotExist)
}

// readIDXFile reads the IDX file at path, writing every byte of the file
// as stored (compressed or not) to h.
func readIDXFile(path string, h hash.Hash) ([]int, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	tee := io.TeeReader(f, h)
	dims, b, err := ReadIDX(tee)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	// ReadIDX reads every file it accepts to the end; draining the rest
	// keeps the hash over the whole file even if that ever changes.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, nil, fmt.Errorf("data: %s: %w", path, err)
	}
	return dims, b, nil
}

// unit maps a byte to byte/255, correctly rounded to float32.
var unit = func() (t [256]float32) {
	for v := range t {
		t[v] = float32(v) / 255
	}
	return t
}()

// bytesToUnit sets dst[i] = src[i]/255, in parallel for large inputs.
func bytesToUnit(dst []float32, src []byte) {
	const chunk = 1 << 20
	workers := min(runtime.GOMAXPROCS(0), (len(src)+chunk-1)/chunk)
	if workers <= 1 {
		convert(dst, src)
		return
	}
	var wg sync.WaitGroup
	per := (len(src) + workers - 1) / workers
	for lo := 0; lo < len(src); lo += per {
		hi := min(lo+per, len(src))
		wg.Go(func() { convert(dst[lo:hi], src[lo:hi]) })
	}
	wg.Wait()
}

func convert(dst []float32, src []byte) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = unit[v]
	}
}
