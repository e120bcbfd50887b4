// Row gather over 32-bit words (f32 or u32 rows alike, f16 rows as pairs): dst[r, :] =
// src[index[r], :].
// Used to assemble each mini-batch on the GPU from the resident data set and an index buffer.
// Rows whose index is out of range are written as zeros. CPU twin: src/cpu/gather.rs.

struct Params {
    src_rows: u32,
    dst_rows: u32,
    width: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.dst_rows * p.width) {
        return;
    }
    let r = index[i / p.width];
    var value = 0u;
    if (r < p.src_rows) {
        value = src[r * p.width + i % p.width];
    }
    dst[i] = value;
}
