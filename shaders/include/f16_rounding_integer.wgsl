
// f32 values rounded to the nearest f16 (ties to even) and widened back, in integer operations:
// `f16_rounding.wgsl` for adapters without WGSL's packing conversions. Infinities and NaN stay;
// from 65520 (the tie past f16's largest, 65504) on, infinity; below 2⁻¹⁴ (f16's subnormals,
// spaced 2⁻²⁴) a multiple of 2⁻²⁴, by `round`, which takes ties to even, on the exactly scaled
// value; else the low 13 of the 23 mantissa bits rounded off, ties to even.
fn round_to_f16(v: vec4<f32>) -> vec4<f32> {
    let bits = bitcast<vec4<u32>>(v);
    let sign = bits & vec4<u32>(0x80000000u);
    let magnitude = bits & vec4<u32>(0x7fffffffu);
    let subnormal = round(abs(v) * 16777216.0) * bitcast<f32>(0x33800000u);
    let odd = (magnitude >> vec4<u32>(13u)) & vec4<u32>(1u);
    let normal = (magnitude + vec4<u32>(0xfffu) + odd) & vec4<u32>(0xffffe000u);
    var rounded = select(normal, bitcast<vec4<u32>>(subnormal), magnitude < vec4<u32>(0x38800000u));
    rounded = select(rounded, vec4<u32>(0x7f800000u), magnitude >= vec4<u32>(0x477ff000u));
    rounded = select(rounded, magnitude, magnitude >= vec4<u32>(0x7f800000u));
    return bitcast<vec4<f32>>(sign | rounded);
}
