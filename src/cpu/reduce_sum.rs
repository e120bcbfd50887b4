//! CPU twin of `shaders/reduce_sum.wgsl`: `out[o, i] = scale · Σ_n x[o, n, i] (+ out)`.
//! It gives the bias gradient (a column sum) and batch means of per-row losses.

use super::Real;
use crate::ops::ReduceDims;

/// Reference sum over the middle axis of `[outer, n, inner]`.
pub fn reduce_sum<R: Real>(x: &[R], out: &mut [R], d: &ReduceDims, scale: f64, accumulate: bool) {
    for o in 0..d.outer {
        for i in 0..d.inner {
            let mut acc = 0.0f64;
            for k in 0..d.n {
                acc += x[(o * d.n + k) * d.inner + i].to_f64();
            }
            let idx = o * d.inner + i;
            let old = if accumulate { out[idx].to_f64() } else { 0.0 };
            out[idx] = R::from_f64(old + scale * acc);
        }
    }
}
