// Optimizer updates with PyTorch's rules, on the gradient times grad_scale (1, or the inverse of
// mixed precision's loss scale):
//   sgd:  g = grad + wd*w; v = mu*v + g; w -= lr * (nesterov ? g + mu*v : v)
//   adam: (AdamW: w *= 1 - lr*wd; Adam: g += wd*w) m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//         w -= lr * (m / c1) / (sqrt(v / c2) + eps), with c1 = 1 - b1^t, c2 = 1 - b2^t from the host.
// Entries `sgd` and `adam` take the gradient as it is, one thread per parameter. Entries
// `sgd_bias` and `adam_bias` update a bias [G, H] from its layer's pre-activation gradient
// dpre [G, R, H] bound as `grad`: the gradient is dpre's column sum, formed in the same pass
// (shaders/include/column_sum.wgsl), so the bias gradient needs no dispatch of its own.
// Entries `sgd_layer` and `adam_layer` update a layer's weights and its bias in one dispatch:
// the first `weight_groups` workgroups update 256 weights each from `weight_grad`, the others
// 16 bias elements each from dpre (bound as `grad`, as for the bias entries).
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
    rows: u32, // bias and layer entries: R
    cols: u32, // bias and layer entries: H
    grad_scale: f32,
    bias_n: u32,        // layer entries: bias elements (G·H); n counts the weights
    weight_groups: u32, // layer entries: workgroups updating weights
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state0: array<f32>; // velocity, or first moment
@group(0) @binding(4) var<storage, read_write> state1: array<f32>; // second moment (Adam)
// Layer entries only (binding 5 is the f16 copy, include/optimizer_f16.wgsl):
@group(0) @binding(6) var<storage, read_write> bias: array<f32>;
@group(0) @binding(7) var<storage, read> weight_grad: array<f32>;
@group(0) @binding(8) var<storage, read_write> bias_state0: array<f32>;
@group(0) @binding(9) var<storage, read_write> bias_state1: array<f32>;

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// SGD on parameter w with velocity v: (new w, new v).
fn sgd_rule(w: f32, v: f32, gradient: f32) -> vec2<f32> {
    let mu = p.momentum_or_beta1;
    let g = gradient * p.grad_scale + p.weight_decay * w;
    let v1 = mu * v + g;
    // (Without momentum, Nesterov's look-ahead adds nothing, even where v1 overflowed.)
    let update = select(v1, g + select(mu * v1, 0.0, mu == 0.0), p.flag != 0u);
    return vec2<f32>(w - p.lr * update, v1);
}

// Adam on parameter w with moments m and v: (new w, new m, new v).
fn adam_rule(w0: f32, m: f32, v: f32, gradient: f32) -> vec3<f32> {
    let b1 = p.momentum_or_beta1;
    var w = w0;
    var g = gradient * p.grad_scale;
    if (p.flag != 0u) {
        w *= 1.0 - p.lr * p.weight_decay;
    } else {
        g += p.weight_decay * w;
    }
    let m1 = b1 * m + (1.0 - b1) * g;
    let v1 = p.beta2 * v + (1.0 - p.beta2) * g * g;
    return vec3<f32>(w - p.lr * (m1 / p.c1) / (sqrt(v1 / p.c2) + p.eps), m1, v1);
}

fn sgd_update(i: u32, gradient: f32) {
    let r = sgd_rule(param[i], state0[i], gradient);
    param[i] = r.x;
    state0[i] = r.y;
}

fn adam_update(i: u32, gradient: f32) {
    let r = adam_rule(param[i], state0[i], state1[i], gradient);
    param[i] = r.x;
    state0[i] = r.y;
    state1[i] = r.z;
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

// The gradient of bias element i (of count = G·H): the sum of dpre's column, complete in lane
// lid.y == 0. All 256 invocations of the 16x16 workgroup call it (barriers).
fn bias_gradient(i: u32, count: u32, lid: vec3<u32>) -> f32 {
    let base = (i / p.cols) * p.rows * p.cols + i % p.cols;
    return column_sum(lid, i < count, base, p.rows, p.cols);
}

@compute @workgroup_size(16, 16, 1)
fn sgd_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = layer_group(wg, nwg) * 16u + lid.x;
    let g = bias_gradient(i, p.n, lid);
    if (lid.y == 0u && i < p.n) {
        sgd_update(i, g);
    }
}

@compute @workgroup_size(16, 16, 1)
fn adam_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = layer_group(wg, nwg) * 16u + lid.x;
    let g = bias_gradient(i, p.n, lid);
    if (lid.y == 0u && i < p.n) {
        adam_update(i, g);
    }
}

// The workgroup's index in its 2D grid (the bias and layer entries; uniform: the branch on it
// may be followed by the bias part's barriers).
fn layer_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// This invocation's weight in weight workgroup g.
fn layer_weight(g: u32, lid: vec3<u32>) -> u32 {
    return g * 256u + lid.y * 16u + lid.x;
}

// The bias part of a layer update: workgroup g (past the weight workgroups) updates 16 bias
// elements from dpre's column sums.
fn sgd_layer_bias(g: u32, lid: vec3<u32>) {
    let i = (g - p.weight_groups) * 16u + lid.x;
    let gradient = bias_gradient(i, p.bias_n, lid);
    if (lid.y == 0u && i < p.bias_n) {
        let r = sgd_rule(bias[i], bias_state0[i], gradient);
        bias[i] = r.x;
        bias_state0[i] = r.y;
    }
}

fn adam_layer_bias(g: u32, lid: vec3<u32>) {
    let i = (g - p.weight_groups) * 16u + lid.x;
    let gradient = bias_gradient(i, p.bias_n, lid);
    if (lid.y == 0u && i < p.bias_n) {
        let r = adam_rule(bias[i], bias_state0[i], bias_state1[i], gradient);
        bias[i] = r.x;
        bias_state0[i] = r.y;
        bias_state1[i] = r.z;
    }
}

// The layer entries' work, for either rule: this invocation's weight (when its workgroup is a
// weight workgroup) or its share of the bias part. Returns the weight updated, or p.n for none.
fn sgd_layer_at(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    let g = layer_group(wg, nwg);
    var updated = p.n;
    if (g < p.weight_groups) {
        let i = layer_weight(g, lid);
        if (i < p.n) {
            sgd_update(i, weight_grad[i]);
            updated = i;
        }
    } else {
        sgd_layer_bias(g, lid);
    }
    return updated;
}

fn adam_layer_at(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    let g = layer_group(wg, nwg);
    var updated = p.n;
    if (g < p.weight_groups) {
        let i = layer_weight(g, lid);
        if (i < p.n) {
            adam_update(i, weight_grad[i]);
            updated = i;
        }
    } else {
        adam_layer_bias(g, lid);
    }
    return updated;
}

@compute @workgroup_size(16, 16, 1)
fn sgd_layer(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    sgd_layer_at(wg, nwg, lid);
}

@compute @workgroup_size(16, 16, 1)
fn adam_layer(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    adam_layer_at(wg, nwg, lid);
}
