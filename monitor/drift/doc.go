// Package drift detects distribution shift in a classifier's traffic
// without labels, in the style of Black-Box Shift Detection (Lipton et al.
// 2018; Rabanser et al. 2019): it compares the model's own outputs (top-1
// class mix, confidence) and cheap image statistics (brightness, contrast,
// size, aspect) on a sliding window of live requests with a reference
// Profile built from, e.g., the validation set.
//
// Tests, per Monitor.Check:
//   - class_chi2: Pearson chi-square of the live class counts against the
//     reference proportions (small cells pooled, see ChiSquareWithFloor);
//   - <feature>_ks: two-sample Kolmogorov–Smirnov per feature;
//   - class_psi, confidence_psi: population stability index.
//
// A p-value test alarms when p < Alpha/m (Bonferroni over the m p-value
// tests), a PSI when it exceeds PSIMajor; no alarm fires before the window
// holds MinSamples observations. The package does no I/O beyond reading
// and writing profiles as JSON and rendering a report as HTML.
package drift
