//go:build !openblas

package train

// BLAS names the implementation in use, for logs and the model card.
const BLAS = "gonum"

// singleThreadBLAS: gonum's BLAS runs on the calling goroutine already.
func singleThreadBLAS() {}
