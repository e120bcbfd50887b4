// Mutual-learning KL divergence, one workgroup per batch row, over stacked peer logits [P, B, C].
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

// reduce_max, reduce_sum and WG (64 threads) come from shaders/include/workgroup_reduce.wgsl.
const MAX_PEERS: u32 = 32u; // the host rejects larger cohorts for this kernel
var<workgroup> lse: array<f32, 32>;

fn at(peer: u32, row: u32, k: u32) -> u32 {
    return (peer * p.rows + row) * p.classes + k;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let c = p.classes;
    let inv_t = 1.0 / p.temperature;

    // Log-sum-exp of z/T for every peer.
    for (var j = 0u; j < p.peers; j++) {
        var m = -3.4028235e38;
        for (var k = lid; k < c; k += WG) {
            m = max(m, logits[at(j, row, k)] * inv_t);
        }
        m = reduce_max(m, lid);
        var s = 0.0;
        for (var k = lid; k < c; k += WG) {
            s += exp(logits[at(j, row, k)] * inv_t - m);
        }
        s = reduce_sum(s, lid);
        if (lid == 0u) {
            lse[j] = m + log(s);
        }
        workgroupBarrier();
    }

    let others = f32(p.peers - 1u);
    for (var i = p.peer_begin; i < p.peer_end; i++) {
        var loss = 0.0;
        for (var k = lid; k < c; k += WG) {
            let lpi = logits[at(i, row, k)] * inv_t - lse[i];
            var mean_pj = 0.0;
            for (var j = 0u; j < p.peers; j++) {
                if (j != i) {
                    let lpj = logits[at(j, row, k)] * inv_t - lse[j];
                    let pj = exp(lpj);
                    loss += pj * (lpj - lpi);
                    mean_pj += pj;
                }
            }
            mean_pj /= others;
            let idx = at(i, row, k);
            var g = p.grad_scale * p.temperature * (exp(lpi) - mean_pj);
            if (p.accumulate != 0u) {
                g += dlogits[idx];
            }
            dlogits[idx] = g;
        }
        loss = reduce_sum(loss, lid);
        if (lid == 0u) {
            losses[i * p.rows + row] = p.temperature * p.temperature * loss / others;
        }
    }
}
