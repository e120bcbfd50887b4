//! CPU twin of `shaders/dml_loss.wgsl`: cross-entropy and the mutual KL term of every peer, and
//! their summed logit gradient, in one pass (the formulas of `softmax_ce.rs` and `kl_div.rs`).

use super::kl_div::peer_terms;
use super::softmax_ce::log_softmax;
use super::Real;
use crate::ops::{DmlLossSpec, LogitDims};

/// Reference fused loss over stacked logits `[P, B, C]` for the peers in `spec.peers`:
/// `ce[i, r]`, `kl[i, r]` (0 for a single peer) and
/// `dlogits[i, r] = ce_scale·(softmax(z_i) − q) + kl_scale·T·(p_i − mean_{j≠i} p_j)`.
pub fn dml_loss<R: Real>(
    logits: &[R],
    labels: &[u32],
    ce_rows: &mut [R],
    kl_rows: &mut [R],
    dlogits: &mut [R],
    d: &LogitDims,
    spec: &DmlLossSpec,
) {
    let (p, b, c) = (d.groups, d.rows, d.classes);
    let t = spec.temperature as f64;
    let eps = spec.label_smoothing as f64;
    let others = (p.max(2) - 1) as f64;
    for (r, &label) in labels[..b].iter().enumerate() {
        let row = |peer: usize| &logits[(peer * b + r) * c..(peer * b + r + 1) * c];
        let log_ps: Vec<Vec<f64>> = (0..p).map(|j| log_softmax(row(j), t)).collect();
        let log_p = |peer: usize, k: usize| log_ps[peer][k];
        let label = label as usize;
        for i in spec.peers.clone() {
            let log_p1 = log_softmax(row(i), 1.0);
            let (mut ce, mut kl) = (0.0, 0.0);
            for k in 0..c {
                let q = eps / c as f64 + if k == label { 1.0 - eps } else { 0.0 };
                if q > 0.0 {
                    ce -= q * log_p1[k]; // (as softmax_ce.rs)
                }
                let mut g = if label < c {
                    spec.ce_scale as f64 * (log_p1[k].exp() - q)
                } else {
                    0.0
                };
                if p > 1 {
                    let (kl_k, sum_pj) = peer_terms(log_p, p, i, k);
                    kl += kl_k;
                    g += spec.kl_scale as f64 * t * (log_p(i, k).exp() - sum_pj / others);
                }
                dlogits[(i * b + r) * c + k] = R::from_f64(g);
            }
            ce_rows[i * b + r] = R::from_f64(if label < c { ce } else { f64::NAN });
            kl_rows[i * b + r] = R::from_f64(t * t * kl / others);
        }
    }
}
