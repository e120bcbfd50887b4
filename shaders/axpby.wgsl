// Element-wise y = a*x + b*y + c (entry axpby) and y = b*y + c (entry affine, e.g. a fill with b = 0).
// With b == 0 the old y is never read, so a fill clears NaNs too. CPU twin: src/cpu/axpby.rs.

struct Params {
    n: u32,
    a: f32,
    b: f32,
    c: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>; // axpby only

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn scaled_y(i: u32) -> f32 {
    if (p.b == 0.0) {
        return 0.0;
    }
    return p.b * y[i];
}

@compute @workgroup_size(256)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.n) {
        y[i] = p.a * x[i] + scaled_y(i) + p.c;
    }
}

@compute @workgroup_size(256)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.n) {
        y[i] = scaled_y(i) + p.c;
    }
}
