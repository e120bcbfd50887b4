// Sum over the middle axis: out[o, i] = scale * sum_k x[o, k, i] (+ out[o, i] when accumulating).
// Serves the bias gradient (a column sum) and batch means of per-row losses.
// CPU twin: src/cpu/reduce_sum.rs.
//
// A 16x16 workgroup covers 16 neighbouring outputs (coalesced along i) with 16 lanes over k,
// then folds the lanes in workgroup memory.

struct Params {
    outer: u32,
    n: u32,
    inner: u32,
    accumulate: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<array<f32, 16>, 16>; // [lane][output]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg.x * 16u + lid.x;
    let o = wg.y + wg.z * 65535u;
    var sum = 0.0;
    if (i < p.inner && o < p.outer) {
        for (var k = lid.y; k < p.n; k += 16u) {
            sum += x[(o * p.n + k) * p.inner + i];
        }
    }
    partial[lid.y][lid.x] = sum;
    workgroupBarrier();
    for (var step = 8u; step > 0u; step >>= 1u) {
        if (lid.y < step) {
            partial[lid.y][lid.x] += partial[lid.y + step][lid.x];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && i < p.inner && o < p.outer) {
        let idx = o * p.inner + i;
        var value = p.scale * partial[0][lid.x];
        if (p.accumulate != 0u) {
            value += out[idx];
        }
        out[idx] = value;
    }
}
