
// What matmul.wgsl, matmul_coop.wgsl and matmul_narrow.wgsl share: the parameter block, the
// bindings, where an element of op(A) or op(B) is stored, and how an accumulated element of C is
// written, plainly or through a fused epilogue.
//
// The host appends the storage types of A, B and aux, f32 or f16 (`alias ElemA = f16;` ...:
// WGSL fixes a binding's type in the source, so each combination is its own module); C and the
// bias are always f32.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    stride_a: u32, // elements between batch entries of A (0: shared)
    stride_b: u32,
    alpha: f32,
    beta: f32,
    act: u32,         // epilogue entries: activation code (shaders/include/activation.wgsl)
    bias_stride: u32, // epilogue entries: elements between batch entries of the bias (0: shared)
    batch: u32,       // batch entries of C
    k_split: u32,     // K per split of a split-K product (a multiple of 32), else at least K
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<ElemA>;
@group(0) @binding(2) var<storage, read> b: array<ElemB>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<ElemA>>; // a again, for VEC_A loads
@group(0) @binding(5) var<storage, read> b4: array<vec4<ElemB>>; // b again, for VEC_B loads
@group(0) @binding(6) var<storage, read> bias: array<f32>;         // epilogue entries only
@group(0) @binding(7) var<storage, read_write> aux: array<ElemAux>; // Y written, or pre read

// Split K: where a product has too few tiles to fill the GPU, the host splits K into ranges of
// k_split and runs the plain entry with a grid of splits · batch in z (z = split · batch +
// entry), alpha 1 and beta 0, writing each split's partial product to its own slice of a scratch
// buffer bound as `c`; a `reduce_splits*` entry of matmul.wgsl then sums the slices into C with
// alpha, beta and the epilogue. Unsplit, z is the batch entry and k_split covers K.

// The batch entry of grid row z.
fn batch_entry(z: u32) -> u32 {
    return z % p.batch;
}

// The K range [begin, end) of grid row z.
fn k_range(z: u32) -> vec2<u32> {
    let begin = (z / p.batch) * p.k_split;
    return vec2<u32>(begin, min(p.k, begin + p.k_split));
}

// Where element (row, k) of op(A) is in `a`.
fn a_at(base: u32, row: u32, col: u32) -> u32 {
    if (TRANS_A) {
        return base + col * p.m + row;
    }
    return base + row * p.k + col;
}

// Where element (k, column) of op(B) is in `b`.
fn b_at(base: u32, row: u32, col: u32) -> u32 {
    if (TRANS_B) {
        return base + col * p.k + row;
    }
    return base + row * p.n + col;
}

// C's element `idx`: alpha·acc (+ beta·C).
fn product(idx: u32, acc: f32) -> f32 {
    var value = p.alpha * acc;
    if (p.beta != 0.0) {
        value += p.beta * c[idx];
    }
    return value;
}

// The fused epilogues. Only the epilogue entries call epilogue_at, so only they bind `bias`
// and `aux`; plain products need not.
const BIAS_ACT: u32 = 1u; // C = product; aux = act(product + bias)      (a layer's forward)
const ACT_GRAD: u32 = 2u; // C = product · act'(aux + bias), aux = pre    (a hidden layer's backward)

// Writes C's element `idx` of batch entry `batch`, whose product is `value`, with the epilogue.
fn epilogue_at(batch: u32, idx: u32, value: f32, epilogue: u32) {
    let b = bias[batch * p.bias_stride + idx % p.n];
    if (epilogue == ACT_GRAD) {
        c[idx] = value * derivative(f32(aux[idx]) + b, p.act);
    } else {
        c[idx] = value;
        aux[idx] = ElemAux(activate(value + b, p.act));
    }
}

// Writes C's element `idx` of batch entry `batch` from its accumulator, with the epilogue.
fn write_epilogue(batch: u32, idx: u32, acc: f32, epilogue: u32) {
    epilogue_at(batch, idx, product(idx, acc), epilogue);
}
