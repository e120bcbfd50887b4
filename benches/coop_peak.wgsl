// The ceiling of the tensor-core kernel's inner loop (shaders/matmul_coop.wgsl), with its global
// reads, staging and barriers taken away: what the adapter's cooperative matrices give cohort's
// kernels at best, as naga, wgpu and the driver build them. benches/coop_peak.rs times it.
//
// The bench prepends the cooperative-matrix operations (`CoopOps::operations`: FRAG, FragA,
// FragB, Acc, frag_a, frag_b, mma, stash) and the constants SG_SIZE (invocations per subgroup),
// BUFFERS (staged k-slices, 2 as the kernel double-buffers, 1 where that does not fit) and
// LEVEL. The workgroup is the kernel's big layout: 4 x 2 subgroups, each with 2 x 4
// accumulators, over k-slices of 32 staged as the kernel stages k-contiguous operands (rows KS
// apart). Each of `steps[0]` steps multiplies 2 A fragments by 4 B fragments into the 8
// accumulators, and each LEVEL adds one more of the kernel's costs:
//   0  the fragments stay in registers: the step is the 8 products alone;
//   1  the step first loads its 6 fragments from the staged slices, walking them as the
//      kernel's k-steps do (the loads then cannot leave the loop);
//   2  and a workgroup barrier closes each k-slice, as in the kernel;
//   3  and before it each invocation stores its share of the next k-slice of both operands into
//      the other buffer, four values a store, as the kernel stages (its global reads aside).
//
// Every staged value is 1, so each accumulator element ends at steps·FRAG exactly (in f32 below
// 2^24): every invocation counts the elements of its subgroup's accumulators that do, and adds
// its count to `correct[0]`. The bench checks the total, so a configuration that silently
// computes nothing (as unlisted cooperative-matrix configurations do) fails instead of timing.

const SG_ROWS: u32 = 4u;
const SG_COLS: u32 = 2u;
const SUBGROUPS: u32 = SG_ROWS * SG_COLS;
const THREADS: u32 = SG_SIZE * SUBGROUPS;
const TILE: u32 = FRAG * 2u * SG_ROWS; // rows of op(A) staged, = FRAG * 4 * SG_COLS columns of op(B)
const TK: u32 = 32u; // k per staged slice
const KS: u32 = TK + 8u; // row stride of the staged slices, in f16, as in the kernel
const MS: u32 = TILE + 8u; // the stride of slices staged by k (unused here; the operations name it)
const SLICE: u32 = TILE * KS / 4u; // one staged slice of one operand, in vec4s

var<workgroup> tile_a: array<vec4<f16>, BUFFERS * SLICE>;
var<workgroup> tile_b: array<vec4<f16>, BUFFERS * SLICE>;
var<workgroup> out_tile: array<f32, FRAG * FRAG * SUBGROUPS>; // a staging tile per subgroup
var<private> lane: u32; // this invocation's index in its subgroup

@group(0) @binding(0) var<storage, read> steps: array<u32>;
@group(0) @binding(1) var<storage, read_write> correct: array<atomic<u32>>;

// Where the fragment at row (or column) r, k-offset k of staged slice `buf` starts, in f16.
fn staged(buf: u32, r: u32, k: u32) -> u32 {
    return (buf * TILE + r) * KS + k;
}

// How many of this invocation's share of `acc`'s elements equal `expected`, through the
// subgroup's staging tile (uniform control flow: every invocation calls it alike). The matrix
// comes last: declared (acc, sg, expected), no element ever equalled `expected` on Mesa 26.2's
// lavapipe, though their sum showed every one right; naga's SPIR-V passes the three in order,
// so that driver mishandled the scalars of that signature (matmul_coop's stash(acc, at), a
// matrix then one u32, works there).
fn count_correct(expected: f32, sg: u32, acc: Acc) -> u32 {
    let at = sg * FRAG * FRAG;
    workgroupBarrier(); // the previous accumulator's reads are done
    stash(acc, at);
    workgroupBarrier();
    var good = 0u;
    for (var e = lane; e < FRAG * FRAG; e += SG_SIZE) {
        good += u32(out_tile[at + e] == expected);
    }
    return good;
}

@compute @workgroup_size(THREADS)
fn main(@builtin(local_invocation_index) tid: u32) {
    for (var i = tid; i < BUFFERS * SLICE; i += THREADS) {
        tile_a[i] = vec4<f16>(1.0h);
        tile_b[i] = vec4<f16>(1.0h);
    }
    workgroupBarrier();
    lane = tid % SG_SIZE;
    let sg = tid / SG_SIZE;
    let row = (sg / SG_COLS) * 2u * FRAG;
    let col = (sg % SG_COLS) * 4u * FRAG;
    var a0 = frag_a(staged(0u, row, 0u));
    var a1 = frag_a(staged(0u, row + FRAG, 0u));
    var b0 = frag_b(staged(0u, col, 0u));
    var b1 = frag_b(staged(0u, col + FRAG, 0u));
    var b2 = frag_b(staged(0u, col + 2u * FRAG, 0u));
    var b3 = frag_b(staged(0u, col + 3u * FRAG, 0u));
    var c0: Acc;
    var c1: Acc;
    var c2: Acc;
    var c3: Acc;
    var c4: Acc;
    var c5: Acc;
    var c6: Acc;
    var c7: Acc;
    let n = steps[0];
    for (var t = 0u; t < n; t++) {
        let buf = (t / (TK / FRAG)) % BUFFERS;
        let k = (t % (TK / FRAG)) * FRAG;
        if (LEVEL >= 1u) {
            a0 = frag_a(staged(buf, row, k));
            a1 = frag_a(staged(buf, row + FRAG, k));
            b0 = frag_b(staged(buf, col, k));
            b1 = frag_b(staged(buf, col + FRAG, k));
            b2 = frag_b(staged(buf, col + 2u * FRAG, k));
            b3 = frag_b(staged(buf, col + 3u * FRAG, k));
        }
        c0 = mma(a0, b0, c0);
        c1 = mma(a0, b1, c1);
        c2 = mma(a0, b2, c2);
        c3 = mma(a0, b3, c3);
        c4 = mma(a1, b0, c4);
        c5 = mma(a1, b1, c5);
        c6 = mma(a1, b2, c6);
        c7 = mma(a1, b3, c7);
        if (LEVEL >= 2u && k + FRAG == TK) {
            if (LEVEL >= 3u) {
                if (BUFFERS == 1u) {
                    workgroupBarrier(); // one buffer: its loads are done before it is rewritten
                }
                let next = ((buf + 1u) % BUFFERS) * SLICE;
                for (var i = tid; i < SLICE; i += THREADS) {
                    tile_a[next + i] = vec4<f16>(1.0h);
                    tile_b[next + i] = vec4<f16>(1.0h);
                }
            }
            workgroupBarrier();
        }
    }
    let expected = f32(n * FRAG);
    var good = count_correct(expected, sg, c0);
    good += count_correct(expected, sg, c1);
    good += count_correct(expected, sg, c2);
    good += count_correct(expected, sg, c3);
    good += count_correct(expected, sg, c4);
    good += count_correct(expected, sg, c5);
    good += count_correct(expected, sg, c6);
    good += count_correct(expected, sg, c7);
    atomicAdd(&correct[0], good);
}
