// Batched matmul for narrow products: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b] where C
// has at most 16 columns (a classifier's output layer and its weight gradient: N = the classes),
// with matmul.wgsl's entries, epilogues and bindings (include/matmul_io.wgsl).
// CPU twins: src/cpu/matmul.rs, then src/cpu/bias_act.rs.
//
// matmul.wgsl's 64x64 tiles leave most of their threads idle on such products and give them
// few workgroups (a 256x10 C is four tiles), so it splits K and sums the splits in a second
// dispatch. Here each 256-thread workgroup owns ROWS whole rows of C and spreads K over its
// threads instead: LANES = 256 / ROWS lanes per row, lane l summing the k = l (mod LANES) terms
// of its row for every column, then a tree over workgroup memory adds the lanes' sums. The lanes
// of a row are neighbouring threads where A is stored [M, K] (they read neighbouring k), the
// rows are where A is stored [K, M] (they read neighbouring rows); the host picks ROWS (4, 8 or
// 16) to give the GPU enough workgroups. B is read CHUNK values of k at a time, once per
// workgroup and side by side, into workgroup memory as vec4s of columns, STRIDE (odd) vec4s
// per k, so that lanes reading neighbouring k's vec4s hit different banks. Any M, K >= 1 and N
// from 1 to 16 work: rows past M read zero and are not stored; k past K is staged as zero.

override TRANS_A: bool = false; // A stored [K, M] instead of [M, K]
override TRANS_B: bool = false; // B stored [N, K] instead of [K, N]
override F16_INPUTS: bool = false; // round A and B to f16, accumulate in f32
override ROWS: u32 = 4u; // rows of C per workgroup: 4, 8 or 16
override COLS: u32 = 16u; // N, 1 to 16 (a constant, so that dividing by it is cheap)
// k values staged per round: a multiple of LANES, at most 8 * LANES (a lane's loop over them is
// meant to be unrolled), and CHUNK * STRIDE at most SHARED (the host chooses it).
override CHUNK: u32 = 128u;
override LANES: u32 = 256u / ROWS; // (derived, never set)
override COL_QUADS: u32 = (COLS + 3u) / 4u; // vec4s of sums per row (derived, never set)
override STRIDE: u32 = COL_QUADS + 1u - COL_QUADS % 2u; // odd (derived, never set)
// Params, bindings, a_at / b_at, product and the epilogues: shaders/include/matmul_io.wgsl.

const SHARED: u32 = 1024u; // vec4s of workgroup memory: 16 KiB, WebGPU's least limit
// A round's B, [k][STRIDE vec4s of columns]; after the last round, the lanes' sums,
// [row][COL_QUADS][LANES].
var<workgroup> shared4: array<vec4<f32>, SHARED>;

// The value rounded to f16 when F16_INPUTS (no f16 shaders needed: include/f16_rounding.wgsl).
fn input_rounding(v: f32) -> f32 {
    if (!F16_INPUTS) {
        return v;
    }
    return round_to_f16(vec4<f32>(v)).x;
}

// This thread's (row within the workgroup, lane).
fn thread_place(tid: u32) -> vec2<u32> {
    if (TRANS_A) {
        return vec2<u32>(tid % ROWS, tid / ROWS);
    }
    return vec2<u32>(tid / LANES, tid % LANES);
}

// Element (row, k) of op(A); zero past M or K.
fn load_a(base: u32, row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) {
        return 0.0;
    }
    return input_rounding(f32(a[a_at(base, row, k)]));
}

// B's rows k0 .. k0 + CHUNK into workgroup memory (zero past K), a vec4 of columns at a time,
// the vec4s taken in B's stored order so that neighbouring threads read neighbouring addresses.
fn stage_b(base: u32, k0: u32, tid: u32) {
    for (var u = tid; u < CHUNK * COL_QUADS; u += 256u) {
        let kk = select(u / COL_QUADS, u % CHUNK, TRANS_B);
        let q = select(u % COL_QUADS, u / CHUNK, TRANS_B);
        var v = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let col = 4u * q + e;
            if (k0 + kk < p.k && col < COLS) {
                v[e] = input_rounding(f32(b[b_at(base, k0 + kk, col)]));
            }
        }
        shared4[kk * STRIDE + q] = v;
    }
}

// This thread's sums of its row of op(A)·op(B) (batch entry wg.z, row wg.x · ROWS + place.x) over
// its lane's k, one vec4 per four columns. Every thread of the workgroup must call it.
fn lane_sums(wg: vec3<u32>, place: vec2<u32>, tid: u32) -> array<vec4<f32>, 4> {
    let row = wg.x * ROWS + place.x;
    let base_a = wg.z * p.stride_a;
    let base_b = wg.z * p.stride_b;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += CHUNK) {
        workgroupBarrier(); // everyone is done with the last round's B
        stage_b(base_b, k0, tid);
        workgroupBarrier();
        for (var i = 0u; i < CHUNK / LANES; i++) {
            let kk = place.y + i * LANES;
            let av = vec4<f32>(load_a(base_a, row, k0 + kk));
            for (var q = 0u; q < COL_QUADS; q++) {
                acc[q] = fma(av, shared4[kk * STRIDE + q], acc[q]);
            }
        }
    }
    return acc;
}

// The row's sums over every lane, in lane 0's `acc` (the other lanes' end partial). Every
// thread of the workgroup must call it.
fn add_lanes(acc: ptr<function, array<vec4<f32>, 4>>, place: vec2<u32>) {
    let row_at = place.x * COL_QUADS * LANES + place.y;
    workgroupBarrier(); // everyone is done with the last round's B
    for (var q = 0u; q < COL_QUADS; q++) {
        shared4[row_at + q * LANES] = (*acc)[q];
    }
    for (var half = LANES / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (place.y < half) {
            for (var q = 0u; q < COL_QUADS; q++) {
                let sum = (*acc)[q] + shared4[row_at + q * LANES + half];
                (*acc)[q] = sum;
                shared4[row_at + q * LANES] = sum;
            }
        }
    }
}

// A thread's row of C after add_lanes: lane 0 of a row inside C holds its sums over the whole of
// K (`holder`); the other threads have nothing to store.
struct RowSums {
    acc: array<vec4<f32>, 4>,
    row: u32,
    holder: bool,
}

// This thread's RowSums. Every thread of the workgroup must call it.
fn row_sums(wg: vec3<u32>, tid: u32) -> RowSums {
    let place = thread_place(tid);
    var acc = lane_sums(wg, place, tid);
    add_lanes(&acc, place);
    let row = wg.x * ROWS + place.x;
    return RowSums(acc, row, place.y == 0u && row < p.m);
}

// Where column `col` of this thread's row goes in C: (index, whether this thread stores it).
fn c_place(wg: vec3<u32>, sums: ptr<function, RowSums>, col: u32) -> vec2<u32> {
    let at = (wg.z * p.m + (*sums).row) * p.n + col;
    return vec2<u32>(at, u32((*sums).holder && col < COLS));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    var sums = row_sums(wg, tid);
    for (var q = 0u; q < COL_QUADS; q++) {
        let v = sums.acc[q];
        for (var e = 0u; e < 4u; e++) {
            let at = c_place(wg, &sums, 4u * q + e);
            if (at.y != 0u) {
                c[at.x] = product(at.x, v[e]);
            }
        }
    }
}

// As `main`, writing through the epilogue (only the epilogue entries bind `bias` and `aux`).
fn write_with_epilogue(wg: vec3<u32>, tid: u32, epilogue: u32) {
    var sums = row_sums(wg, tid);
    for (var q = 0u; q < COL_QUADS; q++) {
        let v = sums.acc[q];
        for (var e = 0u; e < 4u; e++) {
            let at = c_place(wg, &sums, 4u * q + e);
            if (at.y != 0u) {
                write_epilogue(wg.z, at.x, v[e], epilogue);
            }
        }
    }
}

@compute @workgroup_size(256)
fn main_bias_act(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    write_with_epilogue(wg, tid, BIAS_ACT);
}

@compute @workgroup_size(256)
fn main_act_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    write_with_epilogue(wg, tid, ACT_GRAD);
}
