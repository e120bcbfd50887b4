// dst = src, element by element, from one float type to the other: f32 -> f16 (rounded; the
// f16 copies of the weights that mixed-precision matmuls read) or f16 -> f32 (exact).
// The host appends the types (`alias Src = f32; alias Dst = f16;`) and the f16 enable.
// CPU twin: src/cpu/convert.rs.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<Src>;
@group(0) @binding(2) var<storage, read_write> dst: array<Dst>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        dst[i] = Dst(src[i]);
    }
}
