package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"fastinfer/vision"
)

// imageExts are the file extensions ImageFolder loads (case-insensitive).
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true}

// ImageFolder loads dir/<class>/*.{jpg,jpeg,png}: every subfolder of dir
// (or symbolic link to one) is a class, in sorted order (label i is the
// i-th name), and its image files are read in sorted order; other files,
// hidden entries and deeper folders are ignored. Extensions match
// case-insensitively. Each image is decoded through fastinfer/vision:
// shorter side resized to size, centre crop size×size, color "gray"
// (C=1) or "rgb" (C=3), values pixel × float32(1/255), which is within
// one float32 ulp of pixel/255 and exactly 0 and 1 at the ends.
//
// A file that fails to decode is skipped with a slog warning and counted
// in skipped; a file that cannot be read is an error. A class folder may
// end up with no images; it keeps its label.
//
// Source is dir. SHA256 covers every candidate file (skipped ones too, in
// the order above): for each, its path relative to dir with '/'
// separators, a zero byte, its length as a big-endian uint64, then its
// bytes. Renaming a class or a file therefore changes the hash.
func ImageFolder(dir string, size int, color string) (set *Set, skipped int, err error) {
	if color != "gray" && color != "rgb" {
		return nil, 0, fmt.Errorf("data: ImageFolder color %q; want gray or rgb", color)
	}
	if size <= 0 {
		return nil, 0, fmt.Errorf("data: ImageFolder size %d; want > 0", size)
	}
	pre, err := vision.New(vision.Spec{Resize: size, Crop: size, Color: color, Scale: 1.0 / 255, Mean: nil, Std: nil}, vision.Options{})
	if err != nil {
		return nil, 0, fmt.Errorf("data: %w", err)
	}

	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, 0, fmt.Errorf("data: %w", err)
	}
	var classes []string
	type file struct {
		rel   string // class/name
		label int
	}
	var files []file
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !isDir(dir, e) {
			continue
		}
		label := len(classes)
		classes = append(classes, e.Name())
		inner, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, 0, fmt.Errorf("data: %w", err)
		}
		for _, f := range inner {
			name := f.Name()
			if strings.HasPrefix(name, ".") || !imageExts[strings.ToLower(filepath.Ext(name))] || isDir(filepath.Join(dir, e.Name()), f) {
				continue
			}
			files = append(files, file{path.Join(e.Name(), name), label})
		}
	}
	if len(classes) == 0 {
		return nil, 0, fmt.Errorf("data: %s has no class folders", dir)
	}
	if len(files) == 0 {
		return nil, 0, fmt.Errorf("data: the class folders of %s hold no .jpg, .jpeg or .png files", dir)
	}

	// The files are read and hashed here, in order; decoding, the slow
	// part, runs on GOMAXPROCS workers, each image into its own slot of X.
	plane := pre.Spec().Len()
	X := make([]float32, len(files)*plane)
	decodeErr := make([]error, len(files))
	type job struct {
		i    int
		data []byte
	}
	jobs := make(chan job, 2*runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				_, decodeErr[j.i] = pre.Into(j.data, X[j.i*plane:(j.i+1)*plane])
			}
		})
	}
	h := sha256.New()
	var readErr error
	for i, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.rel)))
		if err != nil {
			readErr = fmt.Errorf("data: %w", err)
			break
		}
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write([]byte(f.rel))
		h.Write([]byte{0})
		h.Write(n[:])
		h.Write(b)
		jobs <- job{i, b}
	}
	close(jobs)
	wg.Wait()
	if readErr != nil {
		return nil, 0, readErr
	}

	// Move the decoded images down over the skipped ones, keeping order.
	s := &Set{
		C:       pre.Spec().Channels(),
		H:       size,
		W:       size,
		Classes: classes,
		Source:  dir,
		SHA256:  hex.EncodeToString(h.Sum(nil)),
	}
	n := 0
	for i, f := range files {
		if err := decodeErr[i]; err != nil {
			slog.Warn("data: skipping an image that does not decode", "path", filepath.Join(dir, filepath.FromSlash(f.rel)), "err", err)
			skipped++
			continue
		}
		if n != i {
			copy(X[n*plane:(n+1)*plane], X[i*plane:(i+1)*plane])
		}
		s.Y = append(s.Y, f.label)
		n++
	}
	if n == 0 {
		return nil, skipped, fmt.Errorf("data: none of the %d images under %s decodes", len(files), dir)
	}
	s.X = X[: n*plane : n*plane]
	return s, skipped, nil
}

// isDir reports whether the entry e of dir is a directory, following a
// symbolic link.
func isDir(dir string, e os.DirEntry) bool {
	if e.Type()&os.ModeSymlink == 0 {
		return e.IsDir()
	}
	fi, err := os.Stat(filepath.Join(dir, e.Name()))
	return err == nil && fi.IsDir()
}
