
// ---- shaders/include/row_softmax.wgsl, appended by the host to the loss kernels ----
// One workgroup of 64 threads per row of stacked logits [P, B, C]. The including kernel declares
// `logits: array<f32>`, a uniform `p` with `classes`, and `fn at(peer, row, k) -> u32`.
// Every thread must call these functions (uniform control flow); every thread gets the result.

const WG: u32 = 64u;
var<workgroup> scratch: array<f32, 64>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            scratch[lid] = max(scratch[lid], scratch[lid + s]);
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

// The stable log-sum-exp of z * inv_t over one row (the max is subtracted first, so logits of
// +-1e4 are fine).
fn row_lse(peer: u32, row: u32, inv_t: f32, lid: u32) -> f32 {
    var m = -3.4028235e38;
    for (var k = lid; k < p.classes; k += WG) {
        m = max(m, logits[at(peer, row, k)] * inv_t);
    }
    m = reduce_max(m, lid);
    var s = 0.0;
    for (var k = lid; k < p.classes; k += WG) {
        s += exp(logits[at(peer, row, k)] * inv_t - m);
    }
    return m + log(reduce_sum(s, lid));
}
