package models

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// ClaimVersion creates dir/<v> for the lowest v above every version in dir
// and returns v and the folder. os.Mkdir fails when the folder exists, so
// of two concurrent writers one wins each number and the other moves on.
// Versions are canonical positive integers ("7", not "07"), as Scan reads
// them.
func ClaimVersion(dir string) (int, string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, "", err
	}
	v := 1
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 && strconv.Itoa(n) == e.Name() && n >= v {
			v = n + 1
		}
	}
	for {
		vdir := filepath.Join(dir, strconv.Itoa(v))
		err := os.Mkdir(vdir, 0o755)
		if err == nil {
			return v, vdir, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return 0, "", err
		}
		v++
	}
}

// WriteFileAtomic writes data to dir/name through a temporary file in the
// same folder, synced and then renamed over the final name, so a reader
// (a polling server, a resumed run) never sees a partial file. The
// temporary name starts with a dot and does not end in the final
// extension, so a repository scan ignores it.
func WriteFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", name, err)
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil { // CreateTemp makes 0600
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, name))
}
