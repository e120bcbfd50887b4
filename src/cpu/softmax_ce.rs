//! CPU twin of `shaders/softmax_ce.wgsl`: fused softmax cross-entropy, loss and gradient per row.

use super::Real;
use crate::ops::{CrossEntropySpec, LogitDims};

/// Stable log-sum-exp of `z / temperature`.
pub fn log_sum_exp<R: Real>(z: &[R], temperature: f64) -> f64 {
    let m = z
        .iter()
        .map(|v| v.to_f64() / temperature)
        .fold(f64::NEG_INFINITY, f64::max);
    m + z
        .iter()
        .map(|v| (v.to_f64() / temperature - m).exp())
        .sum::<f64>()
        .ln()
}

/// Reference forward and backward. For each row of each group, with `q` the smoothed target:
/// `loss = Σ_c q_c (lse − z_c)` and `dlogits = grad_scale · (softmax(z) − q)`.
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
            let lse = log_sum_exp(z, 1.0);
            let mut loss = 0.0;
            for k in 0..c {
                let q = eps / c as f64 + if k == label { 1.0 - eps } else { 0.0 };
                let zk = z[k].to_f64();
                // A class of no target weight adds nothing, whatever its logit (0 · ∞ is NaN).
                if q > 0.0 {
                    loss += q * (lse - zk);
                }
                dlogits[row * c + k] = R::from_f64(spec.grad_scale as f64 * ((zk - lse).exp() - q));
            }
            losses[row] = R::from_f64(loss);
        }
    }
}
