package export

import (
	"errors"
	"fmt"
	"math"

	"fastinfer/runtime"
)

// CheckParity runs the ONNX model at onnxPath in ONNX Runtime on batch
// images x (NCHW floats) and compares its logits with want (batch×classes,
// e.g. from the trainer's own forward pass or from Forward). It passes when
// every logit is within tol of want and every row has the same argmax; the
// error otherwise names the row, the logit and both values. The session
// runs on the provider env chooses (see runtime.Config.Provider); the error
// says which.
func CheckParity(env *runtime.Env, onnxPath string, x []float32, batch int, want []float32, tol float32) (err error) {
	if env == nil {
		return errors.New("export: parity check needs an open ONNX Runtime environment")
	}
	if batch <= 0 {
		return fmt.Errorf("export: parity check on a batch of %d images", batch)
	}
	sess, err := env.NewSession(onnxPath, runtime.SessionOptions{Input: InputName, Output: OutputName})
	if err != nil {
		return fmt.Errorf("export: parity check: %w", err)
	}
	defer func() {
		if cerr := sess.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("export: parity check: closing session: %w", cerr)
		}
	}()
	inLen, classes := sess.InputLen(), sess.OutputLen()
	if len(x) != batch*inLen {
		return fmt.Errorf("export: parity check: %d input floats for %d images of %d (%v)", len(x), batch, inLen, sess.InputRow())
	}
	if len(want) != batch*classes {
		return fmt.Errorf("export: parity check: %d expected logits for %d images of %d classes", len(want), batch, classes)
	}
	got := make([]float32, batch*classes)
	if err := sess.Run(x, batch, got); err != nil {
		return fmt.Errorf("export: parity check: %w", err)
	}
	return compareLogits(got, want, batch, classes, tol, sess.Provider())
}

// compareLogits is CheckParity's verdict on ONNX Runtime's logits (got)
// against the reference (want).
func compareLogits(got, want []float32, batch, classes int, tol float32, provider string) error {
	where := "ONNX Runtime (" + provider + ")"
	worst, worstAt := -1.0, 0
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.IsNaN(w) || math.IsInf(g, 0) || math.IsInf(w, 0) {
			return fmt.Errorf("export: parity check failed: row %d logit %d: %s gives %g, the reference %g",
				i/classes, i%classes, where, g, w)
		}
		if d := math.Abs(g - w); d > worst {
			worst, worstAt = d, i
		}
	}
	if worst > float64(tol) {
		return fmt.Errorf("export: parity check failed: row %d logit %d: %s gives %g, the reference %g (|diff| %.3g > tolerance %g)",
			worstAt/classes, worstAt%classes, where, got[worstAt], want[worstAt], worst, tol)
	}
	for r := range batch {
		g, w := argmax(got[r*classes:(r+1)*classes]), argmax(want[r*classes:(r+1)*classes])
		if g != w {
			return fmt.Errorf("export: parity check failed: row %d: %s predicts class %d (logit %g; the reference has %g there), the reference class %d (logit %g; ONNX Runtime has %g there)",
				r, where, g, got[r*classes+g], want[r*classes+g], w, want[r*classes+w], got[r*classes+w])
		}
	}
	return nil
}

// argmax is the index of the largest value, the first one on ties.
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
