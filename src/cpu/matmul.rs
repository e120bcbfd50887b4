//! CPU twin of `shaders/matmul.wgsl` and `shaders/matmul_coop.wgsl`: batched
//! `C = alpha·op(A)·op(B) + beta·C` with f64 accumulation, inputs optionally rounded to f16.

use std::borrow::Cow;

use super::Real;
use crate::ops::MatmulDims;

/// One operand as the kernel multiplies it, `rows × cols` row-major whatever its stored layout
/// (`transposed`: stored `cols × rows`), widened to f64, or first rounded to the nearest f16 for
/// mixed precision.
fn operand<R: Real>(x: &[R], rows: usize, cols: usize, transposed: bool, f16: bool) -> Vec<f64> {
    let widen = |v: R| match f16 {
        true => v.to_f16().to_f64(),
        false => v.to_f64(),
    };
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let stored = if transposed {
                x[c * rows + r]
            } else {
                x[r * cols + c]
            };
            out.push(widen(stored));
        }
    }
    out
}

/// Products of at least this many multiply-adds share C's rows out among the machine's cores.
const PARALLEL_WORK: usize = 1 << 20;

/// Reference batched matmul. `beta == 0` ignores the old contents of C (even NaN).
///
/// Every element of C is the f64 sum of its k products taken in order of k, computed by one
/// thread: the loops run over p before j so that the innermost one walks a row of op(B) and a
/// row of sums side by side (the same sums as a loop over p per element, in far less time), and
/// large products give each core a band of C's rows. The result does not depend on the cores.
pub fn matmul<R: Real>(a: &[R], b: &[R], c: &mut [R], d: &MatmulDims, alpha: f64, beta: f64) {
    let (m, n, k) = (d.m, d.n, d.k);
    if m == 0 || n == 0 {
        return;
    }
    // Saturating: on a 32-bit host M·N·K can pass usize::MAX while each tensor fits.
    let cores = match m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK {
        true => cores(),
        false => 1,
    };
    let band = m.div_ceil(cores.min(m));
    // An operand the whole batch shares (stride 0: the input batch that every peer's first
    // layer reads) is widened once, not once per batch entry.
    let a_of = |batch: usize| operand(&a[batch * d.stride_a..], m, k, d.trans_a, d.f16_inputs);
    let b_of = |batch: usize| operand(&b[batch * d.stride_b..], k, n, d.trans_b, d.f16_inputs);
    let shared_a = (d.stride_a == 0).then(|| a_of(0));
    let shared_b = (d.stride_b == 0).then(|| b_of(0));
    for batch in 0..d.batch {
        let a = shared_a
            .as_deref()
            .map_or_else(|| Cow::Owned(a_of(batch)), Cow::Borrowed);
        let b = shared_b
            .as_deref()
            .map_or_else(|| Cow::Owned(b_of(batch)), Cow::Borrowed);
        let c = &mut c[batch * m * n..(batch + 1) * m * n];
        let rows = |first: usize, c: &mut [R]| multiply_rows(&a, &b, c, first, (n, k), alpha, beta);
        if band == m {
            rows(0, c);
        } else {
            std::thread::scope(|s| {
                for (i, c) in c.chunks_mut(band * n).enumerate() {
                    s.spawn(move || rows(i * band, c));
                }
            });
        }
    }
}

/// The cores this process may use, asked once (on Linux the answer reads cgroup files).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get()))
}

/// Rows `first..` of one product into `c` (whole rows of n), from op(A) (m×k) and op(B) (k×n).
fn multiply_rows<R: Real>(
    a: &[f64],
    b: &[f64],
    c: &mut [R],
    first: usize,
    (n, k): (usize, usize),
    alpha: f64,
    beta: f64,
) {
    let mut sums = vec![0.0f64; n];
    for (i, c) in c.chunks_mut(n).enumerate() {
        let a = &a[(first + i) * k..(first + i + 1) * k];
        sums.fill(0.0);
        for (p, &av) in a.iter().enumerate() {
            for (sum, bv) in sums.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *sum += av * bv;
            }
        }
        for (cv, sum) in c.iter_mut().zip(&sums) {
            let old = if beta == 0.0 { 0.0 } else { beta * cv.to_f64() };
            *cv = R::from_f64(alpha * sum + old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop, one element at a time, straight from the stored layouts.
    fn textbook(a: &[f32], b: &[f32], c: &mut [f32], d: &MatmulDims, alpha: f64, beta: f64) {
        let round = |v: f32| match d.f16_inputs {
            true => half::f16::from_f32(v).to_f64(),
            false => v as f64,
        };
        for batch in 0..d.batch {
            for i in 0..d.m {
                for j in 0..d.n {
                    let mut acc = 0.0f64;
                    for p in 0..d.k {
                        let av = match d.trans_a {
                            true => a[batch * d.stride_a + p * d.m + i],
                            false => a[batch * d.stride_a + i * d.k + p],
                        };
                        let bv = match d.trans_b {
                            true => b[batch * d.stride_b + j * d.k + p],
                            false => b[batch * d.stride_b + p * d.n + j],
                        };
                        acc += round(av) * round(bv);
                    }
                    let idx = (batch * d.m + i) * d.n + j;
                    let old = if beta == 0.0 {
                        0.0
                    } else {
                        beta * c[idx] as f64
                    };
                    c[idx] = (alpha * acc + old) as f32;
                }
            }
        }
    }

    #[test]
    fn matches_the_textbook_loop_bit_for_bit_in_every_layout() {
        let mut seed = 1u64;
        let mut values = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        // (batch, m, n, k): the last is past PARALLEL_WORK, so its rows go to several threads
        // where the machine has several cores.
        const _: () = assert!(130 * 97 * 90 >= PARALLEL_WORK);
        for (batch, m, n, k) in [(1, 1, 1, 1), (2, 5, 3, 7), (3, 17, 9, 1), (2, 130, 97, 90)] {
            for (trans_a, trans_b, shared_a, shared_b, f16_inputs) in [
                (false, false, false, false, false),
                (false, true, true, false, true),
                (true, false, false, true, false),
                (true, true, true, true, true),
            ] {
                let d = MatmulDims {
                    batch,
                    m,
                    n,
                    k,
                    stride_a: if shared_a { 0 } else { m * k },
                    stride_b: if shared_b { 0 } else { k * n },
                    trans_a,
                    trans_b,
                    f16_inputs,
                };
                let a = values(if shared_a { m * k } else { batch * m * k });
                let b = values(if shared_b { k * n } else { batch * k * n });
                let c0 = values(batch * m * n);
                for (alpha, beta) in [(1.0, 0.0), (-0.5, 0.75)] {
                    let (mut fast, mut slow) = (c0.clone(), c0.clone());
                    matmul(&a, &b, &mut fast, &d, alpha, beta);
                    textbook(&a, &b, &mut slow, &d, alpha, beta);
                    assert!(
                        fast.iter()
                            .zip(&slow)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{d}"
                    );
                    assert_ne!(fast, c0, "{d}: C unchanged");
                }
            }
        }
    }
}
