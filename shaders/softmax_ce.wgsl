// Fused softmax cross-entropy, LANES threads per row of logits [groups, rows, classes]:
//   loss[row]   = sum_c q_c * (lse - z_c),   q = (1 - eps) * onehot(label) + eps / C
//   dlogits[row] = grad_scale * (softmax(z) - q)
// with the row's largest logit subtracted first (log_p) and a term whose difference overflows
// taken from halves (ce_term): logits of +-1e4, tied near f32's largest, or 6e38 apart under
// label smoothing are fine.
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

// LANES, place, at, row_max_log_sum, log_p, ce_term and reduce_sum come from
// shaders/include/row_softmax.wgsl, RowIds and row_place from rows_workgroup.wgsl or
// rows_subgroup.wgsl.

@compute @workgroup_size(64)
fn main(ids: RowIds) {
    row_place(ids, p.total_rows);
    let flat_row = place.row;
    let live = place.live;
    let group = flat_row / p.rows;
    let row = flat_row % p.rows;
    let c = p.classes;
    let label = labels[row];
    let parts = row_max_log_sum(group, row, 1.0);

    let off = p.smoothing / f32(c);
    var loss = 0.0;
    for (var k = place.lane; k < c; k += LANES) {
        let idx = at(group, row, k);
        let z = logits[idx];
        let q = off + select(0.0, 1.0 - p.smoothing, k == label);
        loss += ce_term(q, parts, z);
        if (live) {
            let g = p.grad_scale * (exp(log_p(parts, z, 1.0)) - q);
            dlogits[idx] = select(0.0, g, label < c);
        }
    }
    loss = reduce_sum(loss);
    if (live && place.lane == 0u) {
        losses[flat_row] = select(bitcast<f32>(0x7fc00000u), loss, label < c);
    }
}
