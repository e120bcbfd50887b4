// Optimizer updates, one thread per parameter, with PyTorch's rules.
//   sgd:  g = grad + wd*w; v = mu*v + g; w -= lr * (nesterov ? g + mu*v : v)
//   adam: (AdamW: w *= 1 - lr*wd; Adam: g += wd*w) m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//         w -= lr * (m / c1) / (sqrt(v / c2) + eps), with c1 = 1 - b1^t, c2 = 1 - b2^t from the host.
// CPU twin: src/cpu/optimizer.rs.

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state0: array<f32>; // velocity, or first moment
@group(0) @binding(4) var<storage, read_write> state1: array<f32>; // second moment (Adam)

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let mu = p.momentum_or_beta1;
    let w = param[i];
    let g = grad[i] + p.weight_decay * w;
    let v = mu * state0[i] + g;
    state0[i] = v;
    let update = select(v, g + mu * v, p.flag != 0u);
    param[i] = w - p.lr * update;
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let b1 = p.momentum_or_beta1;
    var w = param[i];
    var g = grad[i];
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
