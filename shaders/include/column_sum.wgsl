
// Column sums in a 16x16 workgroup (reduce_sum.wgsl, and optimizer.wgsl's bias entries): for
// column lid.x, lane lid.y adds summand(base + k·stride) for k = lid.y, lid.y + 16, ... < count,
// then the 16 lanes fold in workgroup memory. Every invocation must call it (it has barriers);
// columns outside the output pass inside = false. The includer defines `summand`.
var<workgroup> partial: array<array<f32, 16>, 16>; // [lane][column]

fn column_sum(lid: vec3<u32>, inside: bool, base: u32, count: u32, stride: u32) -> f32 {
    var sum = 0.0;
    if (inside) {
        for (var k = lid.y; k < count; k += 16u) {
            sum += summand(base + k * stride);
        }
    }
    partial[lid.y][lid.x] = sum;
    workgroupBarrier();
    for (var step = 8u; step > 0u; step >>= 1u) {
        if (lid.y < step) {
            partial[lid.y][lid.x] += partial[lid.y + step][lid.x];
        }
        workgroupBarrier();
    }
    return partial[0][lid.x];
}
