//! CPU twin of `shaders/matmul.wgsl` and `shaders/matmul_coop.wgsl`: batched
//! `C = alpha·op(A)·op(B) + beta·C` with f64 accumulation, inputs optionally rounded to f16.

use super::Real;
use crate::ops::MatmulDims;

/// The operands as the kernel multiplies them: widened to f64, or first rounded to the nearest
/// f16 for mixed precision.
fn operands<R: Real>(x: &[R], f16_inputs: bool) -> Vec<f64> {
    x.iter()
        .map(|v| match f16_inputs {
            true => half::f16::from_f64(v.to_f64()).to_f64(),
            false => v.to_f64(),
        })
        .collect()
}

/// Reference batched matmul. `beta == 0` ignores the old contents of C (even NaN).
pub fn matmul<R: Real>(a: &[R], b: &[R], c: &mut [R], d: &MatmulDims, alpha: f64, beta: f64) {
    let (m, n, k) = (d.m, d.n, d.k);
    let (a, b) = (operands(a, d.f16_inputs), operands(b, d.f16_inputs));
    for batch in 0..d.batch {
        let a0 = batch * d.stride_a;
        let b0 = batch * d.stride_b;
        let c0 = batch * m * n;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    let av = if d.trans_a {
                        a[a0 + p * m + i]
                    } else {
                        a[a0 + i * k + p]
                    };
                    let bv = if d.trans_b {
                        b[b0 + j * k + p]
                    } else {
                        b[b0 + p * n + j]
                    };
                    acc += av * bv;
                }
                let idx = c0 + i * n + j;
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[idx].to_f64()
                };
                c[idx] = R::from_f64(alpha * acc + old);
            }
        }
    }
}
