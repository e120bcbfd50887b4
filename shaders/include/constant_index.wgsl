
// Entry i of a 16-entry array in registers, read or replaced with a constant index; the kernel
// names the entry type `Indexed` (matmul.wgsl: vec4<f32>, matmul_coop.wgsl: Acc). An array
// indexed with a variable lives in local memory rather than registers (on NVIDIA, and in every
// access, the hot loop's too): a loop the driver does not unroll, such as one holding barriers
// or one too long, gives its counter as the index. Through these switches every access has a
// constant one; where the loop is unrolled, the switch folds away.
fn indexed_get(values: ptr<function, array<Indexed, 16>>, i: u32) -> Indexed {
    switch i {
        case 0u: { return (*values)[0]; }
        case 1u: { return (*values)[1]; }
        case 2u: { return (*values)[2]; }
        case 3u: { return (*values)[3]; }
        case 4u: { return (*values)[4]; }
        case 5u: { return (*values)[5]; }
        case 6u: { return (*values)[6]; }
        case 7u: { return (*values)[7]; }
        case 8u: { return (*values)[8]; }
        case 9u: { return (*values)[9]; }
        case 10u: { return (*values)[10]; }
        case 11u: { return (*values)[11]; }
        case 12u: { return (*values)[12]; }
        case 13u: { return (*values)[13]; }
        case 14u: { return (*values)[14]; }
        default: { return (*values)[15]; }
    }
}

fn indexed_set(values: ptr<function, array<Indexed, 16>>, i: u32, value: Indexed) {
    switch i {
        case 0u: { (*values)[0] = value; }
        case 1u: { (*values)[1] = value; }
        case 2u: { (*values)[2] = value; }
        case 3u: { (*values)[3] = value; }
        case 4u: { (*values)[4] = value; }
        case 5u: { (*values)[5] = value; }
        case 6u: { (*values)[6] = value; }
        case 7u: { (*values)[7] = value; }
        case 8u: { (*values)[8] = value; }
        case 9u: { (*values)[9] = value; }
        case 10u: { (*values)[10] = value; }
        case 11u: { (*values)[11] = value; }
        case 12u: { (*values)[12] = value; }
        case 13u: { (*values)[13] = value; }
        case 14u: { (*values)[14] = value; }
        default: { (*values)[15] = value; }
    }
}
