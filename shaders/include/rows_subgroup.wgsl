
// ---- shaders/include/rows_subgroup.wgsl, appended after row_softmax.wgsl ----
// A row's LANES threads are LANES aligned lanes of one subgroup (the host keeps LANES at most
// the adapter's smallest subgroup), and reduce by log2(LANES) butterfly shuffles: no workgroup
// memory, no barriers, every lane left with the result. Needs subgroup operations.

struct RowIds {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_size) width: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

// Sets this thread's `place` among `rows` rows: the workgroup's subgroups take its rows in
// turn, width / LANES each (subgroups are full: the backend checks it when it opens).
fn row_place(ids: RowIds, rows: u32) {
    set_place(ids.wg, ids.nwg, ids.subgroup * ids.width + ids.lane, rows);
}

// The max (take_max) or the sum of v over this thread's row, the same in every lane (at each
// step the two lanes of a pair add the same two values, and a + b rounds as b + a does).
fn reduce_row(v: f32, take_max: bool) -> f32 {
    var r = v;
    for (var s = 1u; s < LANES; s <<= 1u) {
        let other = subgroupShuffleXor(r, s);
        r = select(r + other, max(r, other), take_max);
    }
    return r;
}
