
// optimizer.wgsl's entries `sgd_f16` and `adam_f16` (and `sgd_layer_f16`, `adam_layer_f16`): the
// same updates, then the new parameter (weight) rounded into its f16 copy (the weights
// mixed-precision matmuls read), in the same pass.
// Appended, after `enable f16`, where the device has f16 shaders. The copy is binding 5 in both
// (Adam's second moment is 4; SGD leaves 4 unbound).

@group(0) @binding(5) var<storage, read_write> param16: array<f16>;

@compute @workgroup_size(256)
fn sgd_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.n) {
        sgd_update(i, grad[i]);
        param16[i] = f16(param[i]);
    }
}

@compute @workgroup_size(256)
fn adam_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if (i < p.n) {
        adam_update(i, grad[i]);
        param16[i] = f16(param[i]);
    }
}

// The layer entries with the copy: the weight updated (if any) is rounded into it.
@compute @workgroup_size(16, 16, 1)
fn sgd_layer_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = sgd_layer_at(wg, nwg, lid);
    if (i < p.n) {
        param16[i] = f16(param[i]);
    }
}

@compute @workgroup_size(16, 16, 1)
fn adam_layer_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = adam_layer_at(wg, nwg, lid);
    if (i < p.n) {
        param16[i] = f16(param[i]);
    }
}
