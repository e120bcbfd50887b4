//! CPU twin of `shaders/kl_div.wgsl`: the mutual-learning KL term between peers of a cohort.

use super::softmax_ce::log_softmax;
use super::Real;
use crate::ops::{KlSpec, LogitDims};

/// Reference forward and backward over stacked logits `[P, B, C]`. For each peer `i` in `spec.peers`
/// and row `r`, with `log p = z/T − lse(z/T)` ([`log_softmax`]):
/// `loss[i, r] = T² · mean_{j≠i} Σ_c p_j (log p_j − log p_i)` and
/// `dlogits[i, r] (+)= grad_scale · T · (p_i − mean_{j≠i} p_j)`.
pub fn kl_div<R: Real>(
    logits: &[R],
    losses: &mut [R],
    dlogits: &mut [R],
    d: &LogitDims,
    spec: &KlSpec,
) {
    let (p, b, c) = (d.groups, d.rows, d.classes);
    let t = spec.temperature as f64;
    let others = (p - 1) as f64;
    for r in 0..b {
        let row = |peer: usize| &logits[(peer * b + r) * c..(peer * b + r + 1) * c];
        let log_ps: Vec<Vec<f64>> = (0..p).map(|j| log_softmax(row(j), t)).collect();
        let log_p = |peer: usize, k: usize| log_ps[peer][k];
        for i in spec.peers.clone() {
            let mut loss = 0.0;
            for k in 0..c {
                let (kl, sum_pj) = peer_terms(log_p, p, i, k);
                loss += kl;
                let g = spec.grad_scale as f64 * t * (log_p(i, k).exp() - sum_pj / others);
                let idx = (i * b + r) * c + k;
                let old = if spec.accumulate {
                    dlogits[idx].to_f64()
                } else {
                    0.0
                };
                dlogits[idx] = R::from_f64(old + g);
            }
            losses[i * b + r] = R::from_f64(t * t * loss / others);
        }
    }
}

/// Class `k`'s part of peer `i`'s KL sum on one row, `Σ_{j≠i} p_j (log p_j − log p_i)`, and
/// `Σ_{j≠i} p_j`, from `log_p(peer, k)` of each of the `peers`.
pub(super) fn peer_terms(
    log_p: impl Fn(usize, usize) -> f64,
    peers: usize,
    i: usize,
    k: usize,
) -> (f64, f64) {
    let lpi = log_p(i, k);
    let (mut kl, mut sum_pj) = (0.0, 0.0);
    for j in (0..peers).filter(|&j| j != i) {
        let lpj = log_p(j, k);
        let pj = lpj.exp();
        // A class peer j gives no probability adds nothing (0 · log 0 = 0); a NaN (from a row
        // with an infinite logit) stays.
        if pj != 0.0 {
            kl += pj * (lpj - lpi);
        }
        sum_pj += pj;
    }
    (kl, sum_pj)
}
