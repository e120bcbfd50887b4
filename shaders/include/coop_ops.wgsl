
// The cooperative-matrix operations of matmul_coop.wgsl on the adapter's cooperative matrices
// (types from coop16.wgsl or coop8.wgsl). Strides are constants: see matmul_coop.wgsl. The
// staged slices are arrays of vec4<f16>: a load starts at the entry holding element `at` (a
// multiple of 4) and its stride counts entries.

// The fragment of op(A) whose top-left element is tile_a[at] (rows KS apart).
fn frag_a(at: u32) -> FragA {
    return coopLoadT<FragA>(&tile_a[at / 4u], KS / 4u);
}

// The fragment of op(B) whose top-left element is tile_b[at] (tile_b holds op(B) by columns,
// KS apart: column-major).
fn frag_b(at: u32) -> FragB {
    return coopLoad<FragB>(&tile_b[at / 4u], KS / 4u);
}

// The fragment of op(A) whose top-left element is tile_a[at], staged by k (MN_A: columns MS
// apart, column-major).
fn frag_a_mn(at: u32) -> FragA {
    return coopLoad<FragA>(&tile_a[at / 4u], MS / 4u);
}

// The fragment of op(B) whose top-left element is tile_b[at], staged by k (MN_B: rows MS apart,
// row-major).
fn frag_b_mn(at: u32) -> FragB {
    return coopLoadT<FragB>(&tile_b[at / 4u], MS / 4u);
}

// a·b + c.
fn mma(a: FragA, b: FragB, c: Acc) -> Acc {
    return coopMultiplyAdd(a, b, c);
}

// Stores the accumulator row-major at out_tile[at..at + FRAG²].
fn stash(acc: Acc, at: u32) {
    coopStoreT(acc, &out_tile[at], FRAG);
}
