
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

// Peer j's terms at class k of this row, for peer i with log p_i = lpi:
// (p_j (log p_j - log p_i), p_j); zero for j = i. Summed over j != i they are the KL term of
// class k and the others' total probability.
fn pair_terms(i: u32, j: u32, row: u32, k: u32, lpi: f32, inv_t: f32) -> vec2<f32> {
    if (j == i) {
        return vec2<f32>(0.0);
    }
    let lpj = logits[at(j, row, k)] * inv_t - peer_lse[j];
    let pj = exp(lpj);
    // A class peer j gives no probability adds nothing (0 · log 0 = 0, not 0 · -inf = NaN).
    return select(vec2<f32>(pj * (lpj - lpi), pj), vec2<f32>(0.0), pj == 0.0);
}
