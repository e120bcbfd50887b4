// The cooperative-matrix types and operations of matmul_coop.wgsl written out in plain WGSL, so
// that the kernel's tiling, staging, double buffering and epilogues run, and are checked against
// the CPU twin, on adapters without cooperative matrices (slowly). A "subgroup" here is any 32
// consecutive invocations (the host sets SG_SIZE = 32), and a 16x16 accumulator is spread over
// them as in real hardware: invocation `lane` holds elements (row lane/16 + 2i, column lane%16)
// for i < 8. A fragment is where it lies in the staged slices (its first element and the steps
// between its rows or columns and along k), and `mma` reads from there the A rows and the B
// column its invocation needs: so a slice overwritten before a product that uses it shows up as
// a wrong product, as on tensor cores. (Fragments held as copies, 128 f16 per invocation, made
// each pipeline take lavapipe's LLVM 10-20 s to build.)
enable f16;

const FRAG: u32 = 16u;
alias FragA = vec3<u32>; // element (row, k) of op(A)'s fragment at x + row·y + k·z
alias FragB = vec3<u32>; // element (k, column) of op(B)'s fragment at x + column·y + k·z
alias Acc = array<f32, 8>; // elements (lane/16 + 2i, lane%16)

// Element i of the staged slices of op(A) and op(B) (arrays of vec4<f16>).
fn staged_a(i: u32) -> f16 {
    return tile_a[i / 4u][i % 4u];
}

fn staged_b(i: u32) -> f16 {
    return tile_b[i / 4u][i % 4u];
}

fn frag_a(at: u32) -> FragA {
    return FragA(at, KS, 1u);
}

// tile_b holds op(B) by columns: element (k, n) of the fragment is at at + n·KS + k.
fn frag_b(at: u32) -> FragB {
    return FragB(at, KS, 1u);
}

// As frag_a, from a slice staged by k: element (row, k) of the fragment is at at + k·MS + row.
fn frag_a_mn(at: u32) -> FragA {
    return FragA(at, 1u, MS);
}

// As frag_b, from a slice staged by k: element (k, n) of the fragment is at at + k·MS + n.
fn frag_b_mn(at: u32) -> FragB {
    return FragB(at, 1u, MS);
}

fn mma(a: FragA, b: FragB, c: Acc) -> Acc {
    var r = c;
    let column = b.x + (lane % 16u) * b.y;
    for (var k = 0u; k < 16u; k++) {
        let bk = f32(staged_b(column + k * b.z));
        for (var i = 0u; i < 8u; i++) {
            let row = lane / 16u + 2u * i;
            r[i] = fma(f32(staged_a(a.x + row * a.y + k * a.z)), bk, r[i]);
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
