// Batched matmul: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b], op = identity or transpose.
// CPU twin: src/cpu/matmul.rs.
//
// Each 256-thread workgroup computes a 64x64 tile of C, staging 64x16 slices of A and B through
// workgroup memory; each thread accumulates a 4x4 block in registers. Any M, N, K >= 1 works:
// loads outside the matrices read zero and stores outside C are skipped. The transposes are
// pipeline constants, so each of the four variants compiles to straight-line code. With F16_INPUTS
// every operand is rounded to f16 as it is loaded (mixed precision where the adapter has no
// cooperative matrices; `matmul_coop.wgsl` is the tensor-core version).

override TRANS_A: bool = false; // A stored [K, M] instead of [M, K]
override TRANS_B: bool = false; // B stored [N, K] instead of [K, N]
override F16_INPUTS: bool = false; // round A and B to f16, accumulate in f32

struct Params {
    m: u32,
    n: u32,
    k: u32,
    stride_a: u32, // elements between batch entries of A (0: shared)
    stride_b: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<array<f32, 64>, 16>; // [k][m]
var<workgroup> tile_b: array<array<f32, 64>, 16>; // [k][n]

// The value rounded to f16 (core WGSL: no shader-f16 feature needed).
fn to_f16(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

fn load_a(base: u32, row: u32, col: u32) -> f32 {
    // Element (row of op(A), col = k index).
    if (row >= p.m || col >= p.k) {
        return 0.0;
    }
    var v = a[base + row * p.k + col];
    if (TRANS_A) {
        v = a[base + col * p.m + row];
    }
    if (F16_INPUTS) {
        v = to_f16(v);
    }
    return v;
}

fn load_b(base: u32, row: u32, col: u32) -> f32 {
    // Element (row = k index, col of op(B)).
    if (row >= p.k || col >= p.n) {
        return 0.0;
    }
    var v = b[base + row * p.n + col];
    if (TRANS_B) {
        v = b[base + col * p.k + row];
    }
    if (F16_INPUTS) {
        v = to_f16(v);
    }
    return v;
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let base_a = wg.z * p.stride_a;
    let base_b = wg.z * p.stride_b;
    let base_c = wg.z * p.m * p.n;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    let tiles = (p.k + TK - 1u) / TK;
    for (var t = 0u; t < tiles; t++) {
        let k0 = t * TK;
        // 64x16 elements per operand, 4 per thread, ordered so neighbouring threads read
        // neighbouring addresses in either storage order.
        for (var l = 0u; l < 4u; l++) {
            let flat = tid + l * 256u;
            var kk: u32;
            var mm: u32;
            if (TRANS_A) {
                kk = flat / TILE;
                mm = flat % TILE;
            } else {
                kk = flat % TK;
                mm = flat / TK;
            }
            tile_a[kk][mm] = load_a(base_a, row0 + mm, k0 + kk);
            var nn: u32;
            if (TRANS_B) {
                kk = flat % TK;
                nn = flat / TK;
            } else {
                kk = flat / TILE;
                nn = flat % TILE;
            }
            tile_b[kk][nn] = load_b(base_b, k0 + kk, col0 + nn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk][lid.y + 16u * i];
                bv[i] = tile_b[kk][lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (row < p.m && col < p.n) {
                let idx = base_c + row * p.n + col;
                var value = p.alpha * acc[i][j];
                if (p.beta != 0.0) {
                    value += p.beta * c[idx];
                }
                c[idx] = value;
            }
        }
    }
}
