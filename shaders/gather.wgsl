// A batch gathered from a resident data set, two tables (features and labels) by one index, over
// 32-bit words (f32 or u32 rows alike, f16 rows as pairs):
//   a_out[r, :] = a[index[offset + r], :],  b_out[r, :] = b[index[offset + r], :]
// The index may hold a whole epoch's order, each batch a slice of it from `offset`. Rows whose
// index is out of range are written as zeros. One thread per output word of either table.
// CPU twin: src/cpu/gather.rs.

struct Params {
    src_rows: u32,
    dst_rows: u32,
    width_a: u32, // words per row of a
    width_b: u32, // words per row of b
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<u32>;
@group(0) @binding(3) var<storage, read_write> a_out: array<u32>;
@group(0) @binding(4) var<storage, read> b: array<u32>;
@group(0) @binding(5) var<storage, read_write> b_out: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let width = p.width_a + p.width_b;
    if (i >= p.dst_rows * width) {
        return;
    }
    let r = i / width;
    let w = i % width;
    let src = index[p.offset + r];
    // A branch, not select(): select would read the source row even when it is out of range,
    // past the table's end when bounds checks are off (COHORT_UNCHECKED_INDEXING=1).
    var word = 0u;
    if (w < p.width_a) {
        if (src < p.src_rows) {
            word = a[src * p.width_a + w];
        }
        a_out[r * p.width_a + w] = word;
    } else {
        let v = w - p.width_a;
        if (src < p.src_rows) {
            word = b[src * p.width_b + v];
        }
        b_out[r * p.width_b + v] = word;
    }
}
