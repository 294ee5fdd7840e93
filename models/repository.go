package models

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ModelFile is the file name of a version's ONNX graph.
const ModelFile = "model.onnx"

// ConfigFile is the file name of a model's configuration.
const ConfigFile = "config.yaml"

// CardFile is the file name of a version's model card: free-form JSON
// describing how the version was trained (see package export's Card).
const CardFile = "card.json"

// Version is one numbered version folder.
type Version struct {
	Number int
	Dir    string
	Path   string // the version's model.onnx
}

// Model is one model folder of the repository.
type Model struct {
	Name   string
	Dir    string
	Config Config
	// ConfigPath is the file Config came from: config.yaml, or Triton's
	// config.pbtxt when there is no config.yaml (its path either way).
	ConfigPath string
	// Notes say what of the configuration was not used, and why.
	Notes    []string
	Labels   []string
	Versions []Version // ascending
	// Card is the served (latest) version's card.json, compacted; nil when
	// that version has none. It is always a JSON object.
	Card json.RawMessage
}

// Latest is the version served: the highest number.
func (m Model) Latest() Version { return m.Versions[len(m.Versions)-1] }

// LoadError is a model folder that could not be read; the other models still
// load.
type LoadError struct {
	Model string
	Path  string // the file at fault
	Err   error
}

func (e *LoadError) Error() string { return fmt.Sprintf("model %s: %s: %v", e.Model, e.Path, e.Err) }
func (e *LoadError) Unwrap() error { return e.Err }

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	versionRE = regexp.MustCompile(`^[1-9][0-9]{0,8}$`)
)

// ValidName reports whether s can name a model (and so appear in a URL path
// and a file path safely).
func ValidName(s string) bool { return nameRE.MatchString(s) && !strings.Contains(s, "..") }

// Scan reads every model folder under root. It returns the models that are
// well formed and one *LoadError per folder that is not; an unreadable root
// is a plain error.
func Scan(root string) ([]Model, []error, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, nil, fmt.Errorf("reading model repository: %w", err)
	}
	var ms []Model
	var errs []error
	for _, e := range entries {
		if !ValidName(e.Name()) {
			continue
		}
		if !isDir(root, e) {
			continue
		}
		m, ok, err := Read(filepath.Join(root, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			ms = append(ms, m)
		}
	}
	return ms, errs, nil
}

// isDir says whether entry e of folder parent is a folder or a symlink to
// one: model and version folders may be symlinks (mounted volumes, shared
// caches, a version shared between repositories).
func isDir(parent string, e os.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	st, err := os.Stat(filepath.Join(parent, e.Name()))
	return err == nil && st.IsDir()
}

// Read reads one model folder. ok is false, with no error, for a folder that
// is not a model at all (no config.yaml and no version folder).
func Read(dir string) (m Model, ok bool, err error) {
	name := filepath.Base(dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Model{}, false, &LoadError{name, dir, err}
	}
	hasConfig, hasTriton := false, false
	var versions []Version
	for _, e := range entries {
		switch {
		case e.Name() == ConfigFile:
			hasConfig = true
		case e.Name() == TritonConfigFile:
			hasTriton = true
		case strings.HasSuffix(e.Name(), ".go"):
			return Model{}, false, nil // Go source: this is code, not a model
		case versionRE.MatchString(e.Name()) && isDir(dir, e):
			n, _ := strconv.Atoi(e.Name())
			vdir := filepath.Join(dir, e.Name())
			versions = append(versions, Version{Number: n, Dir: vdir, Path: filepath.Join(vdir, ModelFile)})
		}
	}
	if !hasConfig && !hasTriton && len(versions) == 0 {
		return Model{}, false, nil
	}
	m = Model{Name: name, Dir: dir}
	cfgPath := filepath.Join(dir, ConfigFile)
	m.ConfigPath = cfgPath
	if hasConfig && hasTriton {
		m.Notes = append(m.Notes, TritonConfigFile+" is not read: "+ConfigFile+" is there")
	}
	if !hasConfig && hasTriton {
		tp := filepath.Join(dir, TritonConfigFile)
		m.ConfigPath = tp
		b, err := os.ReadFile(tp)
		if err != nil {
			return Model{}, false, &LoadError{name, tp, err}
		}
		var notes []string
		if m.Config, notes, err = ParseTritonConfig(b, name); err != nil {
			return Model{}, false, &LoadError{name, tp, err}
		}
		m.Notes = append(m.Notes, notes...)
	} else if hasConfig {
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			return Model{}, false, &LoadError{name, cfgPath, err}
		}
		if m.Config, err = ParseConfig(b); err != nil {
			return Model{}, false, &LoadError{name, cfgPath, err}
		}
	} else if m.Config, err = ParseConfig(nil); err != nil {
		return Model{}, false, &LoadError{name, cfgPath, err}
	}
	if m.Config.Labels != "" {
		lp := filepath.Join(dir, m.Config.Labels)
		if m.Labels, err = ReadLabels(lp); err != nil {
			return Model{}, false, &LoadError{name, lp, err}
		}
	}
	// A version folder without model.onnx is skipped (it may still be being
	// written); a model with none at all is an error.
	var usable []Version
	for _, v := range versions {
		st, err := os.Stat(v.Path)
		if err == nil && st.Mode().IsRegular() {
			usable = append(usable, v)
		}
	}
	if len(usable) == 0 {
		return Model{}, false, &LoadError{name, dir, errors.New("no version folder holds " + ModelFile + " (want " + filepath.Join(name, "1", ModelFile) + ")")}
	}
	sort.Slice(usable, func(i, j int) bool { return usable[i].Number < usable[j].Number })
	m.Versions = usable
	cardPath := filepath.Join(m.Latest().Dir, CardFile)
	if m.Card, err = readCard(cardPath); err != nil {
		return Model{}, false, &LoadError{name, cardPath, err}
	}
	return m, true, nil
}

// readCard reads a model card: nil if the file does not exist, an error if
// it is not a JSON object.
func readCard(path string) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("invalid model card: %w", err)
	}
	if obj == nil {
		return nil, errors.New("invalid model card: want a JSON object, got null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("invalid model card: %w", err)
	}
	return buf.Bytes(), nil
}

// ReadyFile, written last into a version folder, says the version is
// complete: a polling server loads it at once instead of waiting for its
// files to stop changing.
const ReadyFile = "READY"

// ReadCard reads the version's card.json (nil when it has none).
func (v Version) ReadCard() (json.RawMessage, error) {
	return readCard(filepath.Join(v.Dir, CardFile))
}

// Ready reports whether the version folder holds the READY marker.
func (v Version) Ready() bool {
	st, err := os.Stat(filepath.Join(v.Dir, ReadyFile))
	return err == nil && st.Mode().IsRegular()
}

// Fingerprint summarises the version folder's files (names, sizes,
// modification times): it changes when any file is written, so a poller
// can tell a finished version (same fingerprint twice) from one still
// being copied in, and a replaced version from an unchanged one.
func (v Version) Fingerprint() (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(v.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(v.Dir, path)
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", rel, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
