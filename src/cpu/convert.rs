//! CPU twin of `shaders/convert.wgsl`: values from one float type to the other, each rounded to
//! the nearest f16 on the way to F16 (widened exactly on the way back).

/// Reference f32 → f16 conversion: round to nearest, ties to even, so magnitudes from 65520 up
/// are infinite and those between 65504 and 65520 become ±65504. (WGSL lets a GPU's `f16(x)`
/// take either neighbouring f16, so the tests allow one f16 step.)
pub fn to_f16(src: &[f32], dst: &mut [half::f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(s);
    }
}

/// Reference f16 → f32 conversion (exact).
pub fn to_f32(src: &[half::f16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}
