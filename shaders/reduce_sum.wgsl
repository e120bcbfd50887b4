// Sum over the middle axis: out[o, i] = scale * sum_k x[o, k, i] (+ out[o, i] when accumulating),
// written from element out_offset of `out` (one result of a stack, e.g. a row of a loss history).
// Serves batch means of per-row losses and other reductions (the trainer's bias gradients are
// summed inside optimizer.wgsl's bias entries).
// CPU twin: src/cpu/reduce_sum.rs.
//
// A 16x16 workgroup covers 16 neighbouring outputs (coalesced along i) with 16 lanes over k,
// then folds the lanes in workgroup memory (shaders/include/column_sum.wgsl). Any outer × inner
// size the grid holds: the host folds the workgroups into two dimensions.

struct Params {
    outer: u32,
    n: u32,
    inner: u32,
    accumulate: u32,
    scale: f32,
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn summand(index: u32) -> f32 {
    return x[index];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Workgroup g of the grid (folded into two dimensions by the host) takes outputs tile
    // g % tiles of 16 in row g / tiles.
    let tiles = (p.inner + 15u) / 16u;
    let g = wg.x + wg.y * nwg.x;
    let i = (g % tiles) * 16u + lid.x;
    let o = g / tiles;
    let inside = i < p.inner && o < p.outer;
    let total = column_sum(lid, inside, o * p.n * p.inner + i, p.n, p.inner);
    if (lid.y == 0u && inside) {
        let idx = p.out_offset + o * p.inner + i;
        var value = p.scale * total;
        if (p.accumulate != 0u) {
            value += out[idx];
        }
        out[idx] = value;
    }
}
