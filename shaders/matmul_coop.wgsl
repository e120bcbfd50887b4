// Tensor-core batched matmul: C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b], with A and B
// in f16 (stored so, or rounded as they are loaded) and f32 accumulation, through cooperative
// matrices. Entries `main_bias_act` and `main_act_grad` add the fused epilogues of matmul.wgsl
// (the bindings, operand types and epilogues are shared: include/matmul_io.wgsl).
// CPU twins: src/cpu/matmul.rs with f16 inputs, then src/cpu/bias_act.rs.
//
// The host prepends the cooperative-matrix operations: the types FragA, FragB and Acc (FRAG x FRAG
// fragments of op(A) and op(B) and an f32 accumulator, one per subgroup) and the functions frag_a,
// frag_b (fragments staged k-contiguous), frag_a_mn, frag_b_mn (staged m- or n-contiguous), mma
// and stash. On the adapter's cooperative matrices the types come from `shaders/include/coop16.wgsl`
// or `coop8.wgsl` and the functions from `coop_ops.wgsl`; `coop_emulated.wgsl` writes both out in
// plain WGSL, so that this kernel's tiling, staging and epilogues are checked on adapters without
// any.
//
// A workgroup of SG_ROWS x SG_COLS subgroups (SG_SIZE invocations each) computes a TILE x TILE
// tile of C; each subgroup owns FR x FC accumulators (TILE = FRAG·FR·SG_ROWS = FRAG·FC·SG_COLS).
// Each k-step stages a TILE x TK slice (TK 32, or 64 as a candidate) of op(A) and of op(B) in
// workgroup memory as f16, each laid out as its operand is stored, so that neighbouring
// invocations write neighbouring addresses: k-contiguous rows KS apart, or (an operand stored m-
// or n-contiguous: A transposed, B not) TK rows of TILE elements, MS apart; the four values of a
// vec4 load are one vec4 store (the slices are arrays of vec4<f16>, as NVIDIA's
// cooperative-matrix sample stages through uvec4s). Cooperative loads touch workgroup memory
// only, with pipeline-constant strides (naga 30 mis-compiles them on storage pointers with
// runtime strides). The slices are double buffered: the next one is read from global memory
// into registers while the current one is multiplied, then written to the other buffer, one
// barrier per step (with PREFETCH 2 the next two are in flight, in two sets of registers).
// Reads outside the matrices give zero, so any shape works. The accumulators leave through a
// FRAG x FRAG staging tile per subgroup, with bounds checks, alpha/beta and the epilogue, to C.
// Split along K, the plain entry writes partial products that matmul.wgsl's `reduce_splits*`
// finish.
//
// With SPLIT_F32 the kernel computes an f32 product on the f16 matrix units: each operand value v
// is staged as hi = f16(v) and lo = f16((v - hi)·2¹¹), and each subgroup accumulates hi·hi in
// one set of accumulators and hi·lo + lo·hi in a second, added as main + corr·2⁻¹¹ when C is
// written (three f16 products instead of one; the lo·lo term, ~2⁻²² of the product, is dropped).
// The products then carry ~22 bits of each operand instead of 11; the f32 range still ends at
// f16's ±65504, and values below f16's normal range (6·10⁻⁵) go wholly to the lo part and keep
// 11 bits (see hi_part).

override TRANS_A: bool = false; // A stored [K, M] instead of [M, K]
override TRANS_B: bool = false; // B stored [N, K] instead of [K, N]
// Load A (B) from global memory as vec4s along its stored contiguous axis (as in matmul.wgsl:
// the host sets it when that axis's length is a multiple of 4).
override VEC_A: bool = false;
override VEC_B: bool = false;
override SG_SIZE: u32 = 32u; // invocations per subgroup (the adapter's, or 32 when emulated)
override SG_ROWS: u32 = 2u; // the workgroup's grid of subgroups
override SG_COLS: u32 = 2u;
override FR: u32 = 2u; // accumulators per subgroup, down and across (at most MAX_FRAGS each)
override FC: u32 = 2u;
override SPLIT_F32: bool = false; // f32 products from three f16 ones (see above)
// Stage an operand stored m- or n-contiguous in that layout (false: every operand k-contiguous,
// as before 2026-11-30; kept to measure the difference). The split layout always stages by k.
override MN_STAGING: bool = true;
override MN_A: bool = MN_STAGING && TRANS_A && !SPLIT_F32; // op(A)'s slice is [k][row] (derived)
override MN_B: bool = MN_STAGING && !TRANS_B && !SPLIT_F32; // op(B)'s slice is [k][column] (derived)
// Write each k-step's fragment products out for every (i, j) up to MAX_FRAGS, guarded by FR and
// FC, instead of looping over them (f16 products only; see `unrolled_products`).
override UNROLL: bool = false;
// Write four values that the staged slice holds contiguous with one vec4 store instead of four
// f16 stores (see `stage`; off only to measure the difference).
override WIDE_STORES: bool = true;
// k-slices read ahead into registers: 1 (the next, read while the current one is multiplied)
// or 2 (the next two, in two register sets, so that each read has two steps' products to
// arrive; see `k_step`).
override PREFETCH: u32 = 1u;
// k per step: 32, or 64 (half the steps and barriers, twice the workgroup memory and
// registers per step; where the layout fits it, see CoopLayout::check). K splits are
// multiples of 64.
override TK: u32 = 32u;
// Row stride of m- or n-contiguous slices, in f16: the tile plus 8 against bank conflicts
// (derived).
override MS: u32 = TILE + 8u;
override PARTS: u32 = u32(SPLIT_F32) + 1u; // staged copies of each operand: hi, and lo (derived)
override LO: u32 = 2u * TILE * KS; // where the lo copies start in tile_a and tile_b (derived)
override TILE: u32 = FRAG * FR * SG_ROWS; // derived, never set
override THREADS: u32 = SG_SIZE * SG_ROWS * SG_COLS; // derived, never set
override UNITS: u32 = TILE * TK / THREADS; // elements of each operand a thread stages per step (derived)
// Workgroup array lengths (derived; STAGED in vec4s of f16). Named: naga 30 panics on pipelines
// whose workgroup arrays have more than one unnamed override-expression length.
override STAGED: u32 = max(2u * TILE * KS * PARTS, 2u * TK * MS) / 4u;
override STAGING: u32 = FRAG * FRAG * SG_ROWS * SG_COLS * PARTS;
// Params, bindings, a_at / b_at, product and the epilogues: shaders/include/matmul_io.wgsl.

// Row stride of the staged slices, in f16: TK plus 8 against bank conflicts; rows stay 16-byte
// aligned, as cooperative loads want (derived).
override KS: u32 = TK + 8u;
const MAX_UNITS: u32 = 32u;
const MAX_FRAGS: u32 = 4u;
const LO_SCALE: f32 = 2048.0; // 2¹¹: lo parts stay clear of f16's subnormals

// Two buffers of [TILE rows of op(A)][KS] (then lo's), or with MN_A of [TK][MS], as vec4s: f16
// element i is component i % 4 of entry i / 4, so that four staged values are one store (rows
// start at multiples of 4, as do fragments, and cooperative loads read vec4 entries).
var<workgroup> tile_a: array<vec4<f16>, STAGED>;
// Two buffers of [TILE columns of op(B)][KS] (then lo's), or with MN_B of [TK][MS], as tile_a.
var<workgroup> tile_b: array<vec4<f16>, STAGED>;
var<workgroup> out_tile: array<f32, STAGING>; // a FRAG x FRAG staging tile per subgroup (then corr's)

var<private> lane: u32; // this invocation's index in its subgroup

// Operand 0 is op(A), read by (row, k); operand 1 is op(B), read by (column, k): both as the
// staged slices hold them.
fn is_vec(operand: u32) -> bool {
    return select(VEC_A, VEC_B, operand == 1u);
}

fn k_contiguous(operand: u32) -> bool {
    return select(!TRANS_A, TRANS_B, operand == 1u);
}

// Where element (r, k) of buffer `buf` of the operand's staged slice is: rows of KS by r, or
// with MN_A / MN_B rows of MS by k.
fn staged_at(operand: u32, buf: u32, r: u32, k: u32) -> u32 {
    if (select(MN_A, MN_B, operand == 1u)) {
        return (buf * TK + k) * MS + r;
    }
    return (buf * TILE + r) * KS + k;
}

// The fragment of op(A) at row r, k-offset k of buffer `buf` (hi parts).
fn a_frag(buf: u32, r: u32, k: u32) -> FragA {
    if (MN_A) {
        return frag_a_mn(staged_at(0u, buf, r, k));
    }
    return frag_a(staged_at(0u, buf, r, k));
}

// The fragment of op(B) at column c, k-offset k of buffer `buf` (hi parts).
fn b_frag(buf: u32, c: u32, k: u32) -> FragB {
    if (MN_B) {
        return frag_b_mn(staged_at(1u, buf, c, k));
    }
    return frag_b(staged_at(1u, buf, c, k));
}

// Where unit l of this thread starts in a k-slice: (k, r). A unit is one element, or four along
// the stored contiguous axis; neighbouring threads take neighbouring addresses.
fn place(operand: u32, l: u32, tid: u32) -> vec2<u32> {
    let w = select(1u, 4u, is_vec(operand));
    let flat = tid + l * THREADS;
    if (k_contiguous(operand)) {
        return vec2<u32>((flat % (TK / w)) * w, flat / (TK / w));
    }
    return vec2<u32>(flat / (TILE / w), (flat % (TILE / w)) * w);
}

// The hi part of v, as an f32: v rounded to the nearest f16 (ties to even), from v's bits and
// not as f32(f16(v)), which shader compilers may fold to v (Mesa 26's lavapipe does, making every
// lo part zero); and the lo part must be the remainder of exactly the hi part staged, whatever
// rounding the adapter's conversion uses. Zero below f16's normal range (2⁻¹⁴): such a value goes
// wholly to the lo part, which keeps 11 bits of it down to 2⁻²⁵, so no part is ever an f16
// subnormal (which adapters may flush to zero). Beyond f16's range (65504) the parts mean nothing.
fn hi_part(v: f32) -> f32 {
    if (abs(v) < 6.103515625e-5) {
        return 0.0;
    }
    let bits = bitcast<u32>(v);
    return bitcast<f32>((bits + 0xfffu + ((bits >> 13u) & 1u)) & 0xffffe000u);
}

// This thread's share of the next k-slices of op(A) and op(B) in registers, as loaded (the stored
// types; element j of the thread's share is component j % 4 of entry j / 4, so a vec4 load is
// one entry). They become f16 (with SPLIT_F32 hi and lo parts) only when staged, after the
// current slices' products: converted as loaded, the step would begin by waiting for its loads.
// Held as vec4s, f16 values pack two to a register where scalars could take one each.
struct Fetched {
    a: array<vec4<ElemA>, MAX_UNITS / 4u>,
    b: array<vec4<ElemB>, MAX_UNITS / 4u>,
}

// Reads this thread's share of the k-slice at k0 of `operand` into registers: units of four
// elements along the stored contiguous axis (one unless vec), zero outside the matrix (vec makes
// that all or nothing).
fn fetch(operand: u32, next: ptr<function, Fetched>, base: u32, r0: u32, k0: u32, tid: u32) {
    let vec = is_vec(operand);
    let w = select(1u, 4u, vec);
    for (var l = 0u; l < UNITS / w; l++) {
        let at = place(operand, l, tid);
        let r = r0 + at.y;
        let k = k0 + at.x;
        let inside = k < p.k && r < select(p.n, p.m, operand == 0u);
        if (operand == 0u) {
            if (vec) {
                var v = vec4<ElemA>();
                if (inside) {
                    v = a4[a_at(base, r, k) / 4u];
                }
                (*next).a[l] = v;
            } else {
                var v = ElemA();
                if (inside) {
                    v = a[a_at(base, r, k)];
                }
                (*next).a[l / 4u][l % 4u] = v;
            }
        } else {
            if (vec) {
                var v = vec4<ElemB>();
                if (inside) {
                    v = b4[b_at(base, k, r) / 4u];
                }
                (*next).b[l] = v;
            } else {
                var v = ElemB();
                if (inside) {
                    v = b[b_at(base, k, r)];
                }
                (*next).b[l / 4u][l % 4u] = v;
            }
        }
    }
}

// Element i of `operand`'s staged slices (tile_a or tile_b) becomes v.
fn put(operand: u32, i: u32, v: f16) {
    if (operand == 0u) {
        tile_a[i / 4u][i % 4u] = v;
    } else {
        tile_b[i / 4u][i % 4u] = v;
    }
}

// Elements i..i + 4 of `operand`'s staged slices become v (i a multiple of 4): one store.
fn put4(operand: u32, i: u32, v: vec4<f16>) {
    if (operand == 0u) {
        tile_a[i / 4u] = v;
    } else {
        tile_b[i / 4u] = v;
    }
}

// Writes the registers of `fetch` for `operand` into buffer `buf` of its staged slice, rounded to
// f16 (with SPLIT_F32 as hi parts, and the lo parts into its lo copy). A unit of four values
// along the stored contiguous axis that the slice also holds contiguous (staged as stored) is
// one vec4 store with WIDE_STORES, else four f16 stores.
fn stage(operand: u32, next: ptr<function, Fetched>, buf: u32, tid: u32) {
    let w = select(1u, 4u, is_vec(operand));
    let along_k = k_contiguous(operand);
    let as_stored = along_k || select(MN_A, MN_B, operand == 1u);
    for (var l = 0u; l < UNITS / w; l++) {
        let at = place(operand, l, tid);
        if (WIDE_STORES && w == 4u && as_stored) {
            let i = staged_at(operand, buf, at.y, at.x);
            if (SPLIT_F32) {
                let v = select(vec4<f32>((*next).b[l]), vec4<f32>((*next).a[l]), operand == 0u);
                let hi = vec4<f32>(hi_part(v.x), hi_part(v.y), hi_part(v.z), hi_part(v.w));
                put4(operand, i, vec4<f16>(hi)); // exact
                put4(operand, LO + i, vec4<f16>((v - hi) * LO_SCALE));
            } else if (operand == 0u) {
                put4(0u, i, vec4<f16>((*next).a[l]));
            } else {
                put4(1u, i, vec4<f16>((*next).b[l]));
            }
            continue;
        }
        for (var e = 0u; e < w; e++) {
            let k = at.x + select(0u, e, along_k);
            let r = at.y + select(e, 0u, along_k);
            let i = staged_at(operand, buf, r, k);
            let j = w * l + e;
            if (SPLIT_F32) {
                let v = select(
                    f32((*next).b[j / 4u][j % 4u]),
                    f32((*next).a[j / 4u][j % 4u]),
                    operand == 0u,
                );
                let hi = hi_part(v);
                put(operand, i, f16(hi)); // exact
                put(operand, LO + i, f16((v - hi) * LO_SCALE));
            } else if (operand == 0u) {
                put(0u, i, f16((*next).a[j / 4u][j % 4u]));
            } else {
                put(1u, i, f16((*next).b[j / 4u][j % 4u]));
            }
        }
    }
}

// The accumulators are read and replaced through include/constant_index.wgsl's switches
// (indexed_get, indexed_set): the loops over fragments index them with counters, and the
// stashing loop below, which holds barriers, is one the driver does not unroll. On the H200 this
// took the kernel from 21.6 to 39.3 TFLOP/s at 4096³ (f16 NN, index clamping on; BENCHMARKS.md).
alias Indexed = Acc;

// One k-step of FRAG of the subgroup's products, written out: accumulator f = i·FC + j += (A
// fragment i)·(B fragment j) for every i < FR, j < FC, each indexed by an expression of
// constants. The loops of the general step index the accumulators with loop counters, which
// the driver resolves only if it unrolls them (indexed_get / indexed_set then branch at run
// time, once for each read and each write of every product); here no index depends on a
// counter. Unused fragments are never loaded and their products never run (the guards are
// pipeline constants).
fn unrolled_products(
    acc: ptr<function, array<Acc, 16>>,
    buf: u32,
    ks: u32,
    sg_row: u32,
    sg_col: u32,
) {
    var a0: FragA;
    var a1: FragA;
    var a2: FragA;
    var a3: FragA;
    a0 = a_frag(buf, sg_row, ks);
    if (FR > 1u) { a1 = a_frag(buf, sg_row + FRAG, ks); }
    if (FR > 2u) { a2 = a_frag(buf, sg_row + 2u * FRAG, ks); }
    if (FR > 3u) { a3 = a_frag(buf, sg_row + 3u * FRAG, ks); }
    // Column j of fragments: B fragment j times each A fragment.
    var b = b_frag(buf, sg_col, ks);
    (*acc)[0] = mma(a0, b, (*acc)[0]);
    if (FR > 1u) { (*acc)[FC] = mma(a1, b, (*acc)[FC]); }
    if (FR > 2u) { (*acc)[2u * FC] = mma(a2, b, (*acc)[2u * FC]); }
    if (FR > 3u) { (*acc)[3u * FC] = mma(a3, b, (*acc)[3u * FC]); }
    if (FC > 1u) {
        b = b_frag(buf, sg_col + FRAG, ks);
        (*acc)[1] = mma(a0, b, (*acc)[1]);
        if (FR > 1u) { (*acc)[FC + 1u] = mma(a1, b, (*acc)[FC + 1u]); }
        if (FR > 2u) { (*acc)[2u * FC + 1u] = mma(a2, b, (*acc)[2u * FC + 1u]); }
        if (FR > 3u) { (*acc)[3u * FC + 1u] = mma(a3, b, (*acc)[3u * FC + 1u]); }
    }
    if (FC > 2u) {
        b = b_frag(buf, sg_col + 2u * FRAG, ks);
        (*acc)[2] = mma(a0, b, (*acc)[2]);
        if (FR > 1u) { (*acc)[FC + 2u] = mma(a1, b, (*acc)[FC + 2u]); }
        if (FR > 2u) { (*acc)[2u * FC + 2u] = mma(a2, b, (*acc)[2u * FC + 2u]); }
        if (FR > 3u) { (*acc)[3u * FC + 2u] = mma(a3, b, (*acc)[3u * FC + 2u]); }
    }
    if (FC > 3u) {
        b = b_frag(buf, sg_col + 3u * FRAG, ks);
        (*acc)[3] = mma(a0, b, (*acc)[3]);
        if (FR > 1u) { (*acc)[FC + 3u] = mma(a1, b, (*acc)[FC + 3u]); }
        if (FR > 2u) { (*acc)[2u * FC + 3u] = mma(a2, b, (*acc)[2u * FC + 3u]); }
        if (FR > 3u) { (*acc)[3u * FC + 3u] = mma(a3, b, (*acc)[3u * FC + 3u]); }
    }
}

// Accumulates the subgroup's FR x FC fragments (row-major in the first FR·FC entries, zero on
// entry) of this workgroup's tile of op(A)·op(B) into `acc`; with SPLIT_F32 the hi·lo + lo·hi
// corrections into `corr` (untouched otherwise).
fn tile_product(
    wg: vec3<u32>,
    tid: u32,
    acc: ptr<function, array<Acc, 16>>,
    corr: ptr<function, array<Acc, 16>>,
) {
    lane = tid % SG_SIZE;
    let sg = tid / SG_SIZE;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let base_a = batch_entry(wg.z) * p.stride_a;
    let base_b = batch_entry(wg.z) * p.stride_b;
    let ks = k_range(wg.z);
    let sg_row = (sg / SG_COLS) * FR * FRAG;
    let sg_col = (sg % SG_COLS) * FC * FRAG;

    let steps = (ks.y - ks.x + TK - 1u) / TK;
    let at = Slices(base_a, base_b, row0, col0, ks.x, steps, tid, sg_row, sg_col);
    var next: Fetched;
    fetch_slices(at, 0u, &next);
    stage_slices(at, &next, 0u);
    if (PREFETCH == 1u) {
        workgroupBarrier();
        for (var t = 0u; t < steps; t++) {
            k_step(at, t, &next, acc, corr);
        }
        return;
    }
    // Two slices ahead: `next` holds the slices of the even steps' next step, `later` those of
    // the odd steps'; each step stages its set and reads the set three steps ahead into it.
    var later: Fetched;
    fetch_slices(at, 1u, &next);
    fetch_slices(at, 2u, &later);
    workgroupBarrier();
    for (var t = 0u; t < steps; t += 2u) {
        k_step(at, t, &next, acc, corr);
        if (t + 1u < steps) {
            k_step(at, t + 1u, &later, acc, corr);
        }
    }
}

// Where a workgroup's k-slices come from, for `k_step`.
struct Slices {
    base_a: u32,
    base_b: u32,
    row0: u32,
    col0: u32,
    k0: u32, // the first k of the workgroup's range
    steps: u32, // k-slices in the range
    tid: u32,
    sg_row: u32, // the subgroup's first row and column in the tile
    sg_col: u32,
}

// Reads k-slice `t` of op(A) and op(B) (if the range has one) into `regs`.
fn fetch_slices(at: Slices, t: u32, regs: ptr<function, Fetched>) {
    if (t < at.steps) {
        fetch(0u, regs, at.base_a, at.row0, at.k0 + t * TK, at.tid);
        fetch(1u, regs, at.base_b, at.col0, at.k0 + t * TK, at.tid);
    }
}

// Writes the k-slices of op(A) and op(B) held in `regs` into staging buffer `buf`.
fn stage_slices(at: Slices, regs: ptr<function, Fetched>, buf: u32) {
    stage(0u, regs, buf, at.tid);
    stage(1u, regs, buf, at.tid);
}

// Step t: the products of the k-slices staged in buffer t % 2, while slice t + 1 goes into the
// other buffer, then a barrier. `regs` holds slice t + 1 at the start of the step with
// PREFETCH 2 (staged first, then slice t + 3 is read into it), and with PREFETCH 1 it gets
// slice t + 1 read into it first and staged after the products.
fn k_step(
    at: Slices,
    t: u32,
    regs: ptr<function, Fetched>,
    acc: ptr<function, array<Acc, 16>>,
    corr: ptr<function, array<Acc, 16>>,
) {
    let buf = t % 2u;
    let more = t + 1u < at.steps;
    if (PREFETCH == 1u) {
        fetch_slices(at, t + 1u, regs);
    } else {
        if (more) {
            stage_slices(at, regs, 1u - buf);
        }
        fetch_slices(at, t + 3u, regs);
    }
    for (var ks = 0u; ks < TK; ks += FRAG) {
        if (UNROLL && !SPLIT_F32) {
            unrolled_products(acc, buf, ks, at.sg_row, at.sg_col);
            continue;
        }
        var fa: array<FragA, MAX_FRAGS>;
        var fa_lo: array<FragA, MAX_FRAGS>;
        for (var i = 0u; i < FR; i++) {
            fa[i] = a_frag(buf, at.sg_row + i * FRAG, ks);
            if (SPLIT_F32) {
                fa_lo[i] = frag_a(LO + staged_at(0u, buf, at.sg_row + i * FRAG, ks));
            }
        }
        for (var j = 0u; j < FC; j++) {
            let fb = b_frag(buf, at.sg_col + j * FRAG, ks);
            for (var i = 0u; i < FR; i++) {
                let f = i * FC + j;
                indexed_set(acc, f, mma(fa[i], fb, indexed_get(acc, f)));
            }
            if (SPLIT_F32) {
                let fb_lo = frag_b(LO + staged_at(1u, buf, at.sg_col + j * FRAG, ks));
                for (var i = 0u; i < FR; i++) {
                    let f = i * FC + j;
                    indexed_set(corr, f, mma(fa_lo[i], fb, mma(fa[i], fb_lo, indexed_get(corr, f))));
                }
            }
        }
    }
    if (PREFETCH == 1u && more) {
        stage_slices(at, regs, 1u - buf);
    }
    workgroupBarrier();
}

// Where element e of accumulator f's staging tile goes in C (or in its split's slice of partial
// products): (index, whether it is inside C).
fn c_place(wg: vec3<u32>, tid: u32, f: u32, e: u32) -> vec2<u32> {
    let sg = tid / SG_SIZE;
    let row = wg.y * TILE + (sg / SG_COLS) * FR * FRAG + (f / FC) * FRAG + e / FRAG;
    let col = wg.x * TILE + (sg % SG_COLS) * FC * FRAG + (f % FC) * FRAG + e % FRAG;
    return vec2<u32>(wg.z * p.m * p.n + row * p.n + col, u32(row < p.m && col < p.n));
}

// The start of this subgroup's staging tile.
fn staging(tid: u32) -> u32 {
    return (tid / SG_SIZE) * FRAG * FRAG;
}

// Where the correction staging tiles start in out_tile (SPLIT_F32).
override CORR_STAGING: u32 = FRAG * FRAG * SG_ROWS * SG_COLS;

// Element e of this subgroup's stashed fragment: the accumulator, plus its correction scaled
// back.
fn stashed(tid: u32, e: u32) -> f32 {
    let at = staging(tid) + e;
    if (SPLIT_F32) {
        return out_tile[at] + out_tile[CORR_STAGING + at] / LO_SCALE;
    }
    return out_tile[at];
}

// Stashes fragment f of `acc` (and with SPLIT_F32 of `corr`) in this subgroup's staging
// tile(s).
fn stash_fragment(
    acc: ptr<function, array<Acc, 16>>,
    corr: ptr<function, array<Acc, 16>>,
    f: u32,
    tid: u32,
) {
    stash(indexed_get(acc, f), staging(tid));
    if (SPLIT_F32) {
        stash(indexed_get(corr, f), CORR_STAGING + staging(tid));
    }
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    var acc: array<Acc, 16>; // MAX_FRAGS², zero
    var corr: array<Acc, 16>;
    tile_product(wg, tid, &acc, &corr);
    for (var f = 0u; f < FR * FC; f++) {
        stash_fragment(&acc, &corr, f, tid);
        workgroupBarrier();
        for (var e = lane; e < FRAG * FRAG; e += SG_SIZE) {
            let at = c_place(wg, tid, f, e);
            if (at.y != 0u) {
                c[at.x] = product(at.x, stashed(tid, e));
            }
        }
        workgroupBarrier();
    }
}

// As `main`, writing through the epilogue (only the epilogue entries bind `bias` and `aux`).
fn write_with_epilogue(wg: vec3<u32>, tid: u32, epilogue: u32) {
    var acc: array<Acc, 16>;
    var corr: array<Acc, 16>;
    tile_product(wg, tid, &acc, &corr);
    for (var f = 0u; f < FR * FC; f++) {
        stash_fragment(&acc, &corr, f, tid);
        workgroupBarrier();
        for (var e = lane; e < FRAG * FRAG; e += SG_SIZE) {
            let at = c_place(wg, tid, f, e);
            if (at.y != 0u) {
                write_epilogue(wg.z, at.x, stashed(tid, e), epilogue);
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(THREADS)
fn main_bias_act(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    write_with_epilogue(wg, tid, BIAS_ACT);
}

@compute @workgroup_size(THREADS)
fn main_act_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    write_with_epilogue(wg, tid, ACT_GRAD);
}
