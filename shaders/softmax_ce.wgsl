// Fused softmax cross-entropy, LANES threads per row of logits [groups, rows, classes]:
//   loss[row]   = sum_c q_c * (lse - z_c),   q = (1 - eps) * onehot(label) + eps / C
//   dlogits[row] = grad_scale * (softmax(z) - q)
// with the stable log-sum-exp (max subtracted first), so logits of +-1e4 are fine.
// Every group shares the label vector [rows]. A label >= C gives a NaN loss and a zero gradient.
// CPU twin: src/cpu/softmax_ce.rs.

struct Params {
    total_rows: u32, // groups * rows
    rows: u32,
    classes: u32,
    _pad: u32,
    smoothing: f32,
    grad_scale: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

// WG, LANES, at, row_place, reduce_sum and row_lse come from shaders/include/row_softmax.wgsl.

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let place = row_place(wg, nwg, lid, p.total_rows);
    let flat_row = place.x;
    let live = place.z != 0u;
    let group = flat_row / p.rows;
    let row = flat_row % p.rows;
    let c = p.classes;
    let label = labels[row];
    let lse = row_lse(group, row, 1.0, lid);

    let off = p.smoothing / f32(c);
    var loss = 0.0;
    for (var k = place.y; k < c; k += LANES) {
        let idx = at(group, row, k);
        let z = logits[idx];
        let q = off + select(0.0, 1.0 - p.smoothing, k == label);
        loss += q * (lse - z);
        if (live) {
            dlogits[idx] = select(0.0, p.grad_scale * (exp(z - lse) - q), label < c);
        }
    }
    loss = reduce_sum(loss, lid);
    if (live && place.y == 0u) {
        losses[flat_row] = select(bitcast<f32>(0x7fc00000u), loss, label < c);
    }
}
