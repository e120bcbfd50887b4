// Optimizer updates with PyTorch's rules, on the gradient times grad_scale (1, or the inverse of
// mixed precision's loss scale):
//   sgd:  g = grad + wd*w; v = mu*v + g; w -= lr * (nesterov ? g + mu*v : v)
//   adam: (AdamW: w *= 1 - lr*wd; Adam: g += wd*w) m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//         w -= lr * (m / c1) / (sqrt(v / c2) + eps), with c1 = 1 - b1^t, c2 = 1 - b2^t from the host.
// Entries `sgd` and `adam` take the gradient as it is, one thread per parameter. Entries
// `sgd_bias` and `adam_bias` update a bias [G, H] from its layer's pre-activation gradient
// dpre [G, R, H] bound as `grad`: the gradient is dpre's column sum, formed in the same pass
// (shaders/include/column_sum.wgsl), so the bias gradient needs no dispatch of its own.
// CPU twins: src/cpu/optimizer.rs (after src/cpu/reduce_sum.rs for the bias entries).

struct Params {
    n: u32,
    flag: u32, // sgd: nesterov; adam: decoupled weight decay (AdamW)
    lr: f32,
    weight_decay: f32,
    momentum_or_beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
    rows: u32, // bias entries: R
    cols: u32, // bias entries: H
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state0: array<f32>; // velocity, or first moment
@group(0) @binding(4) var<storage, read_write> state1: array<f32>; // second moment (Adam)

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn sgd_update(i: u32, gradient: f32) {
    let mu = p.momentum_or_beta1;
    let w = param[i];
    let g = gradient * p.grad_scale + p.weight_decay * w;
    let v = mu * state0[i] + g;
    state0[i] = v;
    let update = select(v, g + mu * v, p.flag != 0u);
    param[i] = w - p.lr * update;
}

fn adam_update(i: u32, gradient: f32) {
    let b1 = p.momentum_or_beta1;
    var w = param[i];
    var g = gradient * p.grad_scale;
    if (p.flag != 0u) {
        w *= 1.0 - p.lr * p.weight_decay;
    } else {
        g += p.weight_decay * w;
    }
    let m = b1 * state0[i] + (1.0 - b1) * g;
    let v = p.beta2 * state1[i] + (1.0 - p.beta2) * g * g;
    state0[i] = m;
    state1[i] = v;
    param[i] = w - p.lr * (m / p.c1) / (sqrt(v / p.c2) + p.eps);
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.n) {
        sgd_update(i, grad[i]);
    }
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.n) {
        adam_update(i, grad[i]);
    }
}

fn summand(index: u32) -> f32 {
    return grad[index];
}

// The gradient of bias element i (of G·H): the sum of dpre's column, complete in lane lid.y == 0.
// All 256 invocations of the 16x16 workgroup call it (barriers).
fn bias_gradient(i: u32, lid: vec3<u32>) -> f32 {
    let base = (i / p.cols) * p.rows * p.cols + i % p.cols;
    return column_sum(lid, i < p.n, base, p.rows, p.cols);
}

@compute @workgroup_size(16, 16, 1)
fn sgd_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg.x * 16u + lid.x;
    let g = bias_gradient(i, lid);
    if (lid.y == 0u && i < p.n) {
        sgd_update(i, g);
    }
}

@compute @workgroup_size(16, 16, 1)
fn adam_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg.x * 16u + lid.x;
    let g = bias_gradient(i, lid);
    if (lid.y == 0u && i < p.n) {
        adam_update(i, g);
    }
}
