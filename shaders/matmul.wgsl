// Batched matmul: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b], op = identity or transpose.
// Entry `main_bias_act` also writes Y[b] = act(C[b] + bias[b]) in the same pass: the forward of a
// layer in one dispatch, keeping C (before the bias) for the backward. Entry `main_act_grad`
// multiplies the product by act'(pre[b] + bias[b]): dX·Wᵀ turned into the previous layer's
// pre-activation gradient in the same pass.
// CPU twins: src/cpu/matmul.rs, then src/cpu/bias_act.rs.
//
// Each 256-thread workgroup computes a TILE x TILE tile of C (TILE = 64, or 128 when the host is
// told to: a pipeline constant), staging TILE x 16 slices of A and B through two buffers of
// workgroup memory (one barrier per slice; SLICE_BUFFERS), each read into registers one slice
// ahead (two with PREFETCH 2, a candidate); each thread accumulates a MICRO x
// MICRO block (MICRO = TILE / 16) in registers, as MICRO rows of QUADS vec4s: runs of four rows
// (columns) from row 4·lid.y (column 4·lid.x), repeated every 64, so that every
// workgroup-memory read is a vec4 that neighbouring threads take side by side or share.
// Any M, N, K >= 1 works:
// loads outside the matrices read zero and stores outside C are skipped. The transposes are
// pipeline constants, so each of the four variants compiles to straight-line code. With F16_INPUTS
// every operand is rounded to f16 as it is loaded (mixed precision where the adapter has no
// cooperative matrices; `matmul_coop.wgsl` is the tensor-core version). A and B may also be
// stored as f16 (include/matmul_io.wgsl), and are widened as they are loaded. A product with too
// few tiles to fill the GPU is split along K (include/matmul_io.wgsl): partial products, then
// one of the `reduce_splits*` entries below, which also finish matmul_coop.wgsl's split products.

override TRANS_A: bool = false; // A stored [K, M] instead of [M, K]
override TRANS_B: bool = false; // B stored [N, K] instead of [K, N]
override F16_INPUTS: bool = false; // round A and B to f16, accumulate in f32
override TILE: u32 = 64u; // 64 or 128: the C tile per workgroup
override MICRO: u32 = TILE / 16u; // per-thread block: 4 or 8 (derived, never set)
override QUADS: u32 = MICRO / 4u; // vec4s per accumulator row: 1 or 2 (derived, never set)
// Load A (B) from global memory as vec4s along its contiguous axis: the host sets it when that
// axis's length is a multiple of 4 (K for A as stored [M, K], M for A stored [K, M]; N for B
// stored [K, N], K for B stored [N, K]), so a vec4 is wholly inside the matrix or wholly outside.
override VEC_A: bool = false;
override VEC_B: bool = false;
// Params, bindings, a_at / b_at, product and the epilogues: shaders/include/matmul_io.wgsl.

const TK: u32 = 16u;
const MAX_MICRO: u32 = 8u;
const ACC_LEN: u32 = 16u; // accumulator vec4s at most: MAX_MICRO rows of MAX_MICRO / 4
// An accumulator vec4 (the name include/constant_index.wgsl reads entries of; an array of
// plain vec4<f32> would be another type to naga).
alias Indexed = vec4<f32>;

// Workgroup buffers per operand: 2 (the slice multiplied and the next one, one barrier per
// slice), or 1 (the next slice waits for everyone to finish the current one: two barriers per
// slice, as before 2026-11-30; kept to measure the difference).
override SLICE_BUFFERS: u32 = 2u;
// k-slices read ahead into registers: 1 (the next, read while the current one is multiplied)
// or 2 (the next two, in two register sets that take turns, so that each read has two slices'
// products to arrive; only with two buffers, see `tile_product`).
override PREFETCH: u32 = 1u;
// SLICE_BUFFERS buffers per operand of [k][m] ([k][n]), four m (n) per entry. (Lengths named:
// naga 30 panics on pipelines whose workgroup arrays have more than one unnamed
// override-expression length.)
override SLICE: u32 = TK * TILE / 4u; // vec4 entries of one buffer (derived, never set)
override STAGED: u32 = SLICE_BUFFERS * SLICE; // (derived, never set)
var<workgroup> tile_a: array<vec4<f32>, STAGED>;
var<workgroup> tile_b: array<vec4<f32>, STAGED>;

// Row (column) within the tile of this thread's i-th accumulator row (column); t = lid.y (lid.x).
fn micro_offset(t: u32, i: u32) -> u32 {
    return (i / 4u) * 64u + t * 4u + i % 4u;
}

// The values rounded to f16 when F16_INPUTS (no f16 shaders needed: include/f16_rounding.wgsl).
fn input_rounding(v: vec4<f32>) -> vec4<f32> {
    if (!F16_INPUTS) {
        return v;
    }
    return round_to_f16(v);
}

// Element (row, k) of op(A); zero outside the matrix.
fn load_a(base: u32, row: u32, col: u32) -> f32 {
    if (row >= p.m || col >= p.k) {
        return 0.0;
    }
    return input_rounding(vec4<f32>(f32(a[a_at(base, row, col)]))).x;
}

// Element (k, column) of op(B); zero outside the matrix.
fn load_b(base: u32, row: u32, col: u32) -> f32 {
    if (row >= p.k || col >= p.n) {
        return 0.0;
    }
    return input_rounding(vec4<f32>(f32(b[b_at(base, row, col)]))).x;
}

// Four consecutive elements of op(A) from (row, k): along k as stored [M, K], along rows as
// stored [K, M]. Zero outside the matrix (VEC_A makes it all or nothing).
fn load_a4(base: u32, row: u32, col: u32) -> vec4<f32> {
    if (row >= p.m || col >= p.k) {
        return vec4<f32>(0.0);
    }
    return input_rounding(vec4<f32>(a4[a_at(base, row, col) / 4u]));
}

// Four consecutive elements of op(B) from (k, column): along columns as stored [K, N], along k
// as stored [N, K].
fn load_b4(base: u32, row: u32, col: u32) -> vec4<f32> {
    if (row >= p.k || col >= p.n) {
        return vec4<f32>(0.0);
    }
    return input_rounding(vec4<f32>(b4[b_at(base, row, col) / 4u]));
}

// A k-slice of one operand is TILE x 16 elements, staged by the 256 threads in units of one
// element, or of four along the stored contiguous axis with VEC_A / VEC_B: TILE / 16 or TILE / 64
// units per thread, ordered so that neighbouring threads read neighbouring addresses.
fn units(vec: bool) -> u32 {
    return select(TILE / 16u, TILE / 64u, vec);
}

// Where unit l of this thread starts in a k-slice: (k, row of op(A)) for A.
fn place_a(l: u32, tid: u32) -> vec2<u32> {
    let flat = tid + l * 256u;
    if (VEC_A) {
        if (TRANS_A) {
            return vec2<u32>(flat / (TILE / 4u), (flat % (TILE / 4u)) * 4u);
        }
        return vec2<u32>((flat % 4u) * 4u, flat / 4u);
    }
    if (TRANS_A) {
        return vec2<u32>(flat / TILE, flat % TILE);
    }
    return vec2<u32>(flat % TK, flat / TK);
}

// Where unit l of this thread starts in a k-slice: (k, column of op(B)) for B.
fn place_b(l: u32, tid: u32) -> vec2<u32> {
    let flat = tid + l * 256u;
    if (VEC_B) {
        if (TRANS_B) {
            return vec2<u32>((flat % 4u) * 4u, flat / 4u);
        }
        return vec2<u32>(flat / (TILE / 4u), (flat % (TILE / 4u)) * 4u);
    }
    if (TRANS_B) {
        return vec2<u32>(flat % TK, flat / TK);
    }
    return vec2<u32>(flat / TILE, flat % TILE);
}

// This thread's share of a k-slice, in registers, per operand: in vec4 mode unit l is entry l;
// in scalar mode element l is component l % 4 of entry l / 4.
struct Slice {
    a: array<vec4<f32>, 2>,
    b: array<vec4<f32>, 2>,
}

// Loads this thread's share of the k-slice starting at k0 into registers.
fn fetch_slice(
    next: ptr<function, Slice>,
    base_a: u32,
    base_b: u32,
    row0: u32,
    col0: u32,
    k0: u32,
    tid: u32,
) {
    for (var l = 0u; l < units(VEC_A); l++) {
        let at = place_a(l, tid);
        if (VEC_A) {
            (*next).a[l] = load_a4(base_a, row0 + at.y, k0 + at.x);
        } else {
            (*next).a[l / 4u][l % 4u] = load_a(base_a, row0 + at.y, k0 + at.x);
        }
    }
    for (var l = 0u; l < units(VEC_B); l++) {
        let at = place_b(l, tid);
        if (VEC_B) {
            (*next).b[l] = load_b4(base_b, k0 + at.x, col0 + at.y);
        } else {
            (*next).b[l / 4u][l % 4u] = load_b(base_b, k0 + at.x, col0 + at.y);
        }
    }
}

// Writes the registers of fetch_slice into workgroup buffer `buf`: tile[k][m or n]. A vec4
// along the tile's rows (A stored [K, M], B stored [K, N]) is one store; along k, four.
fn store_slice(next: ptr<function, Slice>, buf: u32, tid: u32) {
    let base = buf * SLICE;
    for (var l = 0u; l < units(VEC_A); l++) {
        let at = place_a(l, tid); // (k, row)
        if (VEC_A && TRANS_A) {
            tile_a[base + (at.x * TILE + at.y) / 4u] = (*next).a[l];
        } else if (VEC_A) {
            let v = (*next).a[l];
            for (var e = 0u; e < 4u; e++) {
                tile_a[base + ((at.x + e) * TILE + at.y) / 4u][at.y % 4u] = v[e];
            }
        } else {
            tile_a[base + (at.x * TILE + at.y) / 4u][at.y % 4u] = (*next).a[l / 4u][l % 4u];
        }
    }
    for (var l = 0u; l < units(VEC_B); l++) {
        let at = place_b(l, tid); // (k, column)
        if (VEC_B && !TRANS_B) {
            tile_b[base + (at.x * TILE + at.y) / 4u] = (*next).b[l];
        } else if (VEC_B) {
            let v = (*next).b[l];
            for (var e = 0u; e < 4u; e++) {
                tile_b[base + ((at.x + e) * TILE + at.y) / 4u][at.y % 4u] = v[e];
            }
        } else {
            tile_b[base + (at.x * TILE + at.y) / 4u][at.y % 4u] = (*next).b[l / 4u][l % 4u];
        }
    }
}

// The tile of op(A)·op(B) for this workgroup: this thread's MICRO x MICRO block, in the first
// MICRO·QUADS vec4s, row-major: vec4 f holds row micro_offset(lid.y, f / QUADS), columns
// micro_offset(lid.x, 4·(f % QUADS) + 0..3), which are consecutive.
fn tile_product(wg: vec3<u32>, lid: vec3<u32>, tid: u32) -> array<Indexed, ACC_LEN> {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let base_a = batch_entry(wg.z) * p.stride_a;
    let base_b = batch_entry(wg.z) * p.stride_b;
    let ks = k_range(wg.z);

    var acc: array<Indexed, ACC_LEN>; // zero-initialised

    // The next k-slice's operands are loaded from global memory into registers while the
    // current one is multiplied out of workgroup memory, then stored: with two buffers to the
    // other one, which every thread finished reading before the previous barrier (one barrier
    // per slice); with one, after a barrier that waits for everyone to finish reading it.
    // With PREFETCH 2 (two buffers) the next two are in flight: `next` holds the slice after
    // each even slice, `later` the one after each odd slice; slice t's step first stores its
    // set (slice t + 1) to the other buffer, then reads slice t + 3 into it.
    var next: Slice;
    var later: Slice;
    fetch_slice(&next, base_a, base_b, row0, col0, ks.x, tid);
    store_slice(&next, 0u, tid);
    let tiles = (ks.y - ks.x + TK - 1u) / TK;
    if (PREFETCH == 2u) {
        if (tiles > 1u) {
            fetch_slice(&next, base_a, base_b, row0, col0, ks.x + TK, tid);
        }
        if (tiles > 2u) {
            fetch_slice(&later, base_a, base_b, row0, col0, ks.x + 2u * TK, tid);
        }
    }
    workgroupBarrier();
    for (var t = 0u; t < tiles; t++) {
        let buf = t % SLICE_BUFFERS;
        let more = t + 1u < tiles;
        if (PREFETCH == 1u && more) {
            let k0 = ks.x + (t + 1u) * TK;
            fetch_slice(&next, base_a, base_b, row0, col0, k0, tid);
        }
        if (PREFETCH == 2u) {
            let ahead = t + 3u < tiles;
            let k0 = ks.x + (t + 3u) * TK;
            if (t % 2u == 0u) {
                if (more) {
                    store_slice(&next, 1u - buf, tid);
                }
                if (ahead) {
                    fetch_slice(&next, base_a, base_b, row0, col0, k0, tid);
                }
            } else {
                if (more) {
                    store_slice(&later, 1u - buf, tid);
                }
                if (ahead) {
                    fetch_slice(&later, base_a, base_b, row0, col0, k0, tid);
                }
            }
        }
        let base = buf * SLICE;
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<vec4<f32>, MAX_MICRO / 4u>;
            var bv: array<vec4<f32>, MAX_MICRO / 4u>;
            for (var q = 0u; q < MICRO / 4u; q++) {
                av[q] = tile_a[base + kk * (TILE / 4u) + q * 16u + lid.y];
                bv[q] = tile_b[base + kk * (TILE / 4u) + q * 16u + lid.x];
            }
            for (var i = 0u; i < MICRO; i++) {
                let a_i = vec4<f32>(av[i / 4u][i % 4u]);
                for (var q = 0u; q < QUADS; q++) {
                    acc[i * QUADS + q] = fma(a_i, bv[q], acc[i * QUADS + q]);
                }
            }
        }
        if (PREFETCH == 1u && more) {
            if (SLICE_BUFFERS == 1u) {
                workgroupBarrier();
            }
            store_slice(&next, (t + 1u) % SLICE_BUFFERS, tid);
        }
        workgroupBarrier();
    }

    return acc;
}

// Where accumulator e (row-major in the thread's MICRO x MICRO block) goes in C (or in its
// split's slice of partial products): (index, whether it is inside C).
fn c_place(wg: vec3<u32>, lid: vec3<u32>, e: u32) -> vec2<u32> {
    let row = wg.y * TILE + micro_offset(lid.y, e / MICRO);
    let col = wg.x * TILE + micro_offset(lid.x, e % MICRO);
    return vec2<u32>(wg.z * p.m * p.n + row * p.n + col, u32(row < p.m && col < p.n));
}

// Stores this thread's MICRO x MICRO block of C: the product, alpha·acc (+ beta·C). The
// accumulators are read through include/constant_index.wgsl's indexed_get: this loop (64
// elements long when it indexed them one by one) is one the driver may not unroll, and an
// accumulator array indexed with its counter would live in local memory, in the product loop
// too: the suspected reason the 128 tile ran 18x slower than the 64 one on the H200
// (BENCHMARKS.md).
fn store_block(
    wg: vec3<u32>,
    lid: vec3<u32>,
    acc: ptr<function, array<Indexed, ACC_LEN>>,
) {
    for (var f = 0u; f < MICRO * QUADS; f++) {
        let v = indexed_get(acc, f);
        let e0 = (f / QUADS) * MICRO + (f % QUADS) * 4u; // its first element, row-major
        for (var i = 0u; i < 4u; i++) {
            let at = c_place(wg, lid, e0 + i);
            if (at.y != 0u) {
                c[at.x] = product(at.x, v[i]);
            }
        }
    }
}

// The epilogue on this thread's block of C, which already holds the product (its own writes).
// The epilogue entries apply it in this second pass, not in store_block's loop: the accumulators
// stay in registers only where the driver unrolls every loop that indexes them, and a loop that
// also evaluates the activation is longer. (The H200 ran the epilogue entries of the 64 tile, as
// one loop, about ten times slower than `main`, as slow as the 128 tile whose 64-element loops
// are long too: a driver that keeps the accumulators in local memory is the suspect.)
fn finish_block(wg: vec3<u32>, lid: vec3<u32>, epilogue: u32) {
    for (var e = 0u; e < MICRO * MICRO; e++) {
        let at = c_place(wg, lid, e);
        if (at.y != 0u) {
            epilogue_at(wg.z, at.x, c[at.x], epilogue);
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    var acc = tile_product(wg, lid, tid);
    store_block(wg, lid, &acc);
}

@compute @workgroup_size(16, 16, 1)
fn main_bias_act(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    var acc = tile_product(wg, lid, tid);
    store_block(wg, lid, &acc);
    finish_block(wg, lid, BIAS_ACT);
}

@compute @workgroup_size(16, 16, 1)
fn main_act_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    var acc = tile_product(wg, lid, tid);
    store_block(wg, lid, &acc);
    finish_block(wg, lid, ACT_GRAD);
}

// Split K, second pass (see include/matmul_io.wgsl): C = alpha · (the sum of the splits' partial
// products) + beta · C, then the epilogue; one thread per element of C, on a 2D grid of
// 256-wide workgroups. (The plain entry must not touch the epilogue's bindings.)
@group(0) @binding(8) var<storage, read> partial: array<f32>; // [splits, batch, M, N]

// This thread's element of C, or none (false) past its end.
fn reduce_element(gid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let i = gid.x + gid.y * nwg.x * 256u;
    return vec2<u32>(i, u32(i < p.batch * p.m * p.n));
}

// The sum of the splits' partial products at element i of C.
fn split_sum(i: u32) -> f32 {
    let total = p.batch * p.m * p.n;
    let splits = (p.k + p.k_split - 1u) / p.k_split;
    var acc = 0.0;
    for (var s = 0u; s < splits; s++) {
        acc += partial[s * total + i];
    }
    return acc;
}

@compute @workgroup_size(256)
fn reduce_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let at = reduce_element(gid, nwg);
    if (at.y != 0u) {
        c[at.x] = product(at.x, split_sum(at.x));
    }
}

@compute @workgroup_size(256)
fn reduce_splits_bias_act(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let at = reduce_element(gid, nwg);
    if (at.y != 0u) {
        write_epilogue(at.x / (p.m * p.n), at.x, split_sum(at.x), BIAS_ACT);
    }
}

@compute @workgroup_size(256)
fn reduce_splits_act_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let at = reduce_element(gid, nwg);
    if (at.y != 0u) {
        write_epilogue(at.x / (p.m * p.n), at.x, split_sum(at.x), ACT_GRAD);
    }
}
