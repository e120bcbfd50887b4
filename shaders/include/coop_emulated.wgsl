// The cooperative-matrix types and operations of matmul_coop.wgsl written out in plain WGSL, so
// that the kernel's tiling, staging, double buffering and epilogues run, and are checked against
// the CPU twin, on adapters without cooperative matrices (slowly). A "subgroup" here is any 32
// consecutive invocations (the host sets SG_SIZE = 32), and a 16x16 matrix is spread over them as
// in real hardware: invocation `lane` holds accumulator elements (row lane/16 + 2i, column
// lane%16) for i < 8, and copies out of workgroup memory, when a fragment is loaded, the A rows
// and the B column those need. So a slice overwritten before its fragments were loaded shows up
// as a wrong product, as it would on tensor cores.
enable f16;

const FRAG: u32 = 16u;
alias FragA = array<f16, 128>; // the 8 rows lane/16 + 2i, 16 k each
alias FragB = array<f16, 16>; // column lane%16, 16 k
alias Acc = array<f32, 8>; // elements (lane/16 + 2i, lane%16)

// Element i of the staged slices of op(A) and op(B) (arrays of vec4<f16>).
fn staged_a(i: u32) -> f16 {
    return tile_a[i / 4u][i % 4u];
}

fn staged_b(i: u32) -> f16 {
    return tile_b[i / 4u][i % 4u];
}

fn frag_a(at: u32) -> FragA {
    var f: FragA;
    for (var i = 0u; i < 8u; i++) {
        for (var k = 0u; k < 16u; k++) {
            f[i * 16u + k] = staged_a(at + (lane / 16u + 2u * i) * KS + k);
        }
    }
    return f;
}

// tile_b holds op(B) by columns: element (k, n) of the fragment is at at + n·KS + k.
fn frag_b(at: u32) -> FragB {
    var f: FragB;
    for (var k = 0u; k < 16u; k++) {
        f[k] = staged_b(at + (lane % 16u) * KS + k);
    }
    return f;
}

// As frag_a, from a slice staged by k: element (row, k) of the fragment is at at + k·MS + row.
fn frag_a_mn(at: u32) -> FragA {
    var f: FragA;
    for (var i = 0u; i < 8u; i++) {
        for (var k = 0u; k < 16u; k++) {
            f[i * 16u + k] = staged_a(at + k * MS + lane / 16u + 2u * i);
        }
    }
    return f;
}

// As frag_b, from a slice staged by k: element (k, n) of the fragment is at at + k·MS + n.
fn frag_b_mn(at: u32) -> FragB {
    var f: FragB;
    for (var k = 0u; k < 16u; k++) {
        f[k] = staged_b(at + k * MS + lane % 16u);
    }
    return f;
}

fn mma(a: FragA, b: FragB, c: Acc) -> Acc {
    var r = c;
    for (var i = 0u; i < 8u; i++) {
        for (var k = 0u; k < 16u; k++) {
            r[i] = fma(f32(a[i * 16u + k]), f32(b[k]), r[i]);
        }
    }
    return r;
}

// Row-major at out_tile[at..at + 256]: element (lane/16 + 2i, lane%16) is at lane + 32i.
fn stash(acc: Acc, at: u32) {
    for (var i = 0u; i < 8u; i++) {
        out_tile[at + lane + 32u * i] = acc[i];
    }
}
