// Accuracy counters, one thread per batch row, over stacked logits [P, B, C] and labels [B]:
// counts[j] += 1 where argmax(z_j) == label (first index on ties), and counts[P] += 1 where the
// ensemble, argmax of the mean of the peers' softmax probabilities, is right.
// Counts accumulate across calls, so metrics stay on the GPU until read.
// CPU twin: src/cpu/count_correct.rs.

struct Params {
    peers: u32,
    rows: u32,
    classes: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> counts: array<atomic<u32>>;

fn at(peer: u32, row: u32, k: u32) -> u32 {
    return (peer * p.rows + row) * p.classes + k;
}

// count_row comes from shaders/include/count_row.wgsl.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row < p.rows) {
        count_row(row);
    }
}
