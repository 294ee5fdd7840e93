package resnet

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/proto"

	"fastinfer/models"
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

const ()

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
	if err := writeAtomic(dir, models.ConfigFile, []byte(ConfigYAML)); err != nil {
		return 0, err
	}

	version, vdir, err := models.ClaimVersion(dir)
	if err != nil {
		return 0, fmt.Errorf("resnet: %w", err)
	}
	if err := writeAtomic(vdir, models.ModelFile, data); err != nil {
		return 0, err
	}
	if err := writeAtomic(vdir, models.ReadyFile, nil); err != nil {
		return 0, err
	}
	return version, nil
}

// writeAtomic is models.WriteFileAtomic with this package's error prefix.
func writeAtomic(dir, name string, data []byte) error {
	if err := models.WriteFileAtomic(dir, name, data); err != nil {
		return fmt.Errorf("resnet: %w", err)
	}
	return nil
}
