// Mutual-learning KL divergence, LANES threads per batch row, over stacked peer logits [P, B, C].
// With log p_j = z_j / T - lse(z_j / T), for each peer i in [peer_begin, peer_end):
//   loss[i, r]     = T^2 * mean_{j != i} sum_c p_j,c * (log p_j,c - log p_i,c)
//   dlogits[i, r] (+)= grad_scale * T * (p_i - mean_{j != i} p_j)
// (PyTorch: kl_div(log_softmax(z_i/T), softmax(z_j/T), 'batchmean') * T^2 once the row losses are
// averaged over the batch). The peers j are constants: no gradient flows to them.
// CPU twin: src/cpu/kl_div.rs.

struct Params {
    peers: u32,
    rows: u32,
    classes: u32,
    peer_begin: u32,
    peer_end: u32,
    accumulate: u32,
    temperature: f32,
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;

// LANES, place, at, lane_pairs and reduce_sum come from
// shaders/include/row_softmax.wgsl, RowIds and row_place from rows_workgroup.wgsl or
// rows_subgroup.wgsl; peer_parts, fill_peer_parts, peer_log_p and pair_terms from
// shaders/include/peer_kl.wgsl.

@compute @workgroup_size(64)
fn main(ids: RowIds) {
    row_place(ids, p.rows);
    let row = place.row;
    let live = place.live;
    let inv_t = 1.0 / p.temperature;
    fill_peer_parts(row, inv_t);

    let others = f32(p.peers - 1u);
    for (var i = p.peer_begin; i < p.peer_end; i++) {
        var loss = 0.0;
        // (class k, peer j) pairs (lane_pairs).
        var k = place.lane;
        var j = 0u;
        var idx = 0u;
        var zi = 0.0;
        var pi = 0.0;
        var terms = vec2<f32>(0.0); // class k's KL term and the others' probability
        for (var t = 0u; t < lane_pairs(place.lane, p.peers); t++) {
            if (j == 0u) {
                idx = at(i, row, k);
                zi = logits[idx];
                pi = exp(peer_log_p(i, zi, inv_t));
            }
            terms += pair_terms(i, j, row, k, zi, pi, inv_t);
            j++;
            if (j == p.peers) {
                loss += terms.x;
                if (live) {
                    var g = p.grad_scale * p.temperature * (pi - terms.y / others);
                    if (p.accumulate != 0u) {
                        g += dlogits[idx];
                    }
                    dlogits[idx] = g;
                }
                terms = vec2<f32>(0.0);
                j = 0u;
                k += LANES;
            }
        }
        loss = reduce_sum(loss);
        if (live && place.lane == 0u) {
            losses[i * p.rows + row] = p.temperature * p.temperature * loss / others;
        }
    }
}
