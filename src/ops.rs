//! The kernel set as data: each operation's parameters and the shape rules that both backends check
//! before running anything. A backend only ever sees validated, flattened dimensions.

use crate::config::{outside_unit_interval, short_number};
use crate::error::{CohortError, Result};
use crate::tensor::{DType, Shape, TensorInfo};

fn expect_dtype(op: &'static str, name: &str, t: &impl TensorInfo, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(CohortError::shape(
            op,
            format!("{name} must be {dtype:?}, got {:?}", t.dtype()),
        ));
    }
    Ok(())
}

fn expect_shape(op: &'static str, name: &str, t: &impl TensorInfo, want: &[usize]) -> Result<()> {
    if t.shape().dims() != want {
        return Err(CohortError::shape(
            op,
            format!("{name} must be {}, got {}", Shape::new(want), t.shape()),
        ));
    }
    Ok(())
}

fn expect_nonempty(op: &'static str, name: &str, t: &impl TensorInfo) -> Result<()> {
    if t.shape().numel() == 0 {
        return Err(CohortError::shape(
            op,
            format!("{name} is empty: {}", t.shape()),
        ));
    }
    Ok(())
}

/// Checks that `len` values fill a tensor of `shape` exactly.
pub fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let want = Shape::new(shape).checked_numel();
    if want != Some(len) {
        let want = want.map_or("more than usize::MAX".into(), |n| n.to_string());
        return Err(CohortError::shape(
            "tensor",
            format!(
                "shape {} needs {want} elements, got {len}",
                Shape::new(shape)
            ),
        ));
    }
    Ok(())
}

/// `C = alpha · op(A) · op(B) + beta · C`, batched. Operands of rank 2 are shared by every batch entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    /// Use Aᵀ: A is stored as `[.., K, M]`.
    pub trans_a: bool,
    /// Use Bᵀ: B is stored as `[.., N, K]`.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old C (0 overwrites, 1 accumulates).
    pub beta: f32,
    /// Round A and B to f16 before multiplying, accumulating in f32 (mixed precision; tensor
    /// cores where the adapter has cooperative matrices). f16 overflows beyond ±65504. Operands
    /// stored as [`DType::F16`] are f16 already; a product of two of them is an f16 product
    /// with or without this flag.
    pub f16_inputs: bool,
}

impl Default for MatmulSpec {
    fn default() -> Self {
        MatmulSpec {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            f16_inputs: false,
        }
    }
}

impl MatmulSpec {
    /// Plain `C = A · B`.
    pub fn new(trans_a: bool, trans_b: bool) -> Self {
        MatmulSpec {
            trans_a,
            trans_b,
            ..Default::default()
        }
    }

    /// The same product, accumulated into C (`beta = 1`).
    pub fn accumulate(mut self) -> Self {
        self.beta = 1.0;
        self
    }

    /// The same product with f16 inputs and f32 accumulation when `on`.
    pub fn f16(mut self, on: bool) -> Self {
        self.f16_inputs = on;
        self
    }
}

/// Validated matmul dimensions. A batch stride of 0 means the operand is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MatmulDims {
    /// Batch count.
    pub batch: usize,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Elements between consecutive A matrices (0: shared).
    pub stride_a: usize,
    /// Elements between consecutive B matrices (0: shared).
    pub stride_b: usize,
    /// A is stored transposed.
    pub trans_a: bool,
    /// B is stored transposed.
    pub trans_b: bool,
    /// A and B are f16 when multiplied: rounded (`MatmulSpec::f16_inputs`) or stored as F16.
    pub f16_inputs: bool,
}

impl std::fmt::Display for MatmulDims {
    /// `[B×]M×N×K` (the batch where there is more than one), the transposes and ` f16` for f16
    /// products: e.g. `2×256×1024×784 NT f16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.batch > 1 {
            write!(f, "{}×", self.batch)?;
        }
        let layout = |t: bool| if t { 'T' } else { 'N' };
        write!(
            f,
            "{}×{}×{} {}{}{}",
            self.m,
            self.n,
            self.k,
            layout(self.trans_a),
            layout(self.trans_b),
            if self.f16_inputs { " f16" } else { "" }
        )
    }
}

impl MatmulDims {
    /// Checks `A`, `B`, `C` against `spec` and returns the flattened dimensions.
    pub fn infer(
        a: &impl TensorInfo,
        b: &impl TensorInfo,
        c: &impl TensorInfo,
        spec: &MatmulSpec,
    ) -> Result<Self> {
        const OP: &str = "matmul";
        for (name, t) in [("A", a as &dyn TensorInfoDyn), ("B", b), ("C", c)] {
            let dtype = t.dtype_dyn();
            if dtype != DType::F32 && (name == "C" || dtype != DType::F16) {
                return Err(CohortError::shape(
                    OP,
                    format!(
                        "{name} must be F32{}, got {dtype:?}",
                        if name == "C" { "" } else { " or F16" }
                    ),
                ));
            }
            let rank = t.shape_dyn().rank();
            if !(2..=3).contains(&rank) {
                return Err(CohortError::shape(
                    OP,
                    format!("{name} must have rank 2 or 3, got {}", t.shape_dyn()),
                ));
            }
            if t.shape_dyn().numel() == 0 {
                return Err(CohortError::shape(
                    OP,
                    format!("{name} is empty: {}", t.shape_dyn()),
                ));
            }
        }
        let split = |s: &Shape| -> (Option<usize>, usize, usize) {
            let d = s.dims();
            if d.len() == 3 {
                (Some(d[0]), d[1], d[2])
            } else {
                (None, d[0], d[1])
            }
        };
        let (ba, ar, ac) = split(a.shape());
        let (bb, br, bc) = split(b.shape());
        let (bc_, m, n) = split(c.shape());
        let (am, ak) = if spec.trans_a { (ac, ar) } else { (ar, ac) };
        let (bk, bn) = if spec.trans_b { (bc, br) } else { (br, bc) };
        let batch = bc_.or(ba).or(bb).unwrap_or(1);
        let ctx = || {
            format!(
                "A {}{} · B {}{} -> C {}",
                a.shape(),
                if spec.trans_a { "ᵀ" } else { "" },
                b.shape(),
                if spec.trans_b { "ᵀ" } else { "" },
                c.shape()
            )
        };
        if am != m || bn != n || ak != bk {
            return Err(CohortError::shape(OP, ctx()));
        }
        if bc_.is_none() && (ba.is_some() || bb.is_some()) {
            return Err(CohortError::shape(
                OP,
                format!("batched operands need a batched C: {}", ctx()),
            ));
        }
        for bx in [ba, bb].into_iter().flatten() {
            if bx != batch {
                return Err(CohortError::shape(
                    OP,
                    format!("batch counts differ: {}", ctx()),
                ));
            }
        }
        Ok(MatmulDims {
            batch,
            m,
            n,
            k: ak,
            stride_a: if ba.is_some() { m * ak } else { 0 },
            stride_b: if bb.is_some() { ak * n } else { 0 },
            trans_a: spec.trans_a,
            trans_b: spec.trans_b,
            f16_inputs: spec.f16_inputs || (a.dtype() == DType::F16 && b.dtype() == DType::F16),
        })
    }

    /// Floating-point operations of one call (2·batch·M·N·K).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

// Object-safe view used to loop over differently typed operands.
trait TensorInfoDyn {
    fn shape_dyn(&self) -> &Shape;
    fn dtype_dyn(&self) -> DType;
}
impl<T: TensorInfo> TensorInfoDyn for T {
    fn shape_dyn(&self) -> &Shape {
        self.shape()
    }
    fn dtype_dyn(&self) -> DType {
        self.dtype()
    }
}

/// Element-wise activation applied after the bias.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// No activation (`y = x + b`).
    Identity,
    /// `max(0, x)`.
    #[default]
    Relu,
    /// GELU, tanh approximation.
    Gelu,
    /// Hyperbolic tangent.
    Tanh,
}

impl Activation {
    /// The code the shaders use.
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Gelu => 2,
            Activation::Tanh => 3,
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = CohortError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "identity" | "none" | "linear" => Ok(Activation::Identity),
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "tanh" => Ok(Activation::Tanh),
            _ => Err(CohortError::InvalidConfig(format!(
                "unknown activation '{s}' (relu, gelu, tanh, identity)"
            ))),
        }
    }
}

/// Validated dimensions of the bias + activation kernels: `x` is `[groups, rows, cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasActDims {
    /// Independent groups (peers); 1 for a rank-2 `x`.
    pub groups: usize,
    /// Rows per group.
    pub rows: usize,
    /// Columns (features).
    pub cols: usize,
    /// Elements between consecutive bias vectors (0: one bias shared by all groups).
    pub bias_stride: usize,
}

impl BiasActDims {
    /// Checks `x` (`[R, H]` or `[G, R, H]`), `bias` (`[H]` or `[G, H]`) and the output `y`.
    pub fn infer(x: &impl TensorInfo, bias: &impl TensorInfo, y: &impl TensorInfo) -> Result<Self> {
        expect_dtype("bias_act", "y", y, DType::F32)?;
        Self::infer_fused(x, bias, y)
    }

    /// The same checks for a matmul's fused epilogue, whose `aux` tensor (the layer output Y, or
    /// the pre-activation read by the backward) may also be F16.
    pub fn infer_fused(
        x: &impl TensorInfo,
        bias: &impl TensorInfo,
        aux: &impl TensorInfo,
    ) -> Result<Self> {
        const OP: &str = "bias_act";
        expect_dtype(OP, "x", x, DType::F32)?;
        expect_dtype(OP, "bias", bias, DType::F32)?;
        if !aux.dtype().is_float() {
            return Err(CohortError::shape(
                OP,
                format!("y must be F32 or F16, got {:?}", aux.dtype()),
            ));
        }
        expect_nonempty(OP, "x", x)?;
        let d = x.shape().dims();
        let (groups, rows, cols) = match d.len() {
            2 => (1, d[0], d[1]),
            3 => (d[0], d[1], d[2]),
            _ => {
                return Err(CohortError::shape(
                    OP,
                    format!("x must have rank 2 or 3, got {}", x.shape()),
                ))
            }
        };
        let bias_stride = match bias.shape().dims() {
            [h] if *h == cols => 0,
            [g, h] if *g == groups && *h == cols && d.len() == 3 => cols,
            _ => {
                return Err(CohortError::shape(
                    OP,
                    format!("bias {} does not fit x {}", bias.shape(), x.shape()),
                ))
            }
        };
        expect_shape(OP, "output", aux, d)?;
        Ok(BiasActDims {
            groups,
            rows,
            cols,
            bias_stride,
        })
    }
}

/// How [`crate::Backend::reduce_sum`] writes its result: `scale` times the sum, added to what
/// is there when `accumulate`, into result slot `out_row` of the output (a stack of one or more
/// results: the trainer sums each step's losses straight into a row of its loss history).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReduceSpec {
    /// Factor on the sum.
    pub scale: f32,
    /// Add to the output instead of overwriting it.
    pub accumulate: bool,
    /// Which result of the output stack to write (0 for an output of one result).
    pub out_row: usize,
}

impl ReduceSpec {
    /// `scale` times the sum, overwriting the output's one result.
    pub fn scaled(scale: f32) -> Self {
        ReduceSpec {
            scale,
            accumulate: false,
            out_row: 0,
        }
    }
}

/// Validated dimensions of a sum over one axis: `x` viewed as `[outer, n, inner]` → `[outer, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReduceDims {
    /// Product of the dimensions before the axis.
    pub outer: usize,
    /// The reduced dimension.
    pub n: usize,
    /// Product of the dimensions after the axis.
    pub inner: usize,
}

impl ReduceDims {
    /// Checks a sum of `x` over `axis` into result `out_row` of `out`, a stack of results of
    /// `x`'s shape without that axis. Returns the dimensions and the output offset in elements.
    pub fn infer_into(
        x: &impl TensorInfo,
        axis: usize,
        out: &impl TensorInfo,
        out_row: usize,
    ) -> Result<(Self, usize)> {
        let d = Self::infer_stack(x, axis, out)?;
        let count = d.outer * d.inner;
        let rows = out.shape().numel() / count;
        if out_row >= rows {
            return Err(CohortError::shape(
                "reduce_sum",
                format!(
                    "result {out_row} of an output {} holding {rows}",
                    out.shape()
                ),
            ));
        }
        Ok((d, out_row * count))
    }

    /// Checks a sum of `x` over `axis` into `out`, whose shape is `x`'s without that axis.
    pub fn infer(x: &impl TensorInfo, axis: usize, out: &impl TensorInfo) -> Result<Self> {
        let d = Self::infer_stack(x, axis, out)?;
        if out.shape().numel() != d.outer * d.inner {
            return Err(CohortError::shape(
                "reduce_sum",
                format!(
                    "output {} must hold one result of {}",
                    out.shape(),
                    d.outer * d.inner
                ),
            ));
        }
        Ok(d)
    }

    /// Checks a sum of `x` over `axis` into `out`, a stack of one or more results.
    fn infer_stack(x: &impl TensorInfo, axis: usize, out: &impl TensorInfo) -> Result<Self> {
        const OP: &str = "reduce_sum";
        expect_dtype(OP, "x", x, DType::F32)?;
        expect_dtype(OP, "out", out, DType::F32)?;
        expect_nonempty(OP, "x", x)?;
        let d = x.shape().dims();
        if axis >= d.len() {
            return Err(CohortError::shape(
                OP,
                format!("axis {axis} out of range for {}", x.shape()),
            ));
        }
        let mut want: Vec<usize> = d.to_vec();
        want.remove(axis);
        let count = want.iter().product::<usize>();
        let held = out.shape().numel();
        if held == 0 || !held.is_multiple_of(count) {
            return Err(CohortError::shape(
                OP,
                format!(
                    "output {} must hold {} (x {} without axis {axis}), or a stack of them",
                    out.shape(),
                    Shape(want),
                    x.shape()
                ),
            ));
        }
        Ok(ReduceDims {
            outer: d[..axis].iter().product(),
            n: d[axis],
            inner: d[axis + 1..].iter().product(),
        })
    }

    /// Checks a bias gradient: `dpre` (`[R, H]` or `[G, R, H]`) summed over its rows into the
    /// shape of `bias` (`[H]` or `[G, H]`).
    pub fn bias_gradient(dpre: &impl TensorInfo, bias: &impl TensorInfo) -> Result<Self> {
        let rank = dpre.shape().rank();
        if rank < 2 {
            return Err(CohortError::shape(
                "bias gradient",
                format!("dpre {} needs rows and columns", dpre.shape()),
            ));
        }
        Self::infer(dpre, rank - 2, bias)
    }
}

/// Logits viewed as `[groups, rows, classes]`: `groups` peers share one label vector of `rows` labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitDims {
    /// Peers (1 for rank-2 logits).
    pub groups: usize,
    /// Batch rows.
    pub rows: usize,
    /// Classes.
    pub classes: usize,
}

impl LogitDims {
    pub(crate) fn of(op: &'static str, logits: &impl TensorInfo) -> Result<Self> {
        expect_dtype(op, "logits", logits, DType::F32)?;
        expect_nonempty(op, "logits", logits)?;
        match *logits.shape().dims() {
            [rows, classes] => Ok(LogitDims {
                groups: 1,
                rows,
                classes,
            }),
            [groups, rows, classes] => Ok(LogitDims {
                groups,
                rows,
                classes,
            }),
            _ => Err(CohortError::shape(
                op,
                format!("logits must be [B, C] or [P, B, C], got {}", logits.shape()),
            )),
        }
    }

    fn row_shape(&self, rank: usize) -> Vec<usize> {
        if rank == 2 {
            vec![self.rows]
        } else {
            vec![self.groups, self.rows]
        }
    }
}

/// Fused softmax cross-entropy: per-row loss and `dlogits = grad_scale · (softmax(z) − q)`, with
/// `q = (1 − ε)·onehot(y) + ε/C`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropySpec {
    /// Label smoothing ε in [0, 1).
    pub label_smoothing: f32,
    /// Factor on the gradient; `1/batch` gives the gradient of the batch mean.
    pub grad_scale: f32,
}

impl CrossEntropySpec {
    /// Checks logits `[B, C]` or `[P, B, C]`, labels `[B]` (U32), per-row losses and dlogits.
    pub fn infer(
        &self,
        logits: &impl TensorInfo,
        labels: &impl TensorInfo,
        losses: &impl TensorInfo,
        dlogits: &impl TensorInfo,
    ) -> Result<LogitDims> {
        const OP: &str = "softmax_ce";
        let dims = LogitDims::of(OP, logits)?;
        expect_dtype(OP, "labels", labels, DType::U32)?;
        expect_shape(OP, "labels", labels, &[dims.rows])?;
        expect_dtype(OP, "losses", losses, DType::F32)?;
        expect_shape(OP, "losses", losses, &dims.row_shape(logits.shape().rank()))?;
        expect_dtype(OP, "dlogits", dlogits, DType::F32)?;
        expect_shape(OP, "dlogits", dlogits, logits.shape().dims())?;
        self.check_numbers("grad_scale")?;
        Ok(dims)
    }

    /// Label smoothing in [0, 1) and a finite gradient factor (named `scale_name`).
    fn check_numbers(&self, scale_name: &str) -> Result<()> {
        if let Some(why) = outside_unit_interval("label smoothing", &[self.label_smoothing]) {
            return Err(CohortError::InvalidConfig(why));
        }
        check_finite_scale(scale_name, self.grad_scale)
    }
}

/// A gradient factor the kernels multiply by: finite, or every gradient came out NaN or
/// infinite without an error.
fn check_finite_scale(name: &str, scale: f32) -> Result<()> {
    match scale.is_finite() {
        true => Ok(()),
        false => Err(CohortError::InvalidConfig(format!(
            "the gradient factor {name} must be finite, got {scale}"
        ))),
    }
}

/// Mutual-learning KL divergence over a stack of peer logits `[P, B, C]`. For each peer `i` in
/// `peers`, with `p = softmax(z / T)`:
/// loss row = `T² · mean_{j≠i} Σ_c p_j (log p_j − log p_i)`, and
/// `dlogits_i (+)= grad_scale · T · mean_{j≠i} (p_i − p_j)`. Peers `j` are constants.
#[derive(Clone, Debug, PartialEq)]
pub struct KlSpec {
    /// Temperature T > 0.
    pub temperature: f32,
    /// Factor on the gradient, e.g. `α / batch`.
    pub grad_scale: f32,
    /// Add to `dlogits` instead of overwriting it (to sum with the CE gradient).
    pub accumulate: bool,
    /// Which peers receive a loss and gradient (others are left untouched).
    pub peers: std::ops::Range<usize>,
}

impl KlSpec {
    /// Checks logits `[P, B, C]` (P ≥ 2), losses `[P, B]` and dlogits `[P, B, C]`.
    pub fn infer(
        &self,
        logits: &impl TensorInfo,
        losses: &impl TensorInfo,
        dlogits: &impl TensorInfo,
    ) -> Result<LogitDims> {
        const OP: &str = "kl_div";
        let dims = LogitDims::of(OP, logits)?;
        if logits.shape().rank() != 3 || dims.groups < 2 {
            return Err(CohortError::shape(
                OP,
                format!(
                    "logits must be [P, B, C] with P ≥ 2, got {}",
                    logits.shape()
                ),
            ));
        }
        expect_dtype(OP, "losses", losses, DType::F32)?;
        expect_shape(OP, "losses", losses, &[dims.groups, dims.rows])?;
        expect_dtype(OP, "dlogits", dlogits, DType::F32)?;
        expect_shape(OP, "dlogits", dlogits, logits.shape().dims())?;
        check_peer_terms(OP, self.temperature, &self.peers, dims.groups)?;
        check_finite_scale("grad_scale", self.grad_scale)?;
        Ok(dims)
    }
}

/// The checks KL and the fused DML loss share: T finite and at least f32's least normal number
/// (the kernels multiply by 1/T in f32, infinite for smaller T, where 0 · ∞ made the row NaN),
/// and a non-empty peer range within the `groups` stacked peers.
fn check_peer_terms(
    op: &'static str,
    temperature: f32,
    peers: &std::ops::Range<usize>,
    groups: usize,
) -> Result<()> {
    // T² scales the KL rows: where it is not a normal f32 (T below about 1.1e-19) the kernels
    // took 0·inf (NaN rows at T = 2e-38, where the twin gave 2e-37).
    if !(temperature.is_finite() && temperature > 0.0 && (temperature * temperature).is_normal()) {
        return Err(CohortError::InvalidConfig(format!(
            "temperature must be positive with T² a normal f32 (T at least about 1.1e-19), got {}",
            short_number(temperature)
        )));
    }
    if peers.start >= peers.end || peers.end > groups {
        return Err(CohortError::shape(
            op,
            format!("peer range {peers:?} outside 0..{groups}"),
        ));
    }
    Ok(())
}

/// The whole DML loss of the peers in `peers` in one pass over stacked logits `[P, B, C]`:
/// per-row cross-entropy and mutual KL (as [`CrossEntropySpec`] and [`KlSpec`] define them) and the
/// summed gradient `ce_scale·(softmax(z_i) − q) + kl_scale·T·(p_i − mean_{j≠i} p_j)`.
#[derive(Clone, Debug, PartialEq)]
pub struct DmlLossSpec {
    /// Label smoothing ε in [0, 1).
    pub label_smoothing: f32,
    /// Factor on the CE gradient (`1/B`).
    pub ce_scale: f32,
    /// Temperature T > 0 of the KL term.
    pub temperature: f32,
    /// Factor on the KL gradient (`α/B`; 0 still reports the KL loss).
    pub kl_scale: f32,
    /// Which peers receive losses and gradients (others are left untouched).
    pub peers: std::ops::Range<usize>,
}

impl DmlLossSpec {
    /// Checks logits `[P, B, C]`, labels `[B]` (U32), the per-row losses `[2, P, B]` (CE, then
    /// KL) and dlogits.
    pub fn infer(
        &self,
        logits: &impl TensorInfo,
        labels: &impl TensorInfo,
        losses: &impl TensorInfo,
        dlogits: &impl TensorInfo,
    ) -> Result<LogitDims> {
        const OP: &str = "dml_loss";
        let dims = LogitDims::of(OP, logits)?;
        if logits.shape().rank() != 3 {
            return Err(CohortError::shape(
                OP,
                format!("logits must be [P, B, C], got {}", logits.shape()),
            ));
        }
        expect_dtype(OP, "labels", labels, DType::U32)?;
        expect_shape(OP, "labels", labels, &[dims.rows])?;
        expect_dtype(OP, "losses", losses, DType::F32)?;
        expect_shape(OP, "losses", losses, &[2, dims.groups, dims.rows])?;
        expect_dtype(OP, "dlogits", dlogits, DType::F32)?;
        expect_shape(OP, "dlogits", dlogits, logits.shape().dims())?;
        CrossEntropySpec {
            label_smoothing: self.label_smoothing,
            grad_scale: self.ce_scale,
        }
        .check_numbers("ce_scale")?;
        check_peer_terms(OP, self.temperature, &self.peers, dims.groups)?;
        check_finite_scale("kl_scale", self.kl_scale)?;
        Ok(dims)
    }
}

/// One optimizer update of a parameter tensor from its gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerStep {
    /// SGD: `g += wd·w; v = μ·v + g; w -= lr·(nesterov ? g + μ·v : v)`.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum μ (0 disables the velocity buffer's effect).
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 weight decay added to the gradient.
        weight_decay: f32,
        /// Factor on the gradient before the rule (1: none; mixed precision's loss scaling
        /// passes 1/scale to undo it).
        grad_scale: f32,
    },
    /// Adam, or AdamW when `decoupled`: bias-corrected moments at step `t` (1-based).
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// Weight decay: L2 in the gradient (Adam) or decoupled (AdamW).
        weight_decay: f32,
        /// AdamW's decoupled weight decay.
        decoupled: bool,
        /// Step number, starting at 1.
        t: u32,
        /// Factor on the gradient before the rule, as for SGD.
        grad_scale: f32,
    },
}

/// Adam's bias correction `1 − βᵗ` at step `t`, in f64 (both backends use it). The exponent
/// stops at `i32::MAX` (`powi` takes an i32): there βᵗ is at most e⁻¹²⁸ for every β below 1
/// in f32, so the correction is already 1 in f64.
pub(crate) fn adam_bias_correction(beta: f32, t: u32) -> f64 {
    1.0 - (beta as f64).powi(t.min(i32::MAX as u32) as i32)
}

impl OptimizerStep {
    /// The same rule at step `t` (Adam's bias correction; SGD has no step count).
    pub fn at_step(mut self, step: u32) -> Self {
        if let OptimizerStep::Adam { t, .. } = &mut self {
            *t = step;
        }
        self
    }

    /// The numbers every rule has: learning rate, weight decay and gradient scale.
    pub(crate) fn lr_weight_decay_grad_scale(&self) -> (f32, f32, f32) {
        match *self {
            OptimizerStep::Sgd {
                lr,
                weight_decay,
                grad_scale,
                ..
            }
            | OptimizerStep::Adam {
                lr,
                weight_decay,
                grad_scale,
                ..
            } => (lr, weight_decay, grad_scale),
        }
    }

    /// Number of state tensors the rule needs (velocity; or first and second moments).
    pub fn state_count(&self) -> usize {
        match self {
            OptimizerStep::Sgd { .. } => 1,
            OptimizerStep::Adam { .. } => 2,
        }
    }

    /// Checks that parameter, gradient and state tensors agree: all F32, as many elements each,
    /// [`OptimizerStep::state_count`] states; and the rule's numbers (finite, in their ranges:
    /// learning rate and weight decay ≥ 0, momentum and Adam's betas in [0, 1), Adam's epsilon
    /// and the gradient scale > 0, Adam's `t` from 1).
    pub fn check(
        &self,
        param: &impl TensorInfo,
        grad: &impl TensorInfo,
        states: &[impl TensorInfo],
    ) -> Result<usize> {
        const OP: &str = "optimizer";
        expect_dtype(OP, "param", param, DType::F32)?;
        expect_dtype(OP, "grad", grad, DType::F32)?;
        expect_nonempty(OP, "param", param)?;
        let n = param.shape().numel();
        if grad.shape().numel() != n {
            return Err(CohortError::shape(
                OP,
                format!("grad {} vs param {}", grad.shape(), param.shape()),
            ));
        }
        if states.len() != self.state_count() {
            return Err(CohortError::shape(
                OP,
                format!(
                    "needs {} state tensors, got {}",
                    self.state_count(),
                    states.len()
                ),
            ));
        }
        for s in states {
            expect_dtype(OP, "state", s, DType::F32)?;
            if s.shape().numel() != n {
                return Err(CohortError::shape(
                    OP,
                    format!(
                        "state of {} elements vs param {}",
                        s.shape().numel(),
                        param.shape()
                    ),
                ));
            }
        }
        self.validate()?;
        Ok(n)
    }

    /// Checks the rule's numbers: each finite, the learning rate and weight decay at least 0,
    /// momentum and Adam's betas in [0, 1) (a beta of 1 divides by zero in the bias
    /// correction), Adam's epsilon and the gradient scale positive, Adam's `t` from 1. Outside
    /// them the weights came out NaN without an error. [`crate::OptimizerConfig::validate`]
    /// checks a configuration's rule through this.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(CohortError::InvalidConfig(format!("optimizer {what}")));
        match *self {
            OptimizerStep::Sgd { momentum, .. } => {
                if let Some(why) = outside_unit_interval("momentum", &[momentum]) {
                    return bad(why);
                }
            }
            OptimizerStep::Adam {
                beta1,
                beta2,
                eps,
                t,
                ..
            } => {
                if t == 0 {
                    return bad("Adam step t starts at 1, got 0".into());
                }
                if let Some(why) = outside_unit_interval("Adam betas", &[beta1, beta2]) {
                    return bad(why);
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad(format!(
                        "Adam epsilon must be finite and > 0, got {}",
                        short_number(eps)
                    ));
                }
            }
        }
        let (lr, weight_decay, grad_scale) = self.lr_weight_decay_grad_scale();
        if !(lr.is_finite() && lr >= 0.0) {
            return bad(format!(
                "learning rate must be finite and ≥ 0, got {}",
                short_number(lr)
            ));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be finite and ≥ 0, got {}",
                short_number(weight_decay)
            ));
        }
        if !(grad_scale.is_finite() && grad_scale > 0.0) {
            return bad(format!(
                "gradient scale must be finite and > 0, got {}",
                short_number(grad_scale)
            ));
        }
        Ok(())
    }
}

/// Validated dimensions of the accuracy count: logits `[P, B, C]`, labels `[B]`, counts `[P + 1]`.
pub fn accuracy_dims(
    logits: &impl TensorInfo,
    labels: &impl TensorInfo,
    counts: &impl TensorInfo,
) -> Result<LogitDims> {
    const OP: &str = "count_correct";
    let dims = LogitDims::of(OP, logits)?;
    expect_dtype(OP, "labels", labels, DType::U32)?;
    expect_shape(OP, "labels", labels, &[dims.rows])?;
    expect_dtype(OP, "counts", counts, DType::U32)?;
    expect_shape(OP, "counts", counts, &[dims.groups + 1])?;
    Ok(dims)
}

/// Validated batch gather ([`crate::Backend::gather_batch`]): features `[N, D]` and labels `[N]`
/// (or `[N, D2]`) with the same N, an index `[L]` (U32) holding the batch's rows from `offset`,
/// and outputs `x [R, D]`, `y [R]` (or `[R, D2]`), dtypes as their tables, with
/// `offset + R <= L`. F16 rows must have an even width (GPU gathers move 4-byte words).
pub fn gather_batch_dims(
    features: &impl TensorInfo,
    labels: &impl TensorInfo,
    index: &impl TensorInfo,
    offset: usize,
    x: &impl TensorInfo,
    y: &impl TensorInfo,
) -> Result<GatherDims> {
    const OP: &str = "gather_batch";
    expect_dtype(OP, "index", index, DType::U32)?;
    if index.shape().rank() != 1 {
        return Err(CohortError::shape(
            OP,
            format!("index must be [L], got {}", index.shape()),
        ));
    }
    // Each table as (rows, width); the output as (rows, width) of the same kind.
    let table = |name: &str, src: &dyn TensorInfo, dst: &dyn TensorInfo| -> Result<[usize; 3]> {
        if src.dtype() != dst.dtype() {
            return Err(CohortError::shape(
                OP,
                format!(
                    "{name}: source {:?} and output {:?} differ",
                    src.dtype(),
                    dst.dtype()
                ),
            ));
        }
        let (sd, dd) = (src.shape().dims(), dst.shape().dims());
        let (n, d) = match sd {
            [n] => (*n, 1),
            [n, d] => (*n, *d),
            _ => {
                return Err(CohortError::shape(
                    OP,
                    format!("{name} must be [N] or [N, D], got {}", src.shape()),
                ))
            }
        };
        if n == 0 || d == 0 {
            return Err(CohortError::shape(
                OP,
                format!("{name} is empty: {}", src.shape()),
            ));
        }
        if src.dtype() == DType::F16 && !d.is_multiple_of(2) {
            return Err(CohortError::shape(
                OP,
                format!("F16 rows are gathered in pairs of elements; {name} width {d} is odd"),
            ));
        }
        let r = dd.first().copied().unwrap_or(0);
        let want: Vec<usize> = if sd.len() == 1 { vec![r] } else { vec![r, d] };
        if dd != want.as_slice() {
            return Err(CohortError::shape(
                OP,
                format!(
                    "{name} rows of width {d} need an output [R{}], got {}",
                    if sd.len() == 1 { "" } else { ", D" },
                    dst.shape()
                ),
            ));
        }
        Ok([n, d, r])
    };
    let [n, width_x, rows] = table("features", features, x)?;
    let [n_labels, width_y, rows_y] = table("labels", labels, y)?;
    if n_labels != n || rows_y != rows {
        return Err(CohortError::shape(
            OP,
            format!(
                "features {} and labels {} (outputs {} and {}) must have the same rows",
                features.shape(),
                labels.shape(),
                x.shape(),
                y.shape()
            ),
        ));
    }
    let len = index.shape().numel();
    if offset.checked_add(rows).is_none_or(|end| end > len) {
        return Err(CohortError::shape(
            OP,
            format!("{rows} rows from {offset} of an index of {len}"),
        ));
    }
    Ok(GatherDims {
        n,
        rows,
        offset,
        widths: [width_x, width_y],
    })
}

/// [`gather_batch_dims`]' result: the tables' rows `n`, the batch's `rows` taken from `offset`
/// of the index, and the widths of the features and the labels in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherDims {
    /// Rows of each table.
    pub n: usize,
    /// Rows gathered.
    pub rows: usize,
    /// Where the batch's rows start in the index.
    pub offset: usize,
    /// Elements per row of the features and of the labels.
    pub widths: [usize; 2],
}

/// `y = a·x + b·y + c`, element-wise (with `x` absent: `y = b·y + c`, e.g. a fill).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axpby {
    /// Factor on x.
    pub a: f32,
    /// Factor on the old y.
    pub b: f32,
    /// Constant added.
    pub c: f32,
}

/// Checks that `x` and `y` are F32 with the same number of elements.
pub fn axpby_len(x: &impl TensorInfo, y: &impl TensorInfo) -> Result<usize> {
    expect_dtype("axpby", "x", x, DType::F32)?;
    expect_dtype("axpby", "y", y, DType::F32)?;
    if x.shape().numel() != y.shape().numel() {
        return Err(CohortError::shape(
            "axpby",
            format!("x {} vs y {}", x.shape(), y.shape()),
        ));
    }
    Ok(y.shape().numel())
}

/// Checks a conversion between an F32 and an F16 tensor of the same element count; returns it.
pub fn convert_len(src: &impl TensorInfo, dst: &impl TensorInfo) -> Result<usize> {
    const OP: &str = "convert";
    match (src.dtype(), dst.dtype()) {
        (DType::F32, DType::F16) | (DType::F16, DType::F32) => {}
        (s, d) => {
            return Err(CohortError::shape(
                OP,
                format!("converts F32 to F16 or back, not {s:?} to {d:?}"),
            ))
        }
    }
    if src.shape().numel() != dst.shape().numel() {
        return Err(CohortError::shape(
            OP,
            format!("src {} and dst {} differ in size", src.shape(), dst.shape()),
        ));
    }
    Ok(src.shape().numel())
}

/// Checks a copy of `len` elements between two tensors of the same dtype.
pub fn copy_range(
    src: &impl TensorInfo,
    src_offset: usize,
    dst: &impl TensorInfo,
    dst_offset: usize,
    len: usize,
) -> Result<()> {
    if src.dtype() != dst.dtype() {
        return Err(CohortError::shape("copy", "src and dst dtypes differ"));
    }
    // GPU copies move 4-byte words: two F16 elements.
    if src.dtype() == DType::F16 && !(src_offset | dst_offset | len).is_multiple_of(2) {
        return Err(CohortError::shape(
            "copy",
            format!("F16 copies need even offsets and lengths, got {len} elements from {src_offset} to {dst_offset}"),
        ));
    }
    let fits = |offset: usize, shape: &Shape| {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= shape.numel())
    };
    if !fits(src_offset, src.shape()) || !fits(dst_offset, dst.shape()) {
        return Err(CohortError::shape(
            "copy",
            format!(
                "{len} elements from offset {src_offset} of {} into offset {dst_offset} of {}",
                src.shape(),
                dst.shape()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Activation;
    use crate::error::CohortError;

    #[test]
    fn activations_parse_by_name_in_any_case() {
        for (name, want) in [
            ("relu", Activation::Relu),
            ("GELU", Activation::Gelu),
            ("Tanh", Activation::Tanh),
            ("identity", Activation::Identity),
            ("none", Activation::Identity),
            ("linear", Activation::Identity),
        ] {
            assert_eq!(name.parse::<Activation>().unwrap(), want, "{name}");
        }
        match "swish".parse::<Activation>() {
            Err(CohortError::InvalidConfig(why)) => {
                assert!(
                    why.contains("'swish' (relu, gelu, tanh, identity)"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
