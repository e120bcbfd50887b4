//! CPU twin of `shaders/count_correct.wgsl`: how many rows each peer, and the ensemble, classifies
//! right. The ensemble predicts the argmax of the mean of the peers' softmax probabilities.

use super::softmax_ce::log_softmax;
use super::Real;
use crate::ops::LogitDims;

/// Index of the largest value (the first on ties; NaN never wins, and where nothing beats -∞,
/// as in a row of NaN or -∞, 0), as the GPU kernel finds it.
pub fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Reference count, added to `counts` (`[P + 1]`: one per peer, then the ensemble).
pub fn count_correct<R: Real>(logits: &[R], labels: &[u32], counts: &mut [u32], d: &LogitDims) {
    let (p, b, c) = (d.groups, d.rows, d.classes);
    for r in 0..b {
        // The peers' summed probabilities: their argmax is the mean's.
        let mut prob_sum = vec![0.0f64; c];
        for peer in 0..p {
            let z = &logits[(peer * b + r) * c..(peer * b + r + 1) * c];
            if argmax(z.iter().map(|v| v.to_f64())) == labels[r] as usize {
                counts[peer] += 1;
            }
            for (sum, log_p) in prob_sum.iter_mut().zip(log_softmax(z, 1.0)) {
                *sum += log_p.exp();
            }
        }
        if argmax(prob_sum.into_iter()) == labels[r] as usize {
            counts[p] += 1;
        }
    }
}
