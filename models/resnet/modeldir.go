package resnet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"fastinfer/models/onnxpb"
)

// ConfigYAML is the config.yaml WriteModelDir writes: torchvision's ImageNet
// preprocessing. There is no labels line because random weights have no
// meaningful classes.
const ConfigYAML = `# ResNet with seeded random weights (built by fastinfer, not trained): the
# scores are deterministic but carry no meaning.
input: ` + InputName + `
output: ` + OutputName + `
preprocess:
  resize: 256
  crop: 224
  color: rgb
  scale: 0.00392156862745098
  mean: [0.485, 0.456, 0.406]
  std: [0.229, 0.224, 0.225]
`

const (
	configFile = "config.yaml"
	modelFile  = "model.onnx"
)

// WriteModelDir writes dir/config.yaml and dir/V/model.onnx, where V is one
// more than the highest numeric version already in dir (1 if none), and
// returns V. Both files appear atomically: each is written under a temporary
// name and renamed, so a server watching dir never loads a partial model.
func WriteModelDir(dir string, m *onnxpb.ModelProto) (version int, err error) {
	if m == nil {
		return 0, errors.New("resnet: nil model")
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("resnet: marshal model: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("resnet: %w", err)
	}
	if err := writeAtomic(dir, configFile, []byte(ConfigYAML)); err != nil {
		return 0, err
	}

	version, err = nextVersion(dir)
	if err != nil {
		return 0, err
	}
	// Mkdir (not MkdirAll) fails if the version exists, so two concurrent
	// writers cannot both claim it: the loser moves on to the next number.
	for {
		err = os.Mkdir(filepath.Join(dir, strconv.Itoa(version)), 0o755)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
		version++
	}
	if err != nil {
		return 0, fmt.Errorf("resnet: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, strconv.Itoa(version)), modelFile, data); err != nil {
		return 0, err
	}
	return version, nil
}

// nextVersion returns one more than the largest version in dir, or 1. A
// version is a positive integer in canonical form ("7", not "007" or "+7"),
// as the model repository reads them.
func nextVersion(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("resnet: %w", err)
	}
	latest := 0
	for _, e := range entries {
		v, err := strconv.Atoi(e.Name())
		if err == nil && strconv.Itoa(v) == e.Name() && v > latest {
			latest = v
		}
	}
	return latest + 1, nil
}

// writeAtomic writes data to dir/name through a temporary file in dir (same
// file system, so the rename is atomic). The temporary name does not end in
// the final extension, so a loader scanning dir ignores it.
func writeAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("resnet: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("resnet: write %s: %w", name, err)
	}
	// Sync before rename so a crash cannot leave the final name pointing
	// at a truncated file.
	if err = f.Sync(); err != nil {
		return fmt.Errorf("resnet: sync %s: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("resnet: close %s: %w", name, err)
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil { // CreateTemp makes 0600
		return fmt.Errorf("resnet: %w", err)
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("resnet: %w", err)
	}
	return nil
}
