//go:build !openblas

package train

// BLAS names the implementation in use, for logs and the model card.
const BLAS = "gonum"
