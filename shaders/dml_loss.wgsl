// The whole mutual-learning loss in one pass over the stacked logits [P, B, C], LANES threads per
// batch row: for each peer i in [peer_begin, peer_end), with q the smoothed one-hot target,
// lse1 = lse(z_i) and log p_j = z_j / T - lse(z_j / T):
//   losses[0, i, r] = sum_c q_c (lse1 - z_i,c)                                           (CE)
//   losses[1, i, r] = T^2 * mean_{j != i} sum_c p_j,c (log p_j,c - log p_i,c)  (KL; 0 when P = 1)
//   dlogits[i, r] = ce_scale * (softmax(z_i) - q) + kl_scale * T * (p_i - mean_{j != i} p_j)
// i.e. softmax_ce.wgsl and kl_div.wgsl fused, reading each row once and writing the total
// gradient. A label >= C gives a NaN CE loss and no CE gradient. CPU twin: src/cpu/dml_loss.rs.

struct Params {
    peers: u32,
    rows: u32,
    classes: u32,
    peer_begin: u32,
    peer_end: u32,
    _pad0: u32,
    temperature: f32,
    kl_scale: f32,
    ce_scale: f32,
    smoothing: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>; // [2, P, B]: CE rows, KL rows
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

// LANES, place, at, lane_pairs, row_max_log_sum, log_p, ce_term and reduce_sum come from
// shaders/include/row_softmax.wgsl, RowIds and row_place from rows_workgroup.wgsl or
// rows_subgroup.wgsl; peer_parts, fill_peer_parts, peer_log_p and pair_terms from
// shaders/include/peer_kl.wgsl.

@compute @workgroup_size(64)
fn main(ids: RowIds) {
    row_place(ids, p.rows);
    let row = place.row;
    let live = place.live;
    let c = p.classes;
    let inv_t = 1.0 / p.temperature;
    let mutual = p.peers > 1u;
    if (mutual) {
        fill_peer_parts(row, inv_t);
    }
    let label = labels[row];
    let off = p.smoothing / f32(c);
    let others = f32(max(p.peers, 2u) - 1u);
    for (var i = p.peer_begin; i < p.peer_end; i++) {
        let parts1 = row_max_log_sum(i, row, 1.0);
        var ce = 0.0;
        var kl = 0.0;
        // (class k, peer j) pairs (lane_pairs): each class once where there are no others.
        let per = select(1u, p.peers, mutual);
        var k = place.lane;
        var j = 0u;
        var idx = 0u;
        var z = 0.0;
        var pi = 0.0;
        var terms = vec2<f32>(0.0); // class k's KL term and the others' probability
        for (var t = 0u; t < lane_pairs(place.lane, per); t++) {
            if (j == 0u) {
                idx = at(i, row, k);
                z = logits[idx];
                if (mutual) {
                    pi = exp(peer_log_p(i, z, inv_t));
                }
            }
            if (mutual) {
                terms += pair_terms(i, j, row, k, z, pi, inv_t);
            }
            j++;
            if (j == per) {
                let q = off + select(0.0, 1.0 - p.smoothing, k == label);
                ce += ce_term(q, parts1, z);
                var g = select(0.0, p.ce_scale * (exp(log_p(parts1, z, 1.0)) - q), label < c);
                if (mutual) {
                    kl += terms.x;
                    g += p.kl_scale * p.temperature * (pi - terms.y / others);
                }
                if (live) {
                    dlogits[idx] = g;
                }
                terms = vec2<f32>(0.0);
                j = 0u;
                k += LANES;
            }
        }
        ce = reduce_sum(ce);
        kl = reduce_sum(kl);
        if (live && place.lane == 0u) {
            losses[i * p.rows + row] = select(bitcast<f32>(0x7fc00000u), ce, label < c);
            losses[(p.peers + i) * p.rows + row] = p.temperature * p.temperature * kl / others;
        }
    }
}
