//! Kernel validation: run a kernel on the GPU and on its CPU twin with the same seeded inputs and
//! measure the difference against a documented tolerance. The test suite sweeps these checks over
//! many shapes; `cohort check` runs a default set on the user's own GPU.
//!
//! Tolerances:
//! - matmul: |gpu − cpu| ≤ (K + 2)·2⁻²³·Σ_k |a_ik·b_kj| (+ |β·c|) per element, the worst-case bound
//!   of a K-term f32 dot product, so it scales with K and with the operands; with f16 inputs
//!   (rounded or stored as F16; the operands are then f16 numbers, never subnormal, so both
//!   sides multiply the same values) twice that, for tensor cores that truncate as they add;
//! - other float kernels: |gpu − cpu| ≤ atol + rtol·|cpu| with rtol = 1e-5 unless stated;
//! - integer kernels (accuracy counts, gather): exact.
//!
//! The CPU twins compute in f64 and round once, so they are the more accurate side.
//!
//! Agreement is promised within f32's range only: where an intermediate of the shader's f32
//! arithmetic passes ±3.4e38 but the twin's f64 one does not, the two may differ in kind, not
//! just in rounding. Known cases: a matmul or axpby whose terms overflow and cancel (the shader
//! gives NaN, the twin ±inf or a finite number), Adam's moments or SGD's velocity near 3e38, and
//! temperatures whose square overflows (a kernel's spec takes any; the trainer's configuration
//! stops at [`crate::config::MAX_TEMPERATURE`]). (The loss kernels halve the differences that
//! may pass it, logits 6e38 apart, where their results need not.) Nor is it promised for NaN
//! inputs: WGSL leaves `min`, `max` and `clamp` of a NaN to the implementation, so an activation
//! may turn one into a number (lavapipe's tanh of NaN is −1; ReLU gives 0 on both sides).
//! Infinite logits are inside the promise. Inside that range the checks below hold, and
//! zero-weight terms beside overflowing ones (a class of no target weight, a class a peer gives
//! no probability, Nesterov without momentum) stay zero on both sides. KL losses are held to
//! 1e-4 of the twin's (plus 1e-6) at every temperature the trainer takes, for peers far apart
//! or nearly identical: the kernels sum terms of order r², r the peers' log-ratio taken from
//! the logits' difference, rather than terms of order r that cancel (which at T = 1000 came out
//! several percent off). KL gradients, differences of nearly equal probabilities at high
//! temperatures, keep each probability's rounding: ~1e-3 of themselves at T = 1000, as in any
//! f32 softmax (their slack grows with T accordingly).

use crate::backend::{Backend, LayerUpdate};
use crate::cpu::CpuBackend;
use crate::error::{host_capacity, host_vec, CohortError, Result};
use crate::gpu::shaders::MatmulStorage;
use crate::gpu::{F32Matmul, GpuBackend, MatmulKernel};
use crate::ops::{
    Activation, Axpby, CrossEntropySpec, DmlLossSpec, KlSpec, MatmulDims, MatmulSpec,
    OptimizerStep, ReduceSpec,
};
use crate::rng::Rng;
use crate::tensor::{DType, TensorInfo};

/// Relative tolerance of the element-wise float kernels.
pub const RTOL: f64 = 1e-5;

/// The outcome of one kernel check.
#[derive(Clone, Debug)]
pub struct KernelCheck {
    /// Kernel name (the shader's).
    pub kernel: &'static str,
    /// The case: shape and options.
    pub case: String,
    /// Largest |gpu − cpu| over all outputs.
    pub max_abs_error: f64,
    /// Largest error as a fraction of its allowed error; ≤ 1 passes.
    pub worst_ratio: f64,
    /// Where the worst element is and its two values, for failure messages.
    pub worst: String,
}

impl KernelCheck {
    /// Whether every element is within tolerance.
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }

    fn new(kernel: &'static str, case: String) -> Self {
        KernelCheck {
            kernel,
            case,
            max_abs_error: 0.0,
            worst_ratio: 0.0,
            worst: String::new(),
        }
    }

    /// Compares `got` with `want`, element `i` allowed `allowed(i, want[i])`. A NaN must match a
    /// NaN; a length mismatch fails.
    fn compare(
        mut self,
        what: &str,
        got: &[f32],
        want: &[f32],
        allowed: impl Fn(usize, f64) -> f64,
    ) -> Self {
        if got.len() != want.len() {
            self.worst_ratio = f64::INFINITY;
            self.worst = format!("{what}: {} outputs, expected {}", got.len(), want.len());
            return self;
        }
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g as f64, w as f64);
            // Equal values (infinities of one sign too) and NaN for NaN agree.
            let ratio = if g == w || (w.is_nan() && g.is_nan()) {
                0.0
            } else if w.is_nan() || g.is_nan() {
                f64::INFINITY
            } else {
                let err = (g - w).abs();
                self.max_abs_error = self.max_abs_error.max(err);
                err / allowed(i, w)
            };
            if ratio > self.worst_ratio || (ratio.is_nan() && !self.worst_ratio.is_nan()) {
                self.worst_ratio = ratio;
                self.worst = format!("{what}[{i}]: gpu {g}, cpu {w}");
            }
        }
        self
    }

    fn relative(self, what: &str, got: &[f32], want: &[f32], rtol: f64, atol: f64) -> Self {
        self.compare(what, got, want, |_, w| atol + rtol * w.abs())
    }

    fn exact<T: PartialEq + std::fmt::Debug>(mut self, what: &str, got: &[T], want: &[T]) -> Self {
        if got != want {
            self.worst_ratio = f64::INFINITY;
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            self.worst = format!("{what}[{i}]: gpu {:?}, cpu {:?}", got.get(i), want.get(i));
        }
        self
    }
}

/// A shape error unless `shape` has `rank` dimensions (or at least `rank` when `at_least`).
fn need_rank(op: &'static str, shape: &[usize], rank: usize, at_least: bool) -> Result<()> {
    let fits = if at_least {
        shape.len() >= rank
    } else {
        shape.len() == rank
    };
    if fits && !shape.contains(&0) {
        Ok(())
    } else {
        Err(crate::error::CohortError::shape(
            op,
            format!("check shape {shape:?} needs rank {rank}"),
        ))
    }
}

fn uniform(seed: u64, dims: impl AsRef<[usize]>, lo: f32, hi: f32) -> Result<Vec<f32>> {
    let n = count(dims.as_ref())?;
    let mut v = host_vec(n, || format!("{n} test values"))?;
    Rng::new(seed).fill_uniform(&mut v, lo, hi);
    Ok(v)
}

/// The values of a tensor of `dims`: an error where they are more than a `usize` counts.
fn count(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| CohortError::shape("validate", format!("{dims:?}: too many values")))
}

/// Matmul operands in [-1, 1]; for f16-input products exactly representable in f16 and never
/// subnormal, so that the kernels' own rounding to f16 (whose direction WGSL leaves open) and
/// hardware that flushes f16 subnormals change nothing, and the product can be checked as
/// tightly as an f32 one. [`matmul_f16_rounding`] checks the rounding itself.
fn operand(seed: u64, dims: impl AsRef<[usize]>, f16_inputs: bool) -> Result<Vec<f32>> {
    let mut v = uniform(seed, dims, -1.0, 1.0)?;
    if f16_inputs {
        for x in &mut v {
            let h = half::f16::from_f32(*x);
            *x = if h.is_normal() { h.to_f32() } else { 0.0 };
        }
    }
    Ok(v)
}

fn labels(seed: u64, n: usize, classes: usize) -> Result<Vec<u32>> {
    let mut rng = Rng::new(seed);
    let mut v = host_capacity(n, || format!("{n} test labels"))?;
    v.extend((0..n).map(|_| rng.below(classes) as u32));
    Ok(v)
}

/// The element types of a checked product: which tensors are stored as F16 (A, B, and the
/// fused epilogues' Y or pre), and whether f32 operands are rounded to f16
/// ([`MatmulSpec::f16_inputs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Round f32 operands to f16.
    pub rounded: bool,
    /// The tensors stored as F16.
    pub storage: MatmulStorage,
}

impl Inputs {
    /// f32 operands, multiplied as f32.
    pub const F32: Inputs = Inputs {
        rounded: false,
        storage: MatmulStorage::F32,
    };
    /// f32 operands rounded to f16 (mixed precision without F16 tensors).
    pub const ROUNDED: Inputs = Inputs {
        rounded: true,
        storage: MatmulStorage::F32,
    };

    /// f32 operands, rounded or not as `rounded`.
    pub fn rounded(rounded: bool) -> Self {
        Inputs {
            rounded,
            storage: MatmulStorage::F32,
        }
    }

    /// The tensors `storage` names stored as F16, the others f32 (rounded when `rounded`).
    pub fn stored(storage: MatmulStorage, rounded: bool) -> Self {
        Inputs { rounded, storage }
    }

    /// Whether the product multiplies f16 numbers only (and may run on tensor cores).
    pub fn f16_product(self) -> bool {
        self.rounded || (self.storage.a_f16 && self.storage.b_f16)
    }

    /// Whether the values of an operand stored as F16 (`stored_f16`) are f16 numbers: then they
    /// are drawn so (see [`operand`]).
    fn f16_values(self, stored_f16: bool) -> bool {
        self.rounded || stored_f16
    }

    /// The case's suffix in check names.
    fn describe(self) -> String {
        let s = self.storage;
        let mut out = String::new();
        if self.rounded {
            out += " f16 inputs";
        }
        for (on, name) in [(s.a_f16, "A"), (s.b_f16, "B"), (s.aux_f16, "aux")] {
            if on {
                out += &format!(" {name}:F16");
            }
        }
        out
    }
}

/// A tensor of `shape` holding `data`, stored as F16 when `f16`.
fn stored<B: Backend>(b: &B, shape: &[usize], data: &[f32], f16: bool) -> Result<B::Tensor> {
    if f16 {
        b.tensor_f16(shape, data)
    } else {
        b.tensor(shape, data)
    }
}

/// How the operands of a batched matmul are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// Plain rank-2 operands.
    None,
    /// Every operand has `n` matrices.
    All(usize),
    /// `n` matrices, A shared (rank 2).
    SharedA(usize),
    /// `n` matrices, B shared (rank 2).
    SharedB(usize),
}

impl Batching {
    /// The matrices of C: `None` for plain rank-2 operands.
    fn count(self) -> Option<usize> {
        match self {
            Batching::None => None,
            Batching::All(c) | Batching::SharedA(c) | Batching::SharedB(c) => Some(c),
        }
    }
}

/// The values a checked product draws for its operands and C.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    /// Uniform in [-1, 1] (see [`operand`]).
    Uniform,
    /// Their magnitudes, with |α| and |β|: each element of this C is the sum of |terms| that
    /// bounds the rounding of the same element of the uniform one.
    Magnitudes,
    /// -1, 0 or 1: every partial sum of a product shorter than 2²⁴ is exact in f32.
    Integers,
}

/// A checked product: its operands' batching, `(M, N, K)`, transposes and scales, which
/// operands are stored as F16, and the seed its values are drawn from.
#[derive(Clone, Copy)]
struct Product<'a> {
    batching: Batching,
    dims: (usize, usize, usize),
    spec: &'a MatmulSpec,
    storage: MatmulStorage,
    seed: u64,
}

impl Product<'_> {
    /// Its name in a check's case: shape, batching, transposes and scales.
    fn case(&self) -> String {
        let (m, n, k) = self.dims;
        format!("{m}x{n}x{k} {:?} {}", self.batching, spec_text(self.spec))
    }
}

/// `product` on `b`, of operands drawn as `values` says: C, and what ran it.
fn matmul_run<B: Backend>(b: &B, product: &Product, values: Values) -> Result<(Vec<f32>, Ran)> {
    let Product {
        batching,
        dims,
        spec,
        storage,
        seed,
    } = *product;
    let (m, n, k) = dims;
    let matrices = batching.count();
    let shared_a = matches!(batching, Batching::SharedA(_));
    let shared_b = matches!(batching, Batching::SharedB(_));
    let shape = |shared: bool, rows: usize, cols: usize| -> Vec<usize> {
        match matrices {
            Some(c) if !shared => vec![c, rows, cols],
            _ => vec![rows, cols],
        }
    };
    let [a0, a1] = as_stored(spec.trans_a, m, k);
    let ashape = shape(shared_a, a0, a1);
    let [b0, b1] = as_stored(spec.trans_b, k, n);
    let bshape = shape(shared_b, b0, b1);
    let cshape = shape(false, m, n);
    let data = |s: u64, shape: &[usize], f16: bool| -> Result<Vec<f32>> {
        Ok(match values {
            Values::Uniform => operand(s, shape, f16)?,
            Values::Magnitudes => operand(s, shape, f16)?.into_iter().map(f32::abs).collect(),
            Values::Integers => {
                let n = count(shape)?;
                let mut v = host_vec(n, || format!("{n} test values"))?;
                let mut rng = Rng::new(s);
                v.iter_mut().for_each(|x| *x = rng.below(3) as f32 - 1.0);
                v
            }
        })
    };
    let inputs = Inputs::stored(storage, spec.f16_inputs);
    let (fa, fb) = (
        inputs.f16_values(storage.a_f16),
        inputs.f16_values(storage.b_f16),
    );
    let a = stored(b, &ashape, &data(seed, &ashape, fa)?, storage.a_f16)?;
    let bb = stored(b, &bshape, &data(seed + 1, &bshape, fb)?, storage.b_f16)?;
    let mut c = b.tensor(&cshape, &data(seed + 2, &cshape, spec.f16_inputs)?)?;
    let spec = if values == Values::Magnitudes {
        MatmulSpec {
            alpha: spec.alpha.abs(),
            beta: spec.beta.abs(),
            ..*spec
        }
    } else {
        *spec
    };
    b.matmul(&a, &bb, &mut c, &spec)?;
    Ok((b.read(&c)?, Ran::of(&a, &bb, &c, &spec)?))
}

/// Batched matmul `C = α·op(A)·op(B) + β·C` of `dims = (M, N, K)`, f32 operands.
pub fn matmul(
    gpu: &GpuBackend,
    batching: Batching,
    dims: (usize, usize, usize),
    spec: &MatmulSpec,
    seed: u64,
) -> Result<KernelCheck> {
    matmul_stored(gpu, batching, dims, spec, MatmulStorage::F32, seed)
}

/// [`matmul`] with A and/or B stored as F16 as `storage` says (its `aux_f16` is unused).
pub fn matmul_stored(
    gpu: &GpuBackend,
    batching: Batching,
    dims: (usize, usize, usize),
    spec: &MatmulSpec,
    storage: MatmulStorage,
    seed: u64,
) -> Result<KernelCheck> {
    let product = Product {
        batching,
        dims,
        spec,
        storage,
        seed,
    };
    let (got, ran) = matmul_run(gpu, &product, Values::Uniform)?;
    let (want, _) = matmul_run(&CpuBackend, &product, Values::Uniform)?;
    let (magnitude, _) = matmul_run(&CpuBackend, &product, Values::Magnitudes)?;
    let inputs = Inputs::stored(storage, spec.f16_inputs);
    let arithmetic = Arithmetic::of(gpu, inputs.f16_product());
    let unit = arithmetic.unit(dims.2);
    let case = format!("{}{}", product.case(), inputs.describe());
    let kernel = ran.kernel(gpu, MATMUL_NAMES)?;
    Ok(KernelCheck::new(kernel, case)
        .compare("C", &got, &want, |i, _| unit * magnitude[i] as f64 + 1e-30))
}

/// [`matmul`] of operands and C drawn from -1, 0 and 1, compared exactly: every partial sum is
/// an integer below 2²⁴ in magnitude, so any order of f32 (or f16-input) arithmetic gives the
/// twin's result. For deep products, where [`matmul`]'s rounding bound (growing with K) would
/// let a product cut short pass. K must be below 2²⁴ − 1 and α, β each -1, 0 or 1.
pub fn matmul_integers(
    gpu: &GpuBackend,
    batching: Batching,
    dims: (usize, usize, usize),
    spec: &MatmulSpec,
    seed: u64,
) -> Result<KernelCheck> {
    let unit = |v: f32| [-1.0, 0.0, 1.0].contains(&v);
    if dims.2 >= (1 << 24) - 1 || !unit(spec.alpha) || !unit(spec.beta) {
        return Err(CohortError::InvalidConfig(format!(
            "an exact product needs K below 2^24 - 1 and alpha and beta in {{-1, 0, 1}}, got K \
             {}, alpha {}, beta {}",
            dims.2, spec.alpha, spec.beta
        )));
    }
    let product = Product {
        batching,
        dims,
        spec,
        storage: MatmulStorage::F32,
        seed,
    };
    let (got, ran) = matmul_run(gpu, &product, Values::Integers)?;
    let (want, _) = matmul_run(&CpuBackend, &product, Values::Integers)?;
    let case = format!("{} integers", product.case());
    Ok(KernelCheck::new(ran.kernel(gpu, MATMUL_NAMES)?, case).exact("C", &got, &want))
}

/// The check names of a plain product on the tiled, cooperative-matrix and narrow kernels.
const MATMUL_NAMES: [&str; 3] = ["matmul", "matmul_coop", "matmul_narrow"];

/// A product as a backend ran it: its dimensions as [`MatmulDims::infer`] found them from the
/// tensors, and which operands were stored as F16 (what the matmul tuner keys its plans by).
struct Ran {
    dims: MatmulDims,
    a_f16: bool,
    b_f16: bool,
}

impl Ran {
    /// The product of `a` and `b` into `c` as `spec` says.
    fn of(
        a: &impl TensorInfo,
        b: &impl TensorInfo,
        c: &impl TensorInfo,
        spec: &MatmulSpec,
    ) -> Result<Self> {
        Ok(Ran {
            dims: MatmulDims::infer(a, b, c, spec)?,
            a_f16: a.dtype() == DType::F16,
            b_f16: b.dtype() == DType::F16,
        })
    }

    /// Which of `names` (the tiled, cooperative-matrix and narrow kernel's) `gpu` ran it on:
    /// the kernel of the plan it runs this product on now (the tuned one, where a tuning
    /// backend has met it).
    fn kernel(
        &self,
        gpu: &GpuBackend,
        [tiled, coop, narrow]: [&'static str; 3],
    ) -> Result<&'static str> {
        Ok(
            match gpu
                .current_matmul_plan(&self.dims, self.a_f16, self.b_f16)?
                .kernel
            {
                MatmulKernel::Tiled { .. } => tiled,
                MatmulKernel::Coop { .. } => coop,
                MatmulKernel::Narrow => narrow,
            },
        )
    }
}

/// How the GPU backend computes a product: of f32 numbers with f32 arithmetic, of f16 numbers
/// (f32 accumulation), or of f32 numbers split into f16 parts on the cooperative-matrix kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arithmetic {
    F32,
    F16,
    SplitF16,
}

impl Arithmetic {
    /// How `gpu` runs a product of f16 numbers only (`f16_product`) or not.
    fn of(gpu: &GpuBackend, f16_product: bool) -> Self {
        if f16_product {
            Arithmetic::F16
        } else if gpu.f32_matmul() == F32Matmul::SplitF16 {
            Arithmetic::SplitF16
        } else {
            Arithmetic::F32
        }
    }

    /// The error of a K-long dot product relative to the sum of |products|: (K + 2)·2⁻²³ for
    /// f32 accumulation in any order. With f16 inputs (exactly representable, see [`operand`],
    /// so the products are exact in f32) twice that, for tensor cores, which may truncate rather
    /// than round while they add. Split into f16 parts, each product hi·hi + hi·lo + lo·hi is
    /// off from the f32 one by lo·lo and the rounding of the lo parts, together at most 3·2⁻²²
    /// of it, on top of the tensor cores' accumulation.
    fn unit(self, k: usize) -> f64 {
        let unit = (k as f64 + 2.0) * 2f64.powi(-23);
        match self {
            Arithmetic::F32 => unit,
            Arithmetic::F16 => 2.0 * unit,
            Arithmetic::SplitF16 => 2.0 * unit + 3.0 * 2f64.powi(-22),
        }
    }

    /// The error bound of a K-long dot product of values in [-1, 1] (see [`Arithmetic::unit`]).
    fn dot_bound(self, k: usize) -> f64 {
        self.unit(k) * k as f64
    }
}

/// That f16-input products really round their inputs to f16: A = 1 + 2⁻¹², B = 1 (so the f32
/// product would be K·(1 + 2⁻¹²)), where either rounding direction gives 1, so C must be K
/// exactly, as the twin computes. A kernel that skipped the rounding is off by K·2⁻¹².
pub fn matmul_f16_rounding(gpu: &GpuBackend) -> Result<KernelCheck> {
    let dims = (33, 40, 300);
    let (got, ran) = f16_rounding_run(gpu, dims)?;
    let (want, _) = f16_rounding_run(&CpuBackend, dims)?;
    // Sums of K ones are exact in f32; skipping the rounding costs K·2⁻¹² ≈ 0.07.
    Ok(KernelCheck::new(
        ran.kernel(gpu, MATMUL_NAMES)?,
        format!("{}x{}x{} f16 rounding of 1 + 2^-12", dims.0, dims.1, dims.2),
    )
    .compare("C", &got, &want, |_, _| 1e-4))
}

/// That f16-input products round each input to the nearest f16, ties to even, exactly as the
/// CPU twin does: C = A·B with A a column of values at, just below and just above ties between
/// neighbouring f16 values (normal and subnormal), at f16's largest and past it (infinity),
/// and B a row of ones, so that K = 1 and C holds each rounded value exactly. `columns` wide:
/// 1 runs on the narrow kernel where the backend uses it, 64 on the tiled one.
pub fn matmul_f16_ties(gpu: &GpuBackend, columns: usize) -> Result<KernelCheck> {
    let values = f16_tie_values();
    let (got, ran) = f16_ties_run(gpu, &values, columns)?;
    let (want, _) = f16_ties_run(&CpuBackend, &values, columns)?;
    Ok(KernelCheck::new(
        ran.kernel(gpu, MATMUL_NAMES)?,
        format!("{}x{columns}x1 f16 rounding at ties", values.len()),
    )
    .exact("C", &got, &want))
}

/// Values where rounding to f16 can go wrong: ties between neighbours across the normal and
/// subnormal range, one f32 step either side of each, f16's largest (65504), the tie past it
/// (65520, which goes to infinity) and beside it, zeros of both signs, an f32 subnormal; each
/// with both signs.
fn f16_tie_values() -> Vec<f32> {
    let mut values = vec![
        0.0,
        65504.0,
        65520.0,
        1e5,
        1e-40,
        2f32.powi(-25),
        3.0 * 2f32.powi(-25),
        65520f32.next_down(),
    ];
    // Every 191st pair: 1,018 values in all, so that 64 columns of them take at most 16 row
    // tiles of 64 (the grid limit the kernel tests fold every kernel under).
    for bits in (1u16..0x7c00).step_by(191) {
        let low = half::f16::from_bits(bits - 1).to_f32();
        let high = half::f16::from_bits(bits).to_f32();
        let tie = (low + high) / 2.0;
        values.extend([tie.next_down(), tie, tie.next_up()]);
    }
    let negatives: Vec<f32> = values.iter().map(|v| -v).collect();
    values.extend(negatives);
    values
}

fn f16_ties_run<B: Backend>(b: &B, values: &[f32], columns: usize) -> Result<(Vec<f32>, Ran)> {
    let a = b.tensor(&[values.len(), 1], values)?;
    let ones = b.tensor(&[1, columns], &vec![1.0; columns])?;
    let mut c = b.zeros(&[values.len(), columns], DType::F32)?;
    let spec = MatmulSpec::default().f16(true);
    b.matmul(&a, &ones, &mut c, &spec)?;
    Ok((b.read(&c)?, Ran::of(&a, &ones, &c, &spec)?))
}

fn f16_rounding_run<B: Backend>(
    b: &B,
    (m, n, k): (usize, usize, usize),
) -> Result<(Vec<f32>, Ran)> {
    let a = b.tensor(&[m, k], &vec![1.0 + 2f32.powi(-12); m * k])?;
    let w = b.tensor(&[k, n], &vec![1.0; k * n])?;
    let mut c = b.zeros(&[m, n], DType::F32)?;
    let spec = MatmulSpec::default().f16(true);
    b.matmul(&a, &w, &mut c, &spec)?;
    Ok((b.read(&c)?, Ran::of(&a, &w, &c, &spec)?))
}

/// The check [`GpuBackend::new`] runs once where it chose the cooperative-matrix kernel, on
/// whatever kernel the backend picks (the cooperative-matrix one, at that point): f16-input
/// products of a ragged shape in all four transpose layouts, batched, and where the backend
/// has F16 tensors the three products of a mixed-precision layer as the trainer runs them (the
/// forward from an F16 input and F16 weights into an F16 output, the input gradient against
/// F16 weights, the weight gradient from an F16 input). Returns the worst.
pub fn coop_self_test(gpu: &GpuBackend) -> Result<KernelCheck> {
    let mut checks = Vec::new();
    for t in 0..4 {
        let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(true);
        checks.push(matmul(
            gpu,
            Batching::All(2),
            (67, 70, 45),
            &spec,
            90 + t as u64,
        )?);
    }
    if gpu.f16_tensors() {
        let stored = |a_f16, b_f16, aux_f16| {
            Inputs::stored(
                MatmulStorage {
                    a_f16,
                    b_f16,
                    aux_f16,
                },
                true,
            )
        };
        let (act, dims) = (Activation::Relu, (67, 70, 45));
        checks.push(matmul_bias_act(
            gpu,
            2,
            dims,
            true,
            act,
            stored(true, true, true),
            94,
        )?);
        checks.push(matmul_act_grad(
            gpu,
            2,
            dims,
            act,
            stored(false, true, false),
            95,
        )?);
        let storage = stored(true, false, false).storage;
        let spec = MatmulSpec::new(true, false).f16(true);
        checks.push(matmul_stored(
            gpu,
            Batching::SharedA(2),
            dims,
            &spec,
            storage,
            96,
        )?);
    }
    Ok(worst_of(checks))
}

/// The check [`GpuBackend::new`] runs once where the row kernels reduce rows in subgroups: the
/// DML loss of three peers and the accuracy counts over 67 rows of 10 and of 100 classes (rows
/// in every subgroup of two workgroups, the last part-filled). Returns the worst.
pub fn row_self_test(gpu: &GpuBackend) -> Result<KernelCheck> {
    let mut checks = Vec::new();
    // Seeds whose ensemble's two likeliest classes differ by at least 1e-3 of the first's
    // probability in every row (1.8e-2 and 1.4e-3), so that rounding cannot flip a count.
    for (i, (classes, count_seed)) in [(10, 72), (100, 75)].into_iter().enumerate() {
        let shape = [3, 67, classes];
        let spec = DmlLossSpec {
            label_smoothing: 0.1,
            ce_scale: 1.0 / 67.0,
            temperature: 2.0,
            kl_scale: 1.0 / 67.0,
            peers: 0..3,
        };
        checks.push(dml_loss(gpu, &shape, &spec, 70 + i as u64)?);
        checks.push(count_correct(gpu, &shape, count_seed)?);
    }
    Ok(worst_of(checks))
}

/// The check of `checks` (not empty) with the largest error relative to its bound.
fn worst_of(checks: Vec<KernelCheck>) -> KernelCheck {
    checks
        .into_iter()
        .max_by(|a, b| a.worst_ratio.total_cmp(&b.worst_ratio))
        .expect("checks ran")
}

/// The check [`GpuBackend::new`] runs once where f32 products are split into f16 parts
/// ([`F32Matmul::SplitF16`]), on the products the backend then runs so: f32 products of a
/// ragged shape in all four transpose layouts, batched, and both fused epilogues. Their bound is
/// close to the f32 kernel's (see `Arithmetic::unit`), so a missing correction term fails it.
/// Returns the worst.
pub fn split_f32_self_test(gpu: &GpuBackend) -> Result<KernelCheck> {
    let dims = (67, 70, 45);
    let mut checks = Vec::new();
    for t in 0..4 {
        let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2);
        checks.push(matmul(gpu, Batching::All(2), dims, &spec, 190 + t as u64)?);
    }
    let act = Activation::Gelu;
    checks.push(matmul_bias_act(gpu, 2, dims, true, act, Inputs::F32, 194)?);
    checks.push(matmul_act_grad(gpu, 2, dims, act, Inputs::F32, 195)?);
    Ok(worst_of(checks))
}

/// A fused layer-forward case: batch, (M, N, K), per-group bias, activation, inputs, seed.
type BiasActCase = (usize, (usize, usize, usize), bool, Activation, Inputs, u64);

/// An operand of `rows` × `cols` as stored: transposed where `trans` (see [`MatmulSpec`]).
fn as_stored(trans: bool, rows: usize, cols: usize) -> [usize; 2] {
    if trans {
        [cols, rows]
    } else {
        [rows, cols]
    }
}

/// What a fused product's output holds before it: zeros, or random values where `beta` reads
/// them.
fn old_output<B: Backend>(b: &B, beta: f32, shape: &[usize], seed: u64) -> Result<B::Tensor> {
    match beta {
        0.0 => b.zeros(shape, DType::F32),
        _ => b.tensor(shape, &uniform(seed, shape, -1.0, 1.0)?),
    }
}

/// A product's transposes and scales, as the checks' cases name them.
fn spec_text(spec: &MatmulSpec) -> String {
    format!(
        "ta={} tb={} α={} β={}",
        spec.trans_a, spec.trans_b, spec.alpha, spec.beta
    )
}

fn matmul_bias_act_run<B: Backend>(
    b: &B,
    (batch, dims, per_group_bias, act, inputs, seed): BiasActCase,
    spec: &MatmulSpec,
) -> Result<([Vec<f32>; 2], Ran)> {
    let (m, n, k) = dims;
    let s = inputs.storage;
    let x = stored(
        b,
        &as_stored(spec.trans_a, m, k),
        &operand(seed, [m, k], inputs.f16_values(s.a_f16))?,
        s.a_f16,
    )?;
    let [b0, b1] = as_stored(spec.trans_b, k, n);
    let w = stored(
        b,
        &[batch, b0, b1],
        &operand(seed + 1, [batch, k, n], inputs.f16_values(s.b_f16))?,
        s.b_f16,
    )?;
    let bias_shape = if per_group_bias {
        vec![batch, n]
    } else {
        vec![n]
    };
    let bias = b.tensor(&bias_shape, &uniform(seed + 2, &bias_shape, -1.0, 1.0)?)?;
    let mut pre = old_output(b, spec.beta, &[batch, m, n], seed + 3)?;
    let y_dtype = if s.aux_f16 { DType::F16 } else { DType::F32 };
    let mut y = b.zeros(&[batch, m, n], y_dtype)?;
    let spec = spec.f16(inputs.rounded);
    b.matmul_bias_act(&x, &w, &bias, &mut pre, &mut y, &spec, act)?;
    Ok(([b.read(&pre)?, b.read(&y)?], Ran::of(&x, &w, &pre, &spec)?))
}

/// The fused layer forward `pre = X·W[g]`, `y = act(pre + bias)` (X shared by `batch` weight
/// matrices, as for a group of peers), with the given `inputs` (X is A, W is B, Y is aux),
/// against the twins run one after the other.
pub fn matmul_bias_act(
    gpu: &GpuBackend,
    batch: usize,
    dims: (usize, usize, usize),
    per_group_bias: bool,
    act: Activation,
    inputs: Inputs,
    seed: u64,
) -> Result<KernelCheck> {
    let case = (batch, dims, per_group_bias, act, inputs, seed);
    matmul_bias_act_scaled(gpu, case, &MatmulSpec::default())
}

/// [`matmul_bias_act`] with the product's transposes, `alpha` and `beta` as `spec` says (its
/// `f16_inputs` is the case's); `pre` holds random values before where `beta` reads them.
pub fn matmul_bias_act_scaled(
    gpu: &GpuBackend,
    case: BiasActCase,
    spec: &MatmulSpec,
) -> Result<KernelCheck> {
    let (batch, dims, per_group_bias, act, inputs, _) = case;
    let ([pre, y], ran) = matmul_bias_act_run(gpu, case, spec)?;
    let ([cpre, cy], _) = matmul_bias_act_run(&CpuBackend, case, spec)?;
    // The product's bound; the activation then adds at most its relative tolerance (its slope is
    // at most ~1.13). An F16 Y is one rounding of a value both sides may hold a bound apart:
    // 2⁻¹¹ relative, and the bound may move it across one f16 step.
    let arithmetic = Arithmetic::of(gpu, inputs.f16_product());
    let bound = arithmetic.dot_bound(dims.2);
    let (y_rtol, y_atol) = if inputs.storage.aux_f16 {
        (2f64.powi(-10), 1.2 * bound + 2f64.powi(-24))
    } else {
        (RTOL, 1.2 * bound)
    };
    let names = [
        "matmul_bias_act",
        "matmul_coop_bias_act",
        "matmul_narrow_bias_act",
    ];
    // beta·old adds one rounding of its own.
    let pre_rtol = if spec.beta == 0.0 { 0.0 } else { RTOL };
    Ok(KernelCheck::new(
        ran.kernel(gpu, names)?,
        format!(
            "{batch}x{}x{}x{} {} {act:?} per-group bias {per_group_bias}{}",
            dims.0,
            dims.1,
            dims.2,
            spec_text(spec),
            inputs.describe()
        ),
    )
    .relative("pre", &pre, &cpre, pre_rtol, bound)
    .relative("y", &y, &cy, y_rtol, y_atol))
}

/// A fused hidden-layer-backward case: batch, (M, N, K), activation, inputs, seed.
type ActGradCase = (usize, (usize, usize, usize), Activation, Inputs, u64);

fn matmul_act_grad_run<B: Backend>(
    b: &B,
    (batch, dims, act, inputs, seed): ActGradCase,
    spec: &MatmulSpec,
) -> Result<(Vec<f32>, Ran)> {
    let (m, n, k) = dims;
    let s = inputs.storage;
    // As in a hidden layer's backward: dY [G, B, out] times Wᵀ (W [G, in, out] stored, used
    // transposed), then the gradient through act at the forward's pre-activation.
    let [a0, a1] = as_stored(spec.trans_a, m, k);
    let dy = stored(
        b,
        &[batch, a0, a1],
        &operand(seed, [batch, m, k], inputs.f16_values(s.a_f16))?,
        s.a_f16,
    )?;
    let [b0, b1] = as_stored(spec.trans_b, k, n);
    let w = stored(
        b,
        &[batch, b0, b1],
        &operand(seed + 1, [batch, n, k], inputs.f16_values(s.b_f16))?,
        s.b_f16,
    )?;
    let pre = stored(
        b,
        &[batch, m, n],
        &uniform(seed + 2, [batch, m, n], -3.0, 3.0)?,
        s.aux_f16,
    )?;
    let bias = b.tensor(&[batch, n], &uniform(seed + 3, [batch, n], -1.0, 1.0)?)?;
    let mut dpre = old_output(b, spec.beta, &[batch, m, n], seed + 4)?;
    let spec = spec.f16(inputs.rounded);
    b.matmul_act_grad(&dy, &w, &pre, &bias, &mut dpre, &spec, act)?;
    Ok((b.read(&dpre)?, Ran::of(&dy, &w, &dpre, &spec)?))
}

/// The fused hidden-layer backward `dpre = (dY·Wᵀ) ⊙ act'(pre + bias)` with the given `inputs`
/// (dY is A, W is B, pre is aux), against the twins run one after the other.
pub fn matmul_act_grad(
    gpu: &GpuBackend,
    batch: usize,
    dims: (usize, usize, usize),
    act: Activation,
    inputs: Inputs,
    seed: u64,
) -> Result<KernelCheck> {
    let case = (batch, dims, act, inputs, seed);
    matmul_act_grad_scaled(gpu, case, &MatmulSpec::new(false, true))
}

/// [`matmul_act_grad`] with the product's transposes, `alpha` and `beta` as `spec` says (its
/// `f16_inputs` is the case's); `dpre` holds random values before where `beta` reads them.
pub fn matmul_act_grad_scaled(
    gpu: &GpuBackend,
    case: ActGradCase,
    spec: &MatmulSpec,
) -> Result<KernelCheck> {
    let (batch, dims, act, inputs, _) = case;
    let (got, ran) = matmul_act_grad_run(gpu, case, spec)?;
    let (want, _) = matmul_act_grad_run(&CpuBackend, case, spec)?;
    // The product's bound times the largest slope (GELU's, ~1.13), plus the derivative's own
    // relative tolerance.
    let arithmetic = Arithmetic::of(gpu, inputs.f16_product());
    let bound = 1.2 * arithmetic.dot_bound(dims.2);
    let names = [
        "matmul_act_grad",
        "matmul_coop_act_grad",
        "matmul_narrow_act_grad",
    ];
    Ok(KernelCheck::new(
        ran.kernel(gpu, names)?,
        format!(
            "{batch}x{}x{}x{} {} {act:?}{}",
            dims.0,
            dims.1,
            dims.2,
            spec_text(spec),
            inputs.describe()
        ),
    )
    .relative("dpre", &got, &want, RTOL, bound))
}

fn bias_act_run<B: Backend>(
    b: &B,
    shape: &[usize],
    per_group_bias: bool,
    act: Activation,
    seed: u64,
) -> Result<[Vec<f32>; 3]> {
    let n = count(shape)?;
    let cols = shape[shape.len() - 1];
    let bias_shape = if per_group_bias {
        vec![shape[0], cols]
    } else {
        vec![cols]
    };
    let x = b.tensor(shape, &uniform(seed, [n], -3.0, 3.0)?)?;
    let bias = b.tensor(&bias_shape, &uniform(seed + 1, &bias_shape, -1.0, 1.0)?)?;
    let dy = b.tensor(shape, &uniform(seed + 2, [n], -1.0, 1.0)?)?;
    let mut y = b.zeros(shape, DType::F32)?;
    let mut dx = b.zeros(shape, DType::F32)?;
    b.bias_act(&x, &bias, &mut y, act)?;
    b.bias_act_backward(&x, &bias, &dy, &mut dx, act)?;
    // The bias gradient: column sums of dx over each group's rows (for a bias of its own), or
    // over every row (a bias all groups share: dx read back as one [rows, cols] matrix).
    let mut db = b.zeros(&bias_shape, DType::F32)?;
    let sum = ReduceSpec::scaled(1.0);
    if bias_shape.len() + 1 == shape.len() {
        b.reduce_sum(&dx, shape.len() - 2, &mut db, &sum)?;
    } else {
        let rows = b.tensor(&[n / cols, cols], &b.read(&dx)?)?;
        b.reduce_sum(&rows, 0, &mut db, &sum)?;
    }
    Ok([b.read(&y)?, b.read(&dx)?, b.read(&db)?])
}

/// Bias + activation forward and backward on `x` of `shape` (`[R, H]` or `[G, R, H]`), and the
/// bias gradient by `reduce_sum`.
pub fn bias_act(
    gpu: &GpuBackend,
    shape: &[usize],
    per_group_bias: bool,
    act: Activation,
    seed: u64,
) -> Result<KernelCheck> {
    need_rank("bias_act", shape, 2, true)?;
    let [y, dx, db] = bias_act_run(gpu, shape, per_group_bias, act, seed)?;
    let [cy, cdx, cdb] = bias_act_run(&CpuBackend, shape, per_group_bias, act, seed)?;
    // The rows each bias gradient sums: a group's, or every row for a shared bias.
    let cols = shape[shape.len() - 1];
    let rows = match per_group_bias {
        true => shape[shape.len() - 2],
        false => shape.iter().product::<usize>() / cols,
    } as f64;
    Ok(KernelCheck::new(
        "bias_act",
        format!("{shape:?} {act:?} per-group bias {per_group_bias}"),
    )
    .relative("y", &y, &cy, RTOL, 1e-6)
    .relative("dx", &dx, &cdx, RTOL, 1e-6)
    .relative("db", &db, &cdb, RTOL, 1e-6 * rows.sqrt()))
}

fn reduce_run<B: Backend>(
    b: &B,
    shape: &[usize],
    axis: usize,
    spec: &ReduceSpec,
    stack: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    out_shape.insert(0, stack);
    let x = b.tensor(shape, &uniform(seed, shape, -1.0, 1.0)?)?;
    let mut out = b.tensor(&out_shape, &uniform(seed + 1, &out_shape, -1.0, 1.0)?)?;
    b.reduce_sum(&x, axis, &mut out, spec)?;
    b.read(&out)
}

/// Sum over `axis` of a tensor of `shape`, scaled by 0.25, optionally accumulated, into the
/// last result of an output stack of `stack` results (the others must stay as they were).
pub fn reduce_sum(
    gpu: &GpuBackend,
    shape: &[usize],
    axis: usize,
    accumulate: bool,
    stack: usize,
    seed: u64,
) -> Result<KernelCheck> {
    need_rank("reduce_sum", shape, axis + 1, true)?;
    let spec = ReduceSpec {
        scale: 0.25,
        accumulate,
        out_row: stack.max(1) - 1,
    };
    let got = reduce_run(gpu, shape, axis, &spec, stack.max(1), seed)?;
    let want = reduce_run(&CpuBackend, shape, axis, &spec, stack.max(1), seed)?;
    let n = shape[axis] as f64;
    Ok(KernelCheck::new(
        "reduce_sum",
        format!(
            "{shape:?} axis {axis} accumulate {accumulate} into result {} of {stack}",
            spec.out_row
        ),
    )
    .relative("out", &got, &want, RTOL, 1e-6 * n.sqrt()))
}

fn ce_run<B: Backend>(
    b: &B,
    logits: &[f32],
    shape: &[usize],
    lab: &[u32],
    spec: &CrossEntropySpec,
) -> Result<[Vec<f32>; 2]> {
    let z = b.tensor(shape, logits)?;
    let y = b.tensor_u32(&[lab.len()], lab)?;
    let mut losses = b.zeros(&shape[..shape.len() - 1], DType::F32)?;
    let mut dz = b.zeros(shape, DType::F32)?;
    b.softmax_ce(&z, &y, &mut losses, &mut dz, spec)?;
    Ok([b.read(&losses)?, b.read(&dz)?])
}

/// Fused softmax cross-entropy on the given logits and labels. The loss is compared with
/// `loss_atol` absolute slack: an f32 logit of magnitude L is only exact to about L·2⁻²⁴.
pub fn softmax_ce_on(
    gpu: &GpuBackend,
    logits: &[f32],
    shape: &[usize],
    labels: &[u32],
    spec: &CrossEntropySpec,
    loss_atol: f64,
) -> Result<KernelCheck> {
    need_rank("softmax_ce", shape, 2, true)?;
    let [l, d] = ce_run(gpu, logits, shape, labels, spec)?;
    let [cl, cd] = ce_run(&CpuBackend, logits, shape, labels, spec)?;
    Ok(KernelCheck::new(
        "softmax_ce",
        format!("{shape:?} smoothing {}", spec.label_smoothing),
    )
    .relative("loss", &l, &cl, RTOL, loss_atol)
    .relative("dlogits", &d, &cd, RTOL, 1e-6))
}

/// Fused softmax cross-entropy on seeded logits in [−8, 8) of `shape` (`[B, C]` or `[P, B, C]`).
pub fn softmax_ce(
    gpu: &GpuBackend,
    shape: &[usize],
    smoothing: f32,
    seed: u64,
) -> Result<KernelCheck> {
    need_rank("softmax_ce", shape, 2, true)?;
    let rows = shape[shape.len() - 2];
    let classes = shape[shape.len() - 1];
    let z = uniform(seed, shape, -8.0, 8.0)?;
    let lab = labels(seed + 7, rows, classes)?;
    let spec = CrossEntropySpec {
        label_smoothing: smoothing,
        grad_scale: 1.0 / rows as f32,
    };
    softmax_ce_on(gpu, &z, shape, &lab, &spec, 1e-5)
}

fn kl_run<B: Backend>(
    b: &B,
    logits: &[f32],
    shape: &[usize],
    spec: &KlSpec,
) -> Result<[Vec<f32>; 2]> {
    let z = b.tensor(shape, logits)?;
    // Pre-filled losses, so the rows of peers outside the range must come back untouched; a
    // pre-filled gradient, so accumulation is exercised for real.
    let mut losses = b.tensor(&shape[..2], &uniform(98, [shape[0], shape[1]], 0.0, 1.0)?)?;
    let mut dz = b.tensor(shape, &uniform(99, [logits.len()], -1.0, 1.0)?)?;
    b.kl_div(&z, &mut losses, &mut dz, spec)?;
    Ok([b.read(&losses)?, b.read(&dz)?])
}

/// Mutual-learning KL on the given stacked logits `[P, B, C]`.
pub fn kl_div_on(
    gpu: &GpuBackend,
    logits: &[f32],
    shape: &[usize],
    spec: &KlSpec,
) -> Result<KernelCheck> {
    need_rank("kl_div", shape, 3, false)?;
    let [l, d] = kl_run(gpu, logits, shape, spec)?;
    let [cl, cd] = kl_run(&CpuBackend, logits, shape, spec)?;
    Ok(KernelCheck::new(
        "kl_div",
        format!(
            "{shape:?} T={} peers {:?} accumulate {}",
            spec.temperature, spec.peers, spec.accumulate
        ),
    )
    .relative("loss", &l, &cl, 1e-4, KL_ATOL)
    .relative(
        "dlogits",
        &d,
        &cd,
        RTOL,
        kl_gradient_atol(spec.temperature, spec.grad_scale),
    ))
}

/// The absolute slack of the T²-scaled KL rows, beside their relative 1e-4: the kernels' one
/// rounding of each row's log-sums (Δ, a few ulps of log C) enters the KL at second order, as
/// T²·Δ²/2, ~1e-7 at T = 1000; the log-ratios' own rounding, which entered at first order, is
/// gone.
const KL_ATOL: f64 = 1e-6;

/// The absolute slack of a KL gradient `scale·T·(p_i − mean p_j)`: 1e-6, plus `scale·T` times
/// four f32 ulps of 1, the probabilities' scale. At high temperatures the peers'
/// probabilities are nearly equal and their difference keeps the rounding of each one's
/// log-sum-exp, as any f32 softmax does; at T = 1000 that is ~1e-3 of the difference.
fn kl_gradient_atol(temperature: f32, scale: f32) -> f64 {
    1e-6 + (temperature as f64 * scale.abs() as f64) * 2f64.powi(-21)
}

/// Mutual-learning KL on seeded logits in [−6, 6) of `shape` `[P, B, C]`.
pub fn kl_div(gpu: &GpuBackend, shape: &[usize], spec: &KlSpec, seed: u64) -> Result<KernelCheck> {
    need_rank("kl_div", shape, 3, false)?;
    let z = uniform(seed, shape, -6.0, 6.0)?;
    kl_div_on(gpu, &z, shape, spec)
}

fn dml_loss_run<B: Backend>(
    b: &B,
    logits: &[f32],
    shape: &[usize],
    lab: &[u32],
    spec: &DmlLossSpec,
) -> Result<[Vec<f32>; 3]> {
    let z = b.tensor(shape, logits)?;
    let y = b.tensor_u32(&[lab.len()], lab)?;
    // Pre-filled outputs, so rows of peers outside the range must come back untouched.
    let rows = shape[0] * shape[1];
    let losses_shape = [2, shape[0], shape[1]];
    let mut losses = b.tensor(&losses_shape, &uniform(7, [2, rows], -1.0, 1.0)?)?;
    let mut dz = b.tensor(shape, &uniform(9, [logits.len()], -1.0, 1.0)?)?;
    b.dml_loss(&z, &y, &mut losses, &mut dz, spec)?;
    let mut ce = b.read(&losses)?;
    let kl = ce.split_off(rows);
    Ok([ce, kl, b.read(&dz)?])
}

/// The fused DML loss on seeded logits in [−6, 6) of `shape` `[P, B, C]`.
pub fn dml_loss(
    gpu: &GpuBackend,
    shape: &[usize],
    spec: &DmlLossSpec,
    seed: u64,
) -> Result<KernelCheck> {
    need_rank("dml_loss", shape, 3, false)?;
    let z = uniform(seed, shape, -6.0, 6.0)?;
    let lab = labels(seed + 3, shape[1], shape[2])?;
    dml_loss_on(gpu, &z, shape, &lab, spec)
}

/// The fused DML loss on the given stacked logits `[P, B, C]` and labels `[B]`.
pub fn dml_loss_on(
    gpu: &GpuBackend,
    logits: &[f32],
    shape: &[usize],
    lab: &[u32],
    spec: &DmlLossSpec,
) -> Result<KernelCheck> {
    need_rank("dml_loss", shape, 3, false)?;
    let [ce, kl, d] = dml_loss_run(gpu, logits, shape, lab, spec)?;
    let [cce, ckl, cd] = dml_loss_run(&CpuBackend, logits, shape, lab, spec)?;
    Ok(KernelCheck::new(
        "dml_loss",
        format!(
            "{shape:?} T={} ε={} peers {:?}",
            spec.temperature, spec.label_smoothing, spec.peers
        ),
    )
    .relative("ce", &ce, &cce, RTOL, 1e-5)
    .relative("kl", &kl, &ckl, 1e-4, KL_ATOL)
    .relative(
        "dlogits",
        &d,
        &cd,
        RTOL,
        kl_gradient_atol(spec.temperature, spec.kl_scale),
    ))
}

/// A seeded parameter of `shape` and the zeroed state tensors of `step`'s rule.
fn parameter_and_states<B: Backend>(
    b: &B,
    step: &OptimizerStep,
    shape: &[usize],
) -> Result<(B::Tensor, Vec<B::Tensor>)> {
    let n = count(shape)?;
    let param = b.tensor(shape, &uniform(1, [n], -1.0, 1.0)?)?;
    let states = (0..step.state_count())
        .map(|_| b.zeros(shape, DType::F32))
        .collect::<Result<Vec<_>>>()?;
    Ok((param, states))
}

/// The parameter, then every state tensor, as one vector.
fn read_parameter_and_states<B: Backend>(
    b: &B,
    param: &B::Tensor,
    states: &[B::Tensor],
) -> Result<Vec<f32>> {
    let mut out = b.read(param)?;
    for s in states {
        out.extend(b.read(s)?);
    }
    Ok(out)
}

/// The updated parameters and states, and with `f16_copy` the f16 copy each update also wrote.
fn optimizer_run<B: Backend>(
    b: &B,
    step: &OptimizerStep,
    n: usize,
    steps: u32,
    f16_copy: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut w, mut states) = parameter_and_states(b, step, &[n])?;
    let mut copy = b.zeros(&[n], DType::F16)?;
    for t in 1..=steps {
        let grad = b.tensor(&[n], &uniform(10 + t as u64, [n], -1.0, 1.0)?)?;
        let s = step.at_step(t);
        if f16_copy {
            b.optimizer_step_f16_copy(&s, &mut w, &grad, &mut states, &mut copy)?;
        } else {
            b.optimizer_step(&s, &mut w, &grad, &mut states)?;
        }
    }
    Ok((read_parameter_and_states(b, &w, &states)?, b.read(&copy)?))
}

/// `steps` optimizer updates of `n` parameters with seeded gradients; compares the parameters
/// and every state tensor, and with `f16_copy` (the fused update of mixed precision's f16
/// weights) the copy too, within one f16 step (WGSL leaves the rounding direction open).
pub fn optimizer(
    gpu: &GpuBackend,
    step: &OptimizerStep,
    n: usize,
    steps: u32,
    f16_copy: bool,
) -> Result<KernelCheck> {
    let (got, got16) = optimizer_run(gpu, step, n, steps, f16_copy)?;
    let (want, want16) = optimizer_run(&CpuBackend, step, n, steps, f16_copy)?;
    let case = format!(
        "{step:?} n={n} steps={steps}{}",
        if f16_copy { " f16 copy" } else { "" }
    );
    Ok(KernelCheck::new("optimizer", case)
        .relative("param+state", &got, &want, RTOL, 1e-6)
        .relative("f16 copy", &got16, &want16, 2f64.powi(-10), 2f64.powi(-24)))
}

/// `steps` updates of a whole layer (`Backend::update_layer`): weights `[.., inputs, H]` from
/// seeded gradients and the bias from a seeded `dpre` of `dpre_shape` (`[R, H]` or `[G, R, H]`),
/// with the weights' F16 copy when `f16_copy`. Returns the weights and their states, the bias and
/// its states, and the copy.
fn layer_update_run<B: Backend>(
    b: &B,
    step: &OptimizerStep,
    dpre_shape: &[usize],
    inputs: usize,
    f16_copy: bool,
    steps: u32,
) -> Result<[Vec<f32>; 3]> {
    dpre_rows(dpre_shape)?;
    let mut bias_shape = dpre_shape.to_vec();
    let h = bias_shape.remove(dpre_shape.len() - 2);
    let mut weight_shape = bias_shape.clone();
    weight_shape.insert(weight_shape.len() - 1, inputs);
    let n = count(&weight_shape)?;
    let len = count(dpre_shape)?;
    let (mut w, mut w_states) = parameter_and_states(b, step, &weight_shape)?;
    let (mut bias, mut b_states) = parameter_and_states(b, step, &bias_shape)?;
    let mut copy = b.zeros(&weight_shape, DType::F16)?;
    for t in 1..=steps {
        let dw = b.tensor(&weight_shape, &uniform(30 + t as u64, [n], -1.0, 1.0)?)?;
        let dpre = b.tensor(
            dpre_shape,
            &uniform(40 + t as u64 + h as u64, [len], -1.0, 1.0)?,
        )?;
        let layer = LayerUpdate {
            weight: &mut w,
            weight_grad: &dw,
            weight_states: &mut w_states,
            weight_f16: f16_copy.then_some(&mut copy),
            bias: &mut bias,
            dpre: &dpre,
            bias_states: &mut b_states,
        };
        b.update_layer(&step.at_step(t), layer)?;
    }
    Ok([
        read_parameter_and_states(b, &w, &w_states)?,
        read_parameter_and_states(b, &bias, &b_states)?,
        b.read(&copy)?,
    ])
}

/// A whole layer's update (weights with `inputs` rows, their F16 copy when `f16_copy`, and
/// the bias from `dpre`) on the GPU, one dispatch, against the CPU's update of each part in
/// turn: tolerances as for [`optimizer`] and [`bias_optimizer`].
pub fn layer_update(
    gpu: &GpuBackend,
    step: &OptimizerStep,
    dpre_shape: &[usize],
    inputs: usize,
    f16_copy: bool,
    steps: u32,
) -> Result<KernelCheck> {
    let [w, bias, copy] = layer_update_run(gpu, step, dpre_shape, inputs, f16_copy, steps)?;
    let [want_w, want_bias, want_copy] =
        layer_update_run(&CpuBackend, step, dpre_shape, inputs, f16_copy, steps)?;
    let rows = dpre_rows(dpre_shape)? as f64;
    let case = format!(
        "{step:?} dpre {dpre_shape:?} inputs {inputs} steps={steps}{}",
        if f16_copy { " f16 copy" } else { "" }
    );
    Ok(KernelCheck::new("optimizer (layer)", case)
        .relative("weights+state", &w, &want_w, RTOL, 1e-6)
        .relative("bias+state", &bias, &want_bias, RTOL, rows * 1e-6)
        .relative(
            "f16 copy",
            &copy,
            &want_copy,
            2f64.powi(-10),
            2f64.powi(-24),
        ))
}

/// The rows `R` of a pre-activation gradient of shape `[R, H]` or `[G, R, H]`.
fn dpre_rows(dpre_shape: &[usize]) -> Result<usize> {
    match dpre_shape {
        [.., rows, _] if dpre_shape.len() <= 3 => Ok(*rows),
        _ => Err(CohortError::shape(
            "optimizer (bias)",
            format!("dpre must be [R, H] or [G, R, H], got {dpre_shape:?}"),
        )),
    }
}

fn bias_optimizer_run<B: Backend>(
    b: &B,
    step: &OptimizerStep,
    dpre_shape: &[usize],
    steps: u32,
) -> Result<Vec<f32>> {
    dpre_rows(dpre_shape)?;
    let mut bias_shape = dpre_shape.to_vec();
    bias_shape.remove(dpre_shape.len() - 2);
    let len = count(dpre_shape)?;
    let (mut bias, mut states) = parameter_and_states(b, step, &bias_shape)?;
    for t in 1..=steps {
        let dpre = b.tensor(dpre_shape, &uniform(20 + t as u64, [len], -1.0, 1.0)?)?;
        b.bias_optimizer_step(&step.at_step(t), &mut bias, &dpre, &mut states)?;
    }
    read_parameter_and_states(b, &bias, &states)
}

/// `steps` updates of a bias from a pre-activation gradient `dpre` of `dpre_shape` (`[R, H]` or
/// `[G, R, H]`; the bias gradient is its column sum), against the twins run in turn (reduce_sum,
/// then the optimizer).
pub fn bias_optimizer(
    gpu: &GpuBackend,
    step: &OptimizerStep,
    dpre_shape: &[usize],
    steps: u32,
) -> Result<KernelCheck> {
    let got = bias_optimizer_run(gpu, step, dpre_shape, steps)?;
    let want = bias_optimizer_run(&CpuBackend, step, dpre_shape, steps)?;
    // The column sums of R values in [-1, 1] differ by summation order (R·2⁻²³ relative).
    let rows = dpre_rows(dpre_shape)? as f64;
    Ok(KernelCheck::new(
        "optimizer (bias)",
        format!("{step:?} dpre {dpre_shape:?} steps={steps}"),
    )
    .relative("bias+state", &got, &want, RTOL, rows * 1e-6))
}

fn axpby_run<B: Backend>(b: &B, n: usize) -> Result<Vec<f32>> {
    let x = b.tensor(&[n], &uniform(1, [n], -1.0, 1.0)?)?;
    let mut y = b.tensor(&[n], &uniform(2, [n], -1.0, 1.0)?)?;
    b.axpby(
        Some(&x),
        &mut y,
        &Axpby {
            a: 2.0,
            b: -0.5,
            c: 0.25,
        },
    )?;
    let mut out = b.read(&y)?;
    // Without x: y = b·y + c (a has no effect).
    b.axpby(
        None,
        &mut y,
        &Axpby {
            a: 9.0,
            b: -0.5,
            c: 0.25,
        },
    )?;
    out.extend(b.read(&y)?);
    // A fill ignores the old contents, even NaN.
    let mut z = b.tensor(&[n], &vec![f32::NAN; n])?;
    b.fill(&mut z, 3.5)?;
    out.extend(b.read(&z)?);
    let mut part = b.zeros(&[n + 2], DType::F32)?;
    b.copy(&x, 0, &mut part, 2, n)?;
    out.extend(b.read(&part)?);
    Ok(out)
}

/// `y = a·x + b·y + c`, then `y = b·y + c` without x, a fill over NaNs, and an offset copy, on
/// `n` elements.
pub fn axpby(gpu: &GpuBackend, n: usize) -> Result<KernelCheck> {
    let got = axpby_run(gpu, n)?;
    let want = axpby_run(&CpuBackend, n)?;
    Ok(
        KernelCheck::new("axpby", format!("n={n} (without x, fill and copy too)"))
            .relative("y", &got, &want, RTOL, 1e-6),
    )
}

fn count_run<B: Backend>(b: &B, logits: &[f32], shape: &[usize], lab: &[u32]) -> Result<Vec<u32>> {
    let z = b.tensor(shape, logits)?;
    let y = b.tensor_u32(&[lab.len()], lab)?;
    let mut counts = b.tensor_u32(&[shape[0] + 1], &vec![1; shape[0] + 1])?;
    b.count_correct(&z, &y, &mut counts)?;
    b.count_correct(&z, &y, &mut counts)?; // counts accumulate
    b.read_u32(&counts)
}

/// Accuracy counts of every peer and the ensemble on the given logits `[P, B, C]`, run twice to
/// check accumulation.
pub fn count_correct_on(
    gpu: &GpuBackend,
    logits: &[f32],
    shape: &[usize],
    labels: &[u32],
) -> Result<(KernelCheck, Vec<u32>)> {
    need_rank("count_correct", shape, 3, false)?;
    let got = count_run(gpu, logits, shape, labels)?;
    let want = count_run(&CpuBackend, logits, shape, labels)?;
    Ok((
        KernelCheck::new("count_correct", format!("{shape:?}")).exact("counts", &got, &want),
        got,
    ))
}

/// Logits at the edge of f32, one row each, on which the loss kernels must agree with their
/// CPU twins ([`losses_at_f32s_edge`]).
pub mod f32_edge {
    /// Two tied classes near f32's largest: CE of label 0 is log 2, its gradient (−½, ½, 0, 0).
    pub const TIES: [f32; 4] = [3e38, 3e38, -3e38, 0.0];
    /// Classes 6e38 below the largest: under label smoothing ε each adds ε/4 · 6e38 to the CE
    /// of label 1, finite, though M − z is not in f32.
    pub const FAR: [f32; 4] = [-3e38, 3e38, -3e38, -3e38];
    /// A row near 0, FAR's peer: the KL of FAR's peer against it is 3.16e38, just inside f32,
    /// though the log-ratios are not.
    pub const NEAR: [f32; 4] = [0.0, 1.0, 0.5, -1.0];
    /// Two peers with ties near f32's largest: p₀ = (⅓, 0, ⅓, ⅓), p₁ = (⅓, ⅓, ⅓, 0), so
    /// peer 0's KL gradient at T = 1 is p₀ − p₁ = (0, −⅓, 0, ⅓).
    pub const TIED_PEERS: [f32; 8] = [3e38, 2.9e38, 3e38, 3e38, 1e38, 1e38, 1e38, 0.9e38];
    /// Two peers of 3 classes, label 2: peer 0's ties weigh (½, ½, 0), peer 1 gives
    /// (0, 0.2, 0.8), so the ensemble picks class 2 (0.8 against 0.7); were each tie 1, class 1.
    pub const ENSEMBLE: [f32; 6] = [3e38, 3e38, -3e38, -100.0, -1.609_438, -0.223_143_55];
    /// Two peers of 4 classes, label 1, each sure of its own class: peer 0 lacks 3·e⁻²⁰ (6e-9)
    /// of 1 at class 0, peer 1 3·e⁻²⁵ (4e-11) at class 1, so the mean favours class 1 (by
    /// 8e-9). Both round to 1 in f32: summed as they were, the classes tied and class 0 won.
    pub const SATURATED: [f32; 8] = [20.0, 0.0, 0.0, 0.0, 0.0, 25.0, 0.0, 0.0];
}

/// The loss kernels on [`f32_edge`]'s rows against their twins: CE of the ties and (smoothed)
/// of FAR, the KL and fused loss of TIED_PEERS and of FAR beside NEAR, and the accuracy counts
/// of ENSEMBLE and SATURATED. Shaders that formed log-probabilities as z − (M + log Σ) lost the
/// log-sum here, differences past f32's largest gave inf, and summed probabilities near 1 tied.
pub fn losses_at_f32s_edge(gpu: &GpuBackend) -> Result<Vec<KernelCheck>> {
    use f32_edge::{ENSEMBLE, FAR, NEAR, SATURATED, TIED_PEERS, TIES};
    let plain = CrossEntropySpec {
        label_smoothing: 0.0,
        grad_scale: 1.0,
    };
    let smoothed = CrossEntropySpec {
        label_smoothing: 0.1,
        ..plain
    };
    let kl = KlSpec {
        temperature: 1.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..2,
    };
    let dml = |peers| DmlLossSpec {
        label_smoothing: 0.1,
        ce_scale: 1.0,
        temperature: 1.0,
        kl_scale: 1.0,
        peers,
    };
    let far_near = [FAR, NEAR].concat();
    let checks = [
        (
            "TIES",
            softmax_ce_on(gpu, &TIES, &[1, 4], &[0], &plain, 1e-6)?,
        ),
        (
            "FAR",
            softmax_ce_on(gpu, &FAR, &[1, 4], &[1], &smoothed, 1e-6)?,
        ),
        ("TIED_PEERS", kl_div_on(gpu, &TIED_PEERS, &[2, 1, 4], &kl)?),
        ("FAR, NEAR", kl_div_on(gpu, &far_near, &[2, 1, 4], &kl)?),
        ("FAR", dml_loss_on(gpu, &FAR, &[1, 1, 4], &[1], &dml(0..1))?),
        (
            "TIED_PEERS",
            dml_loss_on(gpu, &TIED_PEERS, &[2, 1, 4], &[0], &dml(0..2))?,
        ),
        (
            "FAR, NEAR",
            dml_loss_on(gpu, &far_near, &[2, 1, 4], &[1], &dml(0..2))?,
        ),
        (
            "ENSEMBLE",
            count_correct_on(gpu, &ENSEMBLE, &[2, 1, 3], &[2])?.0,
        ),
        (
            "SATURATED",
            count_correct_on(gpu, &SATURATED, &[2, 1, 4], &[1])?.0,
        ),
    ];
    Ok(checks
        .into_iter()
        .map(|(rows, mut check)| {
            check.case = format!("{} f32_edge::{rows}", check.case);
            check
        })
        .collect())
}

/// Accuracy counts on seeded logits of `shape` `[P, B, C]`.
pub fn count_correct(gpu: &GpuBackend, shape: &[usize], seed: u64) -> Result<KernelCheck> {
    need_rank("count_correct", shape, 3, false)?;
    let z = uniform(seed, shape, -3.0, 3.0)?;
    let lab = labels(seed + 1, shape[1], shape[2])?;
    Ok(count_correct_on(gpu, &z, shape, &lab)?.0)
}

fn gather_run<B: Backend>(
    b: &B,
    rows: usize,
    width: usize,
    index: &[u32],
    offset: usize,
    f16: bool,
) -> Result<(Vec<f32>, Vec<u32>)> {
    let values = uniform(4, [rows, width], -1.0, 1.0)?;
    let src = stored(b, &[rows, width], &values, f16)?;
    let lab: Vec<u32> = (0..rows as u32).map(|v| v * 7).collect();
    let src_lab = b.tensor_u32(&[rows], &lab)?;
    let idx = b.tensor_u32(&[index.len()], index)?;
    let batch = index.len().checked_sub(offset).ok_or_else(|| {
        CohortError::shape(
            "gather",
            format!("offset {offset} is past the {} indices", index.len()),
        )
    })?;
    // Outputs that hold other values, so rows the gather must zero (indices past the table)
    // are seen to be written.
    let mut dst = stored(b, &[batch, width], &vec![9.0; batch * width], f16)?;
    let mut dst_lab = b.tensor_u32(&[batch], &vec![12345; batch])?;
    b.gather_batch(&src, &src_lab, &idx, offset, &mut dst, &mut dst_lab)?;
    Ok((b.read(&dst)?, b.read_u32(&dst_lab)?))
}

/// Batch gather of F32 (F16 with `f16`) rows and U32 labels from a `[rows, width]` data set by
/// the slice of `index` from `offset`.
pub fn gather(
    gpu: &GpuBackend,
    rows: usize,
    width: usize,
    index: &[u32],
    offset: usize,
    f16: bool,
) -> Result<(KernelCheck, Vec<f32>, Vec<u32>)> {
    let got = gather_run(gpu, rows, width, index, offset, f16)?;
    let want = gather_run(&CpuBackend, rows, width, index, offset, f16)?;
    let check = KernelCheck::new(
        "gather",
        format!(
            "{rows}x{width}{} by indices {offset}..{}",
            if f16 { " F16" } else { "" },
            index.len()
        ),
    )
    .exact("rows", &got.0, &want.0)
    .exact("labels", &got.1, &want.1);
    Ok((check, got.0, got.1))
}

fn convert_run<B: Backend>(b: &B, values: &[f32]) -> Result<[Vec<f32>; 2]> {
    let n = values.len();
    let src = b.tensor(&[n], values)?;
    let mut half = b.zeros(&[n], DType::F16)?;
    b.convert(&src, &mut half)?;
    let mut back = b.zeros(&[n], DType::F32)?;
    b.convert(&half, &mut back)?;
    Ok([b.read(&half)?, b.read(&back)?])
}

/// f32 → f16 → f32 over `n` values spread across f16's normal range (magnitudes 2⁻¹⁴ to 2¹⁵,
/// both signs). Rounding to f16 may go either way (WGSL leaves it open): one f16 step, 2⁻¹⁰
/// relative, is allowed; the way back must be exact.
pub fn convert(gpu: &GpuBackend, n: usize, seed: u64) -> Result<KernelCheck> {
    let mut rng = Rng::new(seed);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let magnitude = 2f64.powf(-14.0 + 29.0 * rng.uniform()) as f32;
            if rng.below(2) == 0 {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect();
    let [half, back] = convert_run(gpu, &values)?;
    let [want, _] = convert_run(&CpuBackend, &values)?;
    Ok(KernelCheck::new("convert", format!("{n} values"))
        .relative("f16", &half, &want, 2f64.powi(-10), 0.0)
        .exact("f32 of the f16", &back, &half))
}

/// A quick default set covering every kernel, for `cohort check`.
pub fn run_all(gpu: &GpuBackend) -> Result<Vec<KernelCheck>> {
    let mut out = Vec::new();
    for (i, dims) in [(7, 13, 29), (64, 64, 64), (65, 63, 1000)]
        .into_iter()
        .enumerate()
    {
        for t in 0..4 {
            out.push(matmul(
                gpu,
                Batching::SharedA(2),
                dims,
                &MatmulSpec::new(t & 1 == 1, t & 2 == 2),
                (i * 4 + t) as u64,
            )?);
        }
    }
    out.push(matmul(
        gpu,
        Batching::All(3),
        (33, 17, 70),
        &MatmulSpec::new(false, false).accumulate(),
        5,
    )?);
    // The output layer's forward and weight gradient in issue 4's small step (2 peers of
    // 784-1024-1024-10, batch 256), on the narrow kernel with the row counts a GPU gives them.
    for (i, (dims, trans_a)) in [((256, 10, 1024), false), ((1024, 10, 256), true)]
        .into_iter()
        .enumerate()
    {
        let spec = MatmulSpec::new(trans_a, false);
        out.push(matmul(gpu, Batching::All(2), dims, &spec, 6 + i as u64)?);
    }
    let (identity, f32_inputs) = (Activation::Identity, Inputs::F32);
    out.push(matmul_bias_act(
        gpu,
        2,
        (256, 10, 1024),
        true,
        identity,
        f32_inputs,
        8,
    )?);
    for t in 0..4 {
        let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(true);
        out.push(matmul(
            gpu,
            Batching::SharedA(2),
            (65, 63, 300),
            &spec,
            20 + t as u64,
        )?);
    }
    out.push(matmul_f16_rounding(gpu)?);
    for columns in [1, 64] {
        out.push(matmul_f16_ties(gpu, columns)?);
    }
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Gelu,
        Activation::Tanh,
    ] {
        for f16_inputs in [false, true] {
            let inputs = Inputs::rounded(f16_inputs);
            out.push(matmul_bias_act(
                gpu,
                2,
                (65, 70, 100),
                true,
                act,
                inputs,
                30,
            )?);
            out.push(matmul_act_grad(gpu, 2, (65, 70, 100), act, inputs, 40)?);
        }
    }
    // The fused epilogues with every transpose, alpha and beta (the layers use 1 and 0, and
    // NN or NT): the tiled or tensor-core kernel, and the narrow one (10 columns).
    for (i, (dims, f16_inputs)) in [
        ((65, 70, 100), false),
        ((65, 70, 100), true),
        ((67, 10, 300), false),
    ]
    .into_iter()
    .enumerate()
    {
        let inputs = Inputs::rounded(f16_inputs);
        for t in 0..4 {
            let spec = MatmulSpec {
                alpha: 0.5,
                beta: 1.0,
                ..MatmulSpec::new(t & 1 == 1, t & 2 == 2)
            };
            let seed = 60 + 4 * i as u64 + t as u64;
            let forward = (2, dims, true, Activation::Gelu, inputs, seed);
            out.push(matmul_bias_act_scaled(gpu, forward, &spec)?);
            let backward = (2, dims, Activation::Tanh, inputs, seed);
            out.push(matmul_act_grad_scaled(gpu, backward, &spec)?);
        }
    }
    if gpu.f16_tensors() {
        // F16 tensors as mixed-precision training uses them: the forward from an F16 input and
        // F16 weights into an F16 Y, the backward with F16 weights.
        let all = MatmulStorage {
            a_f16: true,
            b_f16: true,
            aux_f16: true,
        };
        let weights = MatmulStorage {
            b_f16: true,
            ..MatmulStorage::F32
        };
        out.push(matmul_stored(
            gpu,
            Batching::SharedA(2),
            (65, 63, 300),
            &MatmulSpec::new(true, false),
            all,
            24,
        )?);
        let act = Activation::Gelu;
        out.push(matmul_bias_act(
            gpu,
            2,
            (65, 70, 100),
            true,
            act,
            Inputs::stored(all, false),
            31,
        )?);
        out.push(matmul_act_grad(
            gpu,
            2,
            (65, 70, 100),
            act,
            Inputs::stored(weights, true),
            41,
        )?);
    }
    for act in [Activation::Relu, Activation::Gelu, Activation::Tanh] {
        out.push(bias_act(gpu, &[2, 64, 100], true, act, 1)?);
    }
    out.push(reduce_sum(gpu, &[3, 300, 7], 1, true, 2, 2)?);
    out.push(softmax_ce(gpu, &[2, 64, 10], 0.1, 3)?);
    out.extend(losses_at_f32s_edge(gpu)?);
    out.push(kl_div(
        gpu,
        &[3, 64, 10],
        &KlSpec {
            temperature: 2.0,
            grad_scale: 0.5,
            accumulate: true,
            peers: 0..3,
        },
        4,
    )?);
    out.push(dml_loss(
        gpu,
        &[3, 64, 10],
        &DmlLossSpec {
            label_smoothing: 0.1,
            ce_scale: 1.0 / 64.0,
            temperature: 2.0,
            kl_scale: 0.5,
            peers: 0..3,
        },
        6,
    )?);
    let sgd = OptimizerStep::Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        grad_scale: 1.0 / 64.0,
    };
    let adam = OptimizerStep::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-2,
        decoupled: true,
        t: 1,
        grad_scale: 1.0,
    };
    for step in [sgd, adam] {
        out.push(optimizer(gpu, &step, 1000, 3, false)?);
        if gpu.f16_tensors() {
            out.push(optimizer(gpu, &step, 1000, 3, true)?);
        }
        out.push(bias_optimizer(gpu, &step, &[2, 64, 100], 3)?);
        out.push(layer_update(
            gpu,
            &step,
            &[2, 64, 100],
            50,
            gpu.f16_tensors(),
            3,
        )?);
    }
    out.push(axpby(gpu, 1000)?);
    if gpu.f16_tensors() {
        out.push(convert(gpu, 1001, 7)?);
    }
    out.push(count_correct(gpu, &[3, 200, 10], 5)?);
    out.push(gather(gpu, 10, 64, &[5, 0, 9, 9, 3, 1000], 1, false)?.0);
    if gpu.f16_tensors() {
        out.push(gather(gpu, 10, 6, &[5, 0, 9, 9, 3, 1000], 0, true)?.0);
    }
    Ok(out)
}
