// Package export turns a trained small ResNet, described as plain Go
// values, into an ONNX graph and a model-repository version folder. The
// trainer (package train) fills a Net from its Gorgonia graph; this package
// knows nothing of Gorgonia.
package export

// Tensor is a dense float32 tensor in row-major order.
type Tensor struct {
	Dims []int64
	Data []float32
}

// ConvBN is a bias-free convolution followed by batch normalisation in
// inference form (running statistics).
type ConvBN struct {
	W      Tensor // [out, in, k, k]
	Stride int
	Pad    int // symmetric padding on H and W
	Gamma  []float32
	Beta   []float32
	Mean   []float32 // running mean
	Var    []float32 // running variance
	Eps    float32
}

// Block is a basic residual block: relu(bn(conv(relu(bn(conv(x))))) + s(x)),
// where s is the identity, or Shortcut (a 1×1 ConvBN) when the shape
// changes.
type Block struct {
	A, B     ConvBN
	Shortcut *ConvBN
}

// Net is a small ResNet for images of InC×InH×InW:
//
//	Stem (ConvBN, ReLU) → optional MaxPool → Blocks → GlobalAveragePool →
//	Flatten → Gemm (FCW [classes, C], FCB [classes]) → logits
//
// The ONNX input is "data" [N, InC, InH, InW] and the output "logits"
// [N, classes], with N dynamic.
type Net struct {
	InC, InH, InW int
	Stem          ConvBN
	StemPool      int // MaxPool kernel and stride after the stem; 0 = none
	Blocks        []Block
	FCW           Tensor
	FCB           []float32
}
