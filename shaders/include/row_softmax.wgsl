
// ---- shaders/include/row_softmax.wgsl, appended by the host to the loss kernels ----
// A 64-thread workgroup handles WG / LANES rows of stacked logits [P, B, C], LANES threads per
// row. LANES (a power of two, 1 to 64) is a pipeline constant the host picks from C: one thread
// per row for a few classes, the whole workgroup for many. The including kernel declares
// `logits: array<f32>` and a uniform `p` with `rows` and `classes`.
// Every thread must call the reductions (uniform control flow, so threads past the last row work
// on a clamped row and only skip their writes); each thread gets its own row's result.

override LANES: u32 = 64u;
const WG: u32 = 64u;
var<workgroup> scratch: array<f32, 64>;

// Index of class k in row `row` of peer (or group) `peer` of the stacked [P, B, C] logits.
fn at(peer: u32, row: u32, k: u32) -> u32 {
    return (peer * p.rows + row) * p.classes + k;
}

// This thread's place: (row, lane, whether the row exists), for `rows` rows in all.
fn row_place(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, rows: u32) -> vec3<u32> {
    let row = (wg.x + wg.y * nwg.x) * (WG / LANES) + lid / LANES;
    return vec3<u32>(min(row, rows - 1u), lid % LANES, u32(row < rows));
}

// The max (take_max) or the sum of v over this thread's row.
fn reduce_row(v: f32, lid: u32, take_max: bool) -> f32 {
    if (LANES == 1u) {
        return v;
    }
    let lane = lid % LANES;
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            let other = scratch[lid + s];
            scratch[lid] = select(scratch[lid] + other, max(scratch[lid], other), take_max);
        }
        workgroupBarrier();
    }
    let r = scratch[lid - lane];
    workgroupBarrier();
    return r;
}

fn reduce_max(v: f32, lid: u32) -> f32 {
    return reduce_row(v, lid, true);
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    return reduce_row(v, lid, false);
}

// The stable log-sum-exp of z * inv_t over one row (the max is subtracted first, so logits of
// +-1e4 are fine).
fn row_lse(peer: u32, row: u32, inv_t: f32, lid: u32) -> f32 {
    var m = -3.4028235e38;
    for (var k = lid % LANES; k < p.classes; k += LANES) {
        m = max(m, logits[at(peer, row, k)] * inv_t);
    }
    m = reduce_max(m, lid);
    var s = 0.0;
    for (var k = lid % LANES; k < p.classes; k += LANES) {
        s += exp(logits[at(peer, row, k)] * inv_t - m);
    }
    return m + log(reduce_sum(s, lid));
}
