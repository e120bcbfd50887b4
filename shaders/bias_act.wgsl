// Bias plus activation: forward y = act(x + bias), backward dx = dy * act'(x + bias).
// x is [groups, rows, cols]; bias is [cols] (bias_stride 0) or [groups, cols].
// CPU twin: src/cpu/bias_act.rs.

struct Params {
    total: u32,
    rows_cols: u32, // rows * cols: elements per group
    cols: u32,
    bias_stride: u32,
    act: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // y (forward) or dx (backward)
@group(0) @binding(4) var<storage, read> dy: array<f32>;        // backward only

// activate and derivative come from shaders/include/activation.wgsl.

// Linear element index from a 2D grid of 256-wide workgroups.
fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn pre_activation(i: u32) -> f32 {
    let g = i / p.rows_cols;
    return x[i] + bias[g * p.bias_stride + i % p.cols];
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.total) {
        out[i] = activate(pre_activation(i), p.act);
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.total) {
        out[i] = dy[i] * derivative(pre_activation(i), p.act);
    }
}
