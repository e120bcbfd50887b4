
// f32 values rounded to the nearest f16 and widened back, for f16 products on the f32 kernels:
// WGSL's packing conversions, which need no f16 shaders but do need wgpu's SHADER_F16_IN_F32
// (lavapipe lacks it where it lacks f16 shaders). Where the adapter lacks it the runtime swaps
// this file for `f16_rounding_integer.wgsl`, the same function in integer operations.
fn round_to_f16(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(pack2x16float(v.xy)), unpack2x16float(pack2x16float(v.zw)));
}
