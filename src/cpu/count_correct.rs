//! CPU twin of `shaders/count_correct.wgsl`: how many rows each peer, and the ensemble, classifies
//! right. The ensemble predicts the argmax of the mean of the peers' softmax probabilities.

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

/// A peer's row as the ensemble weighs it: its largest logit `top` (NaN never is), how many
/// classes have it, and `tail`, the sum of `exp(z − top)` over the others (NaN where a logit is).
struct PeerRow {
    top: f64,
    ties: f64,
    tail: f64,
}

impl PeerRow {
    fn new(z: impl Iterator<Item = f64> + Clone) -> Self {
        let top = z.clone().fold(f64::NEG_INFINITY, f64::max);
        let ties = z.clone().filter(|&v| v == top).count() as f64;
        let tail = z.filter(|&v| v != top).map(|v| (v - top).exp()).sum();
        PeerRow { top, ties, tail }
    }

    /// What class logit `z` adds to the ensemble's (whole peers, remainder): where it is this
    /// peer's largest alone, one whole peer less its other classes' probability; else its
    /// probability.
    fn share(&self, z: f64) -> (f64, f64) {
        match self.ties == 1.0 && z == self.top {
            true => (1.0, -self.tail / (1.0 + self.tail)),
            false => (0.0, ((z - self.top) - (self.ties + self.tail).ln()).exp()),
        }
    }
}

/// The ensemble's class for one row, `rows` holding each peer's logits for it: the argmax of
/// the mean of their softmax probabilities (T = 1), the first class on ties, NaN never winning
/// (0 where nothing is above it). Each class's probabilities are summed as whole peers `w` and
/// a remainder `r`, and classes compared by `(w − w') + (r − r')`: probabilities within a
/// float's spacing of 1 are told apart by what each lacks of 1.
pub fn ensemble_class<R: Real>(rows: &[&[R]]) -> usize {
    let peers: Vec<PeerRow> = rows
        .iter()
        .map(|z| PeerRow::new(z.iter().map(|v| v.to_f64())))
        .collect();
    let classes = rows.first().map_or(0, |z| z.len());
    // Below every class's (w ≥ 0, r > −w).
    let (mut best, mut best_w, mut best_r) = (0, -1.0, 0.0);
    for k in 0..classes {
        let (mut w, mut r) = (0.0, 0.0);
        for (z, peer) in rows.iter().zip(&peers) {
            let (whole, part) = peer.share(z[k].to_f64());
            w += whole;
            r += part;
        }
        if (w - best_w) + (r - best_r) > 0.0 {
            (best, best_w, best_r) = (k, w, r);
        }
    }
    best
}

/// Reference count, added to `counts` (`[P + 1]`: one per peer, then the ensemble
/// ([`ensemble_class`])).
pub fn count_correct<R: Real>(logits: &[R], labels: &[u32], counts: &mut [u32], d: &LogitDims) {
    let (p, b, c) = (d.groups, d.rows, d.classes);
    for (r, &label) in labels[..b].iter().enumerate() {
        let rows: Vec<&[R]> = (0..p)
            .map(|peer| &logits[(peer * b + r) * c..(peer * b + r + 1) * c])
            .collect();
        for (row, count) in rows.iter().zip(&mut counts[..p]) {
            if argmax(row.iter().map(|v| v.to_f64())) == label as usize {
                *count += 1;
            }
        }
        if ensemble_class(&rows) == label as usize {
            counts[p] += 1;
        }
    }
}
