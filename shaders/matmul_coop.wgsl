// Tensor-core batched matmul: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b] with A and B rounded
// to f16 and f32 accumulation, through cooperative matrices (16x16 f16 A/B, f32 C).
// CPU twin: src/cpu/matmul.rs with f16 inputs. Chosen by the host only where the adapter lists the
// 16x16x16 f16 -> f32 configuration and subgroups are exactly 32 wide; elsewhere `matmul.wgsl`
// with F16_INPUTS computes the same product.
//
// A 128-thread workgroup (4 subgroups of 32) computes a 64x64 tile of C. Each step stages a 64x32
// slice of op(A) and a 32x64 slice of op(B) into workgroup memory as f16 (zero outside the
// matrices, so any shape works), then every subgroup multiplies its 32x32 quarter as 2x2
// accumulators. Cooperative loads and stores touch workgroup memory only, with literal strides
// (naga 30 mis-compiles them on storage pointers with runtime strides). The accumulators leave
// through a per-subgroup 16x16 staging tile, with bounds checks and alpha/beta, to C.

enable f16;
enable wgpu_cooperative_matrix;

override TRANS_A: bool = false; // A stored [K, M] instead of [M, K]
override TRANS_B: bool = false; // B stored [N, K] instead of [K, N]

struct Params {
    m: u32,
    n: u32,
    k: u32,
    stride_a: u32,
    stride_b: u32,
    alpha: f32,
    beta: f32,
    act: u32,         // unused here: the fused epilogue lives in matmul.wgsl
    bias_stride: u32, // unused here
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 32u;
const THREADS: u32 = 128u;

var<workgroup> tile_a: array<f16, 2048>; // [64 rows][32 k], row-major
var<workgroup> tile_b: array<f16, 2048>; // [32 k][64 cols], row-major
var<workgroup> out_tile: array<f32, 1024>; // a 16x16 tile per subgroup

fn load_a(base: u32, row: u32, col: u32) -> f32 {
    if (row >= p.m || col >= p.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[base + col * p.m + row];
    }
    return a[base + row * p.k + col];
}

fn load_b(base: u32, row: u32, col: u32) -> f32 {
    if (row >= p.k || col >= p.n) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[base + col * p.k + row];
    }
    return b[base + row * p.n + col];
}

// Writes the accumulator for rows r0.. and columns c0.. of C through the subgroup's staging tile.
fn write_out(acc: coop_mat16x16<f32, C>, sg: u32, lane: u32, base_c: u32, r0: u32, c0: u32) {
    coopStoreT(acc, &out_tile[sg * 256u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let row = r0 + e / 16u;
        let col = c0 + e % 16u;
        if (row < p.m && col < p.n) {
            let idx = base_c + row * p.n + col;
            var value = p.alpha * out_tile[sg * 256u + e];
            if (p.beta != 0.0) {
                value += p.beta * c[idx];
            }
            c[idx] = value;
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let base_a = wg.z * p.stride_a;
    let base_b = wg.z * p.stride_b;
    let base_c = wg.z * p.m * p.n;
    let sg = tid / 32u;
    let lane = tid % 32u;
    let sub_row = (sg / 2u) * 32u;
    let sub_col = (sg % 2u) * 32u;

    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();

    let steps = (p.k + TK - 1u) / TK;
    for (var t = 0u; t < steps; t++) {
        let k0 = t * TK;
        for (var l = 0u; l < 16u; l++) {
            let flat = tid + l * THREADS;
            var kk: u32;
            var mm: u32;
            if (TRANS_A) {
                kk = flat / TILE;
                mm = flat % TILE;
            } else {
                kk = flat % TK;
                mm = flat / TK;
            }
            tile_a[mm * TK + kk] = f16(load_a(base_a, row0 + mm, k0 + kk));
            var nn: u32;
            if (TRANS_B) {
                kk = flat % TK;
                nn = flat / TK;
            } else {
                kk = flat / TILE;
                nn = flat % TILE;
            }
            tile_b[kk * TILE + nn] = f16(load_b(base_b, k0 + kk, col0 + nn));
        }
        workgroupBarrier();
        for (var ks = 0u; ks < TK; ks += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&tile_a[sub_row * TK + ks], 32u);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&tile_a[(sub_row + 16u) * TK + ks], 32u);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[ks * TILE + sub_col], 64u);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[ks * TILE + sub_col + 16u], 64u);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        workgroupBarrier();
    }

    write_out(acc00, sg, lane, base_c, row0 + sub_row, col0 + sub_col);
    write_out(acc01, sg, lane, base_c, row0 + sub_row, col0 + sub_col + 16u);
    write_out(acc10, sg, lane, base_c, row0 + sub_row + 16u, col0 + sub_col);
    write_out(acc11, sg, lane, base_c, row0 + sub_row + 16u, col0 + sub_col + 16u);
}
