
// ---- shaders/include/rows_workgroup.wgsl, appended after row_softmax.wgsl ----
// A row's LANES threads are consecutive in the workgroup and reduce through workgroup memory,
// log2(LANES) barriers per reduction (none with one thread per row). Any adapter.

struct RowIds {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> scratch: array<f32, 64>;

// Sets this thread's `place` among `rows` rows: its slot is its index in the workgroup.
fn row_place(ids: RowIds, rows: u32) {
    set_place(ids.wg, ids.nwg, ids.lid, rows);
}

// The max (take_max) or the sum of v over this thread's row.
fn reduce_row(v: f32, take_max: bool) -> f32 {
    if (LANES == 1u) {
        return v;
    }
    let lid = place.slot;
    let lane = place.lane;
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
