//! CPU twin of `shaders/softmax_ce.wgsl`: fused softmax cross-entropy, loss and gradient per row.

use super::Real;
use crate::ops::{CrossEntropySpec, LogitDims};

/// Log-probabilities of `softmax(z / temperature)`, each as `(z_k − M) / T − ln Σ_c exp((z_c −
/// M) / T)` with `M` the row's largest logit: the largest subtracted before anything else, so
/// logits near f32's largest keep the log-sum (`M + ln 3` is `M` in f64 at 3e38).
pub fn log_softmax<R: Real>(z: &[R], temperature: f64) -> Vec<f64> {
    let m = z
        .iter()
        .map(|v| v.to_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let mut log_p: Vec<f64> = z.iter().map(|v| (v.to_f64() - m) / temperature).collect();
    let log_sum = log_p.iter().map(|s| s.exp()).sum::<f64>().ln();
    log_p.iter_mut().for_each(|s| *s -= log_sum);
    log_p
}

/// Reference forward and backward. For each row of each group, with `q` the smoothed target:
/// `loss = −Σ_c q_c log softmax(z)_c` (`Σ_c q_c (lse − z_c)`) and
/// `dlogits = grad_scale · (softmax(z) − q)`.
/// A label ≥ classes gives a NaN loss and a zero gradient (the data layer rejects such labels first).
pub fn softmax_ce<R: Real>(
    logits: &[R],
    labels: &[u32],
    losses: &mut [R],
    dlogits: &mut [R],
    d: &LogitDims,
    spec: &CrossEntropySpec,
) {
    let c = d.classes;
    let eps = spec.label_smoothing as f64;
    for g in 0..d.groups {
        for (r, &label) in labels[..d.rows].iter().enumerate() {
            let row = g * d.rows + r;
            let z = &logits[row * c..(row + 1) * c];
            let label = label as usize;
            if label >= c {
                losses[row] = R::from_f64(f64::NAN);
                dlogits[row * c..(row + 1) * c].fill(R::from_f64(0.0));
                continue;
            }
            let mut loss = 0.0;
            for (k, log_p) in log_softmax(z, 1.0).into_iter().enumerate() {
                let q = eps / c as f64 + if k == label { 1.0 - eps } else { 0.0 };
                // A class of no target weight adds nothing, whatever its logit (0 · ∞ is NaN).
                if q > 0.0 {
                    loss -= q * log_p;
                }
                dlogits[row * c + k] = R::from_f64(spec.grad_scale as f64 * (log_p.exp() - q));
            }
            losses[row] = R::from_f64(loss);
        }
    }
}
