
// ---- shaders/include/peer_kl.wgsl, appended by the host after the row files ----
// The peer side of the mutual-learning KL term. The including kernel's uniform `p` has `peers`.

const MAX_PEERS: u32 = 32u; // the host rejects larger cohorts for these kernels
var<private> peer_lse: array<f32, MAX_PEERS>; // lse(z_j / T) of this thread's row, per peer j

// Fills peer_lse for every peer of this row.
fn fill_peer_lse(row: u32, inv_t: f32) {
    for (var j = 0u; j < p.peers; j++) {
        peer_lse[j] = row_lse(j, row, inv_t);
    }
}

// Peer j's terms at class k of this row, for peer i with log p_i = lpi and p_i = pi:
// (p_j (log p_j - log p_i) + p_i - p_j, p_j); zero for j = i. Summed over j != i they are the
// KL term of class k and the others' total probability. Adding p_i - p_j changes no sum over the
// classes (both distributions sum to one) but makes each class's term p_j phi(r), with
// r = log p_j - log p_i and phi(r) = exp(-r) - 1 + r >= 0 of order r^2/2: the terms of order r,
// which cancel in the sum, are gone. At high temperatures r is small (~1e-4 at T = 1000), and
// summing p_j r in f32 left a KL of order r^2 with a relative error of several percent. For
// |r| < 1/4 phi comes from its series (relative error < 4e-7), else from p_i - p_j + p_j r.
fn pair_terms(i: u32, j: u32, row: u32, k: u32, lpi: f32, pi: f32, inv_t: f32) -> vec2<f32> {
    if (j == i) {
        return vec2<f32>(0.0);
    }
    let lpj = logits[at(j, row, k)] * inv_t - peer_lse[j];
    let pj = exp(lpj);
    let r = lpj - lpi;
    let series = r * r * (0.5 + r * (-1.0 / 6.0 + r * (1.0 / 24.0 + r * (-1.0 / 120.0 + r / 720.0))));
    let term = select(pi - pj + pj * r, pj * series, abs(r) < 0.25);
    // A class peer j gives no probability adds p_i (0 · log 0 = 0, not 0 · -inf = NaN).
    return select(vec2<f32>(term, pj), vec2<f32>(pi, 0.0), pj == 0.0);
}
