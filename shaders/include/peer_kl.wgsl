
// ---- shaders/include/peer_kl.wgsl, appended by the host after row_softmax.wgsl ----
// The peer side of the mutual-learning KL term. The including kernel's uniform `p` has `peers`.

const MAX_PEERS: u32 = 32u; // the host rejects larger cohorts for these kernels
var<private> peer_lse: array<f32, MAX_PEERS>; // lse(z_j / T) of this thread's row, per peer j

// Fills peer_lse for every peer of this row.
fn fill_peer_lse(row: u32, inv_t: f32, lid: u32) {
    for (var j = 0u; j < p.peers; j++) {
        peer_lse[j] = row_lse(j, row, inv_t, lid);
    }
}

// At class k of this row, for peer i with log p_i = lpi:
// (sum_{j != i} p_j (log p_j - log p_i), sum_{j != i} p_j).
fn peer_terms(i: u32, row: u32, k: u32, lpi: f32, inv_t: f32) -> vec2<f32> {
    var kl = 0.0;
    var sum_pj = 0.0;
    for (var j = 0u; j < p.peers; j++) {
        if (j != i) {
            let lpj = logits[at(j, row, k)] * inv_t - peer_lse[j];
            let pj = exp(lpj);
            kl += pj * (lpj - lpi);
            sum_pj += pj;
        }
    }
    return vec2<f32>(kl, sum_pj);
}
