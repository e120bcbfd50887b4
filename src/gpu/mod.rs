//! The GPU backend: cohort's WGSL kernels behind the [`Backend`] API. The [`runtime`] module owns
//! the device; this module only validates shapes, packs each kernel's parameters and records the
//! launch.

pub mod driver_stats;
pub mod plan;
pub mod profile;
pub mod runtime;
pub mod shaders;
pub mod spirv;

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytemuck::{Pod, Zeroable};

use crate::backend::{update_layer_in_turn, Backend, LayerUpdate};
use crate::error::{CohortError, Result};
use crate::ops::{self, Activation, Axpby, BiasActDims, CrossEntropySpec, KlSpec, MatmulDims};
use crate::ops::{DmlLossSpec, MatmulSpec, OptimizerStep, ReduceDims, ReduceSpec};
use crate::tensor::{DType, Shape, TensorInfo};
use crate::validate::{self, KernelCheck};
pub use plan::{MatmulKernel, MatmulPlan, TunedMatmul};
pub use profile::{KernelTime, Profile};
use runtime::PooledBuffer;
pub use runtime::{
    list_adapters, Capabilities, CoopChoice, CoopLayout, F32Matmul, GpuOptions, MemoryUse, Runtime,
    TileChoice, WorkCounts,
};
use shaders::{CoopOps, MatmulStorage, RowReduction, Shader};

/// A matmul's fused epilogue (in each matmul kernel): `main_bias_act` (`aux = y = act(C + bias)`, a
/// layer's forward) or `main_act_grad` (`C ⊙= act'(aux + bias)` with `aux = pre`, a hidden
/// layer's backward).
struct Epilogue<'t> {
    /// The entry point that multiplies with this epilogue, and the one that finishes a split-K
    /// product with it.
    entries: [&'static str; 2],
    bias: &'t GpuTensor,
    aux: &'t GpuTensor,
    act: Activation,
    bias_stride: usize,
}

/// Which `optimizer.wgsl` update a launch records.
#[derive(Clone, Copy)]
enum Update<'t> {
    /// `sgd` / `adam`: the gradient as given.
    Plain,
    /// `sgd_bias` / `adam_bias`: the gradient is the column sums of the layer's `dpre`.
    Bias(ReduceDims),
    /// `sgd_f16` / `adam_f16`: as `Plain`, also writing the parameters' f16 copy.
    F16Copy(&'t GpuTensor),
    /// `sgd_layer` / `adam_layer` (`_f16` with a copy): as `Plain` (or `F16Copy`) for a layer's
    /// weights, and as `Bias` for its bias, in one dispatch.
    Layer {
        copy: Option<&'t GpuTensor>,
        bias: &'t GpuTensor,
        dpre: &'t GpuTensor,
        bias_states: &'t [GpuTensor],
        dims: ReduceDims,
    },
}

impl Update<'_> {
    fn form(&self) -> UpdateForm {
        match self {
            Update::Plain => UpdateForm::Plain,
            Update::Bias(_) => UpdateForm::Bias,
            Update::F16Copy(_) => UpdateForm::F16Copy,
            Update::Layer { copy: None, .. } => UpdateForm::Layer,
            Update::Layer { copy: Some(_), .. } => UpdateForm::LayerF16Copy,
        }
    }
}

/// An [`Update`]'s form without its tensors: which of a rule's five `optimizer.wgsl` entry
/// points it launches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum UpdateForm {
    Plain,
    Bias,
    F16Copy,
    Layer,
    LayerF16Copy,
}

impl UpdateForm {
    const ALL: [UpdateForm; 5] = [
        UpdateForm::Plain,
        UpdateForm::Bias,
        UpdateForm::F16Copy,
        UpdateForm::Layer,
        UpdateForm::LayerF16Copy,
    ];

    /// The entry point of SGD (`adam` false) or Adam in this form.
    fn entry(self, adam: bool) -> &'static str {
        let [sgd, adam_entry] = match self {
            UpdateForm::Plain => ["sgd", "adam"],
            UpdateForm::Bias => ["sgd_bias", "adam_bias"],
            UpdateForm::F16Copy => ["sgd_f16", "adam_f16"],
            UpdateForm::Layer => ["sgd_layer", "adam_layer"],
            UpdateForm::LayerF16Copy => ["sgd_layer_f16", "adam_layer_f16"],
        };
        if adam {
            adam_entry
        } else {
            sgd
        }
    }

    /// Whether it writes the weights' f16 copy, and so launches from
    /// `Shader::Optimizer(true)`.
    fn writes_copy(self) -> bool {
        matches!(self, UpdateForm::F16Copy | UpdateForm::LayerF16Copy)
    }

    /// Whether it updates a layer's weights and bias in one dispatch.
    fn whole_layer(self) -> bool {
        matches!(self, UpdateForm::Layer | UpdateForm::LayerF16Copy)
    }
}

/// Whether the matmul kernels load A and B as vec4s: each operand's stored contiguous axis (K or M
/// for A, N or K for B) and its batch stride are multiples of 4.
fn vec4_loads(d: &MatmulDims) -> (bool, bool) {
    let a_axis = if d.trans_a { d.m } else { d.k };
    let b_axis = if d.trans_b { d.k } else { d.n };
    (
        a_axis.is_multiple_of(4) && d.stride_a.is_multiple_of(4),
        b_axis.is_multiple_of(4) && d.stride_b.is_multiple_of(4),
    )
}

/// A boolean pipeline constant's value.
fn flag(on: bool) -> f64 {
    on as u8 as f64
}

/// Output tiles a product needs before a big tile is chosen for it: the cooperative-matrix
/// kernel's big layout, and the f32 kernel's 128 tile where tiles go by shape
/// (`COHORT_MATMUL_TILE=shape`).
const BIG_TILE_MIN_WORKGROUPS: usize = 256;

/// Workgroups (tiles × batch × splits) a matmul on a hardware adapter is split along K to reach,
/// about two per compute unit of a large GPU.
const SPLIT_K_TARGET_WORKGROUPS: usize = 256;

/// The least K a split gets when the backend chooses the splits (each split's partial product
/// is written out and read back, so short splits cost more than they give).
const SPLIT_K_MIN_DEPTH: usize = 256;

/// Splits of K at most, chosen or forced.
pub const MAX_K_SPLITS: usize = 16;

/// K per split is a multiple of this (both matmul kernels' k-steps divide it).
const K_SPLIT_ALIGN: usize = 64;

/// The cooperative-matrix kernel's k per step (`TK` in `shaders/matmul_coop.wgsl`), unless
/// [`GpuOptions::coop_deep_k_step`] doubles it.
const COOP_K_STEP: u32 = 32;

/// The deepest K range one dispatch of the cooperative-matrix kernel takes on a software
/// adapter. lavapipe (llvmpipe) ends every loop of a shader invocation, silently, once that
/// invocation has run 65535 loop iterations in all (Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`); the
/// emulated build's operations loop 1000 to 3000 times per 32-deep k-step, so a product deeper
/// than ~700 to ~1700 (by layout) came out short. Deeper products are split along K there, on
/// lavapipe's own 8×8 cooperative matrices too (fewer loops, but unverified that deep).
const SOFTWARE_COOP_K_PER_DISPATCH: usize = 512;

/// The loop iterations a kernel's thread may run on a software adapter: under lavapipe's 65535
/// (see [`SOFTWARE_COOP_K_PER_DISPATCH`]), with room for the small loops around the main one.
/// Rows of many classes (or many peers) are spread over more threads, then over several
/// dispatches of fewer peers each, to stay under it; products deeper than ~1M (tiled: 16 k a
/// loop in the 64 tile, [`tiled_loops`]) and sums over more than ~1M rows (16 threads a
/// column) are refused there.
const SOFTWARE_LOOP_BUDGET: usize = 60_000;

/// The loop iterations a thread of `shaders/matmul.wgsl` in tiles of `tile` runs over a K
/// range of `k` on a software adapter: one a 16-deep k-slice in the 64 tile, whose loop over
/// the slice llvmpipe unrolls, but not in the 128 tile (that loop holds 8×8 products): 17.5 to
/// 19 a slice there (Mesa 22.3.6: 55,000 deep right, 60,000 cut short, silently), 20 counted.
fn tiled_loops(tile: usize, k: usize) -> usize {
    let per_slice = if tile >= 128 { 20 } else { 1 };
    k.div_ceil(16) * per_slice
}

/// The loop iterations a thread of `shaders/matmul_narrow.wgsl` with `rows` rows a workgroup
/// runs over product `d` on a software adapter: three a round of its chunk of k at 4 columns
/// (lavapipe: 2.79M deep right, 2.8M cut short): the round, and its staging loop's turns
/// plus one.
fn narrow_loops(d: &MatmulDims, rows: usize) -> usize {
    let chunk = plan::narrow_chunk(rows, d.n);
    let per_round = 2 + (chunk * d.n.div_ceil(4)).div_ceil(256);
    d.k.div_ceil(chunk) * per_round
}

/// Threads in a workgroup of the row kernels (`shaders/include/row_softmax.wgsl`'s `WG`).
const ROW_WORKGROUP: usize = 64;

/// How a row kernel runs: its reduction, threads per row, and peers per dispatch (for the
/// kernels that take a range of peers).
#[derive(Clone, Copy, Debug)]
struct RowPlan {
    reduction: RowReduction,
    lanes: usize,
    peers_per_dispatch: usize,
}

/// Threads per row for the row kernels (losses, accuracy counts) over `classes` classes: a power
/// of two, about `classes_per_lane` classes each, at most `max_lanes` (the workgroup, or the
/// subgroup a row's threads must share); 0 for either count is taken as 1.
pub fn row_lanes(classes: usize, classes_per_lane: usize, max_lanes: usize) -> usize {
    classes
        .div_ceil(classes_per_lane.max(1))
        .next_power_of_two()
        .min(max_lanes.max(1))
}

/// How the row kernels spread a row over threads (see [`GpuOptions::row_subgroups`]).
#[derive(Clone, Copy, Debug)]
struct RowLayout {
    reduction: RowReduction,
    /// Classes per thread aimed at: 1 on hardware adapters that reduce in subgroups (each
    /// thread's chain of loads as short as it gets, the shuffles cheap); 16 elsewhere, where a
    /// reduction costs barriers, or (software adapters) lanes run as one CPU core's SIMD vector
    /// and are not free.
    classes_per_lane: usize,
    /// The subgroup's width (at least, where it varies), or the workgroup's 64 threads.
    max_lanes: usize,
}

impl RowLayout {
    /// The layout `options` ask for on the runtime's adapter.
    fn choose(options: &GpuOptions, rt: &Runtime) -> Result<Self> {
        let software = rt.info().device_type == wgpu::DeviceType::Cpu;
        // Subgroups of a power-of-two width that divides the row kernels' workgroup, so that
        // whole rows fit in each.
        let width = rt.info().subgroup_min_size as usize;
        let subgroup_rows = (rt.caps().subgroup
            && width.is_power_of_two()
            && width <= ROW_WORKGROUP
            && rt.info().subgroup_max_size as usize <= ROW_WORKGROUP)
            .then_some(width);
        let subgroup_width = match options.row_subgroups {
            Some(false) => None,
            None => subgroup_rows,
            Some(true) => Some(subgroup_rows.ok_or_else(|| {
                CohortError::Unsupported(format!(
                    "rows reduced in subgroups on {}: it offers no subgroup operations in \
                     subgroups of 1 to {ROW_WORKGROUP} (COHORT_ROW_SUBGROUPS=0 reduces them \
                     through workgroup memory)",
                    rt.info().name
                ))
            })?),
        };
        if options.row_classes_per_lane == Some(0) {
            return Err(CohortError::InvalidConfig(
                "0 classes per row thread: use at least 1".into(),
            ));
        }
        Ok(match subgroup_width {
            Some(width) => RowLayout {
                reduction: RowReduction::Subgroup,
                classes_per_lane: options.row_classes_per_lane.unwrap_or(if software {
                    16
                } else {
                    1
                }),
                max_lanes: width,
            },
            None => Self::workgroup(options),
        })
    }

    /// Rows reduced through workgroup memory.
    fn workgroup(options: &GpuOptions) -> Self {
        RowLayout {
            reduction: RowReduction::Workgroup,
            classes_per_lane: options.row_classes_per_lane.unwrap_or(16),
            max_lanes: ROW_WORKGROUP,
        }
    }
}

/// Classes `shaders/count_correct.wgsl` counts fewer than (2²⁴: its class indices are reduced
/// as f32).
const COUNT_MAX_CLASSES: usize = 1 << 24;

/// Peers a single KL or accuracy dispatch can hold (the shaders' `MAX_PEERS`).
pub const MAX_PEERS: usize = 32;

/// A tensor in GPU memory. Dropping it returns its buffer to the pool.
pub struct GpuTensor {
    shape: Shape,
    dtype: DType,
    buffer: PooledBuffer,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor({:?} {})", self.dtype, self.shape)
    }
}

impl TensorInfo for GpuTensor {
    fn shape(&self) -> &Shape {
        &self.shape
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
}

impl GpuTensor {
    /// The tensor's storage, to bind in a caller's own kernel ([`Runtime::compile_wgsl`],
    /// [`Runtime::dispatch_own`]) on the backend that made it: its bytes from the start of its
    /// buffer (rounded up to whole 4-byte words), so that `arrayLength` counts its elements.
    ///
    /// A tensor whose binding was taken does not return its buffer to the backend's pool when
    /// dropped (wgpu frees it once no bind group holds it), so a bind group made over it never
    /// reaches another tensor's data.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer.export(),
            offset: 0,
            size: wgpu::BufferSize::new(self.bytes().next_multiple_of(4).max(4)),
        })
    }

    fn buf(&self) -> &PooledBuffer {
        &self.buffer
    }

    fn bytes(&self) -> u64 {
        (self.shape.numel() * self.dtype.size()) as u64
    }
}

/// The GPU backend. Kernel launches are recorded and submitted together (see [`Runtime`]).
pub struct GpuBackend {
    rt: Runtime,
    /// F16 tensors are offered: f16 shaders, and not declined (`GpuOptions::no_f16_tensors`).
    f16_tensors: bool,
    matmul_tile: TileChoice,
    matmul_single_buffer: bool,
    /// `shaders/matmul.wgsl` reads two k-slices ahead by default
    /// ([`GpuOptions::matmul_deep_prefetch`]).
    matmul_deep_prefetch: bool,
    k_splits: Option<usize>,
    /// Narrow products run on `shaders/matmul_narrow.wgsl` (not `GpuOptions::no_narrow_kernel`).
    narrow_kernel: bool,
    /// `GpuOptions::narrow_rows`.
    narrow_rows: Option<usize>,
    /// `update_layer` is one dispatch (`GpuOptions::fused_layer_update`, resolved).
    fused_layer_update: bool,
    /// `next_batch` does nothing (`GpuOptions::one_pass`).
    one_pass: bool,
    /// How the row kernels spread rows over threads (`GpuOptions::row_subgroups`, resolved).
    rows: RowLayout,
    row_check: Option<KernelCheck>,
    coop: Option<CoopKernel>,
    coop_check: Option<KernelCheck>,
    /// How f32 products run: [`F32Matmul::SplitF16`] only where `coop` has a `split` layout.
    f32_matmul: F32Matmul,
    /// Products run the fastest of their candidate plans (`GpuOptions::tune_matmuls`; set once
    /// the self-tests have run, so that they tune nothing).
    tune_matmuls: bool,
    /// The plans tuned so far, by product shape.
    tuned: plan::Tuned,
    /// This backend among those opened in the process ([`Backend::instance`]).
    instance: u64,
}

/// The cooperative-matrix kernel a backend runs f16 products on: its build and the layouts it
/// chooses between (decided once, when the device opens).
#[derive(Clone, Copy, Debug)]
struct CoopKernel {
    ops: CoopOps,
    /// Subgroups of 32 for the emulated build, else the adapter's width.
    sg_size: u32,
    /// For most products: 4 subgroups of 2×2 accumulators, or the forced layout.
    small: CoopLayout,
    /// For products with many tiles, where the device can run it (none when one is forced): 8
    /// subgroups of 2×4 accumulators (4×4 subgroups of 2×2 for 8×8 fragments).
    big: Option<CoopLayout>,
    /// Only for the matmul tuner, where it tunes and no layout is forced: 4 subgroups of one
    /// accumulator each, a quarter of the small tile, so four times the workgroups for
    /// products too small to fill a large GPU.
    tuning_only: Option<CoopLayout>,
    /// For f32 products split into f16 parts, whose workgroup memory is twice as large: the
    /// forced or small layout where it fits the device, else 4 subgroups of one accumulator
    /// each (half the tile), else none.
    split: Option<CoopLayout>,
    /// Operands stored m- or n-contiguous are staged so (`MN_STAGING`), unless
    /// [`GpuOptions::coop_k_staging`].
    mn_staging: bool,
    /// The k-step written out for every fragment (`UNROLL`): [`GpuOptions::coop_unroll`].
    unroll: bool,
    /// Four staged values per store (`WIDE_STORES`), unless
    /// [`GpuOptions::coop_scalar_stores`].
    wide_stores: bool,
    /// k-slices read ahead into registers (`PREFETCH`): 2 with
    /// [`GpuOptions::coop_deep_prefetch`], else 1.
    prefetch: u32,
    /// 64 k per step where a layout fits it: [`GpuOptions::coop_deep_k_step`].
    deep_k_step: bool,
}

impl CoopKernel {
    /// The kernel for `ops` on a device with `caps`, built as `options` say: their forced layout
    /// (checked) as its only one, or the two defaults, the big one only where it fits, and for
    /// a backend that `tunes` its products a third, smaller one.
    fn new(ops: CoopOps, caps: &Capabilities, options: &GpuOptions, tunes: bool) -> Result<Self> {
        let forced = options.coop_layout;
        let sg_size = match ops {
            CoopOps::Emulated => 32,
            _ => caps.subgroup_size.unwrap_or(32),
        };
        let layout = |sg_rows, sg_cols, fr, fc| CoopLayout {
            sg_rows,
            sg_cols,
            fr,
            fc,
        };
        let fits = |l: &CoopLayout, split| {
            l.check(ops.frag(), sg_size, caps, split, COOP_K_STEP)
                .is_ok()
        };
        let (small, big) = match forced {
            Some(layout) => {
                layout.check(ops.frag(), sg_size, caps, false, COOP_K_STEP)?;
                (layout, None)
            }
            None => {
                let big = match ops {
                    CoopOps::Native8 => layout(4, 4, 2, 2),
                    _ => layout(4, 2, 2, 4),
                };
                // The small layout, or on a device of little workgroup memory (16 KiB, WebGPU's
                // least) the quarter one.
                let small = [layout(2, 2, 2, 2), layout(2, 2, 1, 1)]
                    .into_iter()
                    .find(|l| fits(l, false))
                    .ok_or_else(|| {
                        CohortError::Unsupported(format!(
                            "no layout of the cooperative-matrix kernel fits the device's {} \
                             bytes of workgroup memory",
                            caps.max_workgroup_storage
                        ))
                    })?;
                (small, Some(big).filter(|b| fits(b, false)))
            }
        };
        let quarter = layout(2, 2, 1, 1);
        let split = [small, quarter]
            .into_iter()
            .take(if forced.is_some() { 1 } else { 2 })
            .find(|l| fits(l, true));
        let tuning_only =
            Some(quarter).filter(|l| tunes && forced.is_none() && *l != small && fits(l, false));
        Ok(CoopKernel {
            ops,
            sg_size,
            small,
            big,
            tuning_only,
            split,
            mn_staging: !options.coop_k_staging,
            unroll: options.coop_unroll,
            wide_stores: !options.coop_scalar_stores,
            prefetch: if options.coop_deep_prefetch { 2 } else { 1 },
            deep_k_step: options.coop_deep_k_step,
        })
    }

    /// The k per step (`TK`) this kernel can run `layout` with on a device with `caps`, for f16
    /// products or (`split_f32`) f32 ones split into f16 parts: [`COOP_K_STEP`], and twice that
    /// where the layout's deeper slices fit.
    fn k_steps(&self, layout: &CoopLayout, split_f32: bool, caps: &Capabilities) -> Vec<u32> {
        [COOP_K_STEP, 2 * COOP_K_STEP]
            .into_iter()
            .filter(|&k| {
                layout
                    .check(self.ops.frag(), self.sg_size, caps, split_f32, k)
                    .is_ok()
            })
            .collect()
    }

    /// k per step in `layout` by default: twice [`COOP_K_STEP`] with
    /// [`GpuOptions::coop_deep_k_step`] where the layout fits that, else [`COOP_K_STEP`].
    fn k_step(&self, layout: &CoopLayout, split_f32: bool, caps: &Capabilities) -> u32 {
        let deep = 2 * COOP_K_STEP;
        match self.deep_k_step {
            true if self.k_steps(layout, split_f32, caps).contains(&deep) => deep,
            _ => COOP_K_STEP,
        }
    }

    /// The build products in `layout` run by default: [`Self::k_step`] k per step and
    /// [`Self::prefetch`] slices read ahead.
    fn build(&self, layout: CoopLayout, split_f32: bool, caps: &Capabilities) -> MatmulKernel {
        MatmulKernel::Coop {
            layout,
            k_step: self.k_step(&layout, split_f32, caps),
            prefetch: self.prefetch,
        }
    }

    /// Every build the matmul tuner times in `layout`, the default ([`Self::build`]) first:
    /// each k per step that fits with each read-ahead depth (1, 2 slices), but for what the
    /// options ask for (64 k per step, two slices ahead), which is not varied.
    fn tuner_builds(
        &self,
        layout: CoopLayout,
        split_f32: bool,
        caps: &Capabilities,
    ) -> Vec<MatmulKernel> {
        let k_steps = match self.deep_k_step {
            true => vec![self.k_step(&layout, split_f32, caps)],
            false => self.k_steps(&layout, split_f32, caps),
        };
        let depths = match self.prefetch {
            1 => vec![1, 2],
            forced => vec![forced],
        };
        let mut builds = vec![self.build(layout, split_f32, caps)];
        for &k_step in &k_steps {
            for &prefetch in &depths {
                let build = MatmulKernel::Coop {
                    layout,
                    k_step,
                    prefetch,
                };
                if !builds.contains(&build) {
                    builds.push(build);
                }
            }
        }
        builds
    }

    /// Every layout this kernel may run f16 products in.
    fn layouts(&self) -> impl Iterator<Item = CoopLayout> {
        std::iter::once(self.small)
            .chain(self.big)
            .chain(self.tuning_only)
    }
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBackend({})", self.describe())
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    stride_a: u32,
    stride_b: u32,
    alpha: f32,
    beta: f32,
    act: u32,
    bias_stride: u32,
    batch: u32,
    k_split: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BiasActParams {
    total: u32,
    rows_cols: u32,
    cols: u32,
    bias_stride: u32,
    act: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    outer: u32,
    n: u32,
    inner: u32,
    accumulate: u32,
    scale: f32,
    out_offset: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CeParams {
    total_rows: u32,
    rows: u32,
    classes: u32,
    _pad: u32,
    smoothing: f32,
    grad_scale: f32,
    _pad1: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct KlParams {
    peers: u32,
    rows: u32,
    classes: u32,
    peer_begin: u32,
    peer_end: u32,
    accumulate: u32,
    temperature: f32,
    grad_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DmlLossParams {
    peers: u32,
    rows: u32,
    classes: u32,
    peer_begin: u32,
    peer_end: u32,
    _pad0: u32,
    temperature: f32,
    kl_scale: f32,
    ce_scale: f32,
    smoothing: f32,
    _pad1: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct OptimizerParams {
    n: u32,
    flag: u32,
    lr: f32,
    weight_decay: f32,
    momentum_or_beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
    rows: u32,
    cols: u32,
    grad_scale: f32,
    bias_n: u32,
    weight_groups: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AxpbyParams {
    n: u32,
    a: f32,
    b: f32,
    c: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CountParams {
    peers: u32,
    rows: u32,
    classes: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GatherParams {
    src_rows: u32,
    dst_rows: u32,
    width_a: u32,
    width_b: u32,
    offset: u32,
    _pad: [u32; 3],
}

/// K per split of a product of depth `k` with `tiles` output tiles (at least `k`: unsplit), in
/// `forced` splits, or else chosen so that a product with fewer than
/// [`SPLIT_K_TARGET_WORKGROUPS`] tiles gets about that many workgroups, each split at least
/// [`SPLIT_K_MIN_DEPTH`] deep: e.g. the 10-class output layer of the training shapes where the
/// narrow kernel is declined, whose few tiles would each run the whole of K alone.
fn k_split(k: usize, tiles: usize, forced: Option<usize>) -> usize {
    let splits = forced.unwrap_or_else(|| {
        SPLIT_K_TARGET_WORKGROUPS
            .div_ceil(tiles.max(1))
            .min(k / SPLIT_K_MIN_DEPTH)
            .min(MAX_K_SPLITS)
    });
    k.div_ceil(splits.max(1))
        .next_multiple_of(K_SPLIT_ALIGN)
        .max(K_SPLIT_ALIGN)
}

/// Whether `batch` products of `m`×`n` have at least [`BIG_TILE_MIN_WORKGROUPS`] output tiles
/// `tile` wide: enough to fill a large GPU with tiles that big.
fn fills_with_tiles(m: usize, n: usize, batch: usize, tile: usize) -> bool {
    m.div_ceil(tile) * n.div_ceil(tile) * batch >= BIG_TILE_MIN_WORKGROUPS
}

/// The workgroup memory of `matmul.wgsl` with a `tile`-wide C tile and `buffers` buffers per
/// operand: a k-slice of each operand, f32, per buffer.
fn tiled_kernel_bytes(tile: usize, buffers: u32) -> usize {
    2 * buffers as usize * plan::TILED_K_SLICE * tile * 4
}

fn u32_of(op: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| CohortError::shape(op, format!("dimension {v} exceeds u32")))
}

/// Runs the self-test `run` (`name`) on `gpu`, or returns its result from earlier in the
/// process: a check is kept by what decides its outcome, the adapter and its driver, the options
/// the backend was opened with and the kernel `build` under test. A driver that mishandles a
/// kernel does so on every device opened on it, so a backend opened like an earlier one trusts
/// that one's check instead of building and running the same kernels again (about a second per
/// backend for the row kernels on lavapipe; the tests open a few dozen). A failed check is kept
/// like a passed one; a run that ends in an error is not.
fn self_test(
    name: &str,
    gpu: &GpuBackend,
    options: &GpuOptions,
    build: &dyn std::fmt::Debug,
    run: fn(&GpuBackend) -> Result<KernelCheck>,
) -> Result<KernelCheck> {
    static CHECKED: Mutex<BTreeMap<String, KernelCheck>> = Mutex::new(BTreeMap::new());
    let key = format!("{name}\n{:?}\n{options:?}\n{build:?}", gpu.rt.info());
    if let Some(check) = runtime::lock(&CHECKED).get(&key) {
        return Ok(check.clone());
    }
    let check = run(gpu).map_err(|e| match (e, options.max_workgroups_per_dimension) {
        // The test's small shapes need a few workgroups a dimension: a grid limit below that
        // is the options' fault, not a shape the caller passed.
        (CohortError::Unsupported(why), Some(cap)) if why.contains("workgroups") => {
            CohortError::InvalidConfig(format!(
                "max_workgroups_per_dimension {cap} (COHORT_MAX_WORKGROUPS) is too few for the \
                 {name} self-test the backend runs as it opens: {why}"
            ))
        }
        (e, _) => e,
    })?;
    runtime::lock(&CHECKED).insert(key, check.clone());
    Ok(check)
}

fn check_peers(op: &'static str, peers: usize) -> Result<()> {
    if peers > MAX_PEERS {
        return Err(CohortError::shape(
            op,
            format!("{peers} peers; the GPU kernel holds at most {MAX_PEERS}"),
        ));
    }
    Ok(())
}

impl GpuBackend {
    /// Opens the GPU chosen by `options` (see [`GpuOptions`]).
    pub fn new(options: &GpuOptions) -> Result<Self> {
        if let TileChoice::Fixed(tile) = options.matmul_tile {
            if tile != 64 && tile != 128 {
                return Err(CohortError::InvalidConfig(format!(
                    "matmul tile {tile}: use 64 or 128"
                )));
            }
        }
        if let Some(rows) = options
            .narrow_rows
            .filter(|r| !plan::narrow_row_choices(false).contains(r))
        {
            return Err(CohortError::InvalidConfig(format!(
                "{rows} rows per workgroup of the narrow matmul: use 4, 8 or 16"
            )));
        }
        if let Some(splits) = options.k_splits.filter(|s| !(1..=MAX_K_SPLITS).contains(s)) {
            return Err(CohortError::InvalidConfig(format!(
                "{splits} K splits: use 1 to {MAX_K_SPLITS}"
            )));
        }
        let rt = Runtime::new(options)?;
        let caps = rt.caps();
        let software = rt.info().device_type == wgpu::DeviceType::Cpu;
        let coop = match options.coop {
            CoopChoice::Off => None,
            CoopChoice::Auto if software => None,
            CoopChoice::Auto | CoopChoice::On => caps.coop_ops,
            CoopChoice::Emulate if caps.shader_f16 => Some(CoopOps::Emulated),
            CoopChoice::Emulate => {
                return Err(CohortError::InvalidConfig(format!(
                    "emulated cooperative matrices need f16 shaders, which {} lacks",
                    rt.info().name
                )))
            }
        };
        // Set on the backend only after the self-tests, so that they tune nothing.
        let tunes = options.tune_matmuls || options.tune_file.is_some();
        let coop = match coop.map(|ops| CoopKernel::new(ops, caps, options, tunes)) {
            // Where the kernel was not asked for, a device it does not fit runs without it.
            Some(Err(CohortError::Unsupported(_))) if options.coop == CoopChoice::Auto => None,
            other => other.transpose()?,
        };
        if options.f32_matmul == F32Matmul::SplitF16 && coop.is_none_or(|k| k.split.is_none()) {
            let why = match coop {
                None => "no cooperative-matrix kernel runs here (COHORT_COOP; emulate works \
                         wherever f16 shaders do)"
                    .to_string(),
                Some(k) => format!(
                    "no layout of the cooperative-matrix kernel fits its doubled workgroup \
                     memory in the device's {} bytes (layout {})",
                    caps.max_workgroup_storage, k.small
                ),
            };
            return Err(CohortError::Unsupported(format!(
                "f32 matmuls split into f16 parts on {}: {why}",
                rt.info().name
            )));
        }
        let f16_tensors = caps.shader_f16 && !options.no_f16_tensors;
        let rows = RowLayout::choose(options, &rt)?;
        let mut gpu = GpuBackend {
            f16_tensors,
            rt,
            matmul_tile: options.matmul_tile,
            matmul_single_buffer: options.matmul_single_buffer,
            matmul_deep_prefetch: options.matmul_deep_prefetch,
            k_splits: options.k_splits,
            narrow_kernel: !options.no_narrow_kernel,
            narrow_rows: options.narrow_rows,
            fused_layer_update: options.fused_layer_update.unwrap_or(!software),
            one_pass: options.one_pass,
            rows,
            row_check: None,
            coop,
            coop_check: None,
            f32_matmul: F32Matmul::Plain,
            tune_matmuls: false,
            tuned: plan::Tuned::default(),
            instance: {
                static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        };
        if gpu.matmul_tile == TileChoice::Fixed(128)
            && !gpu.tiled_kernel_fits(128, gpu.tiled_buffers())
        {
            return Err(CohortError::Unsupported(format!(
                "matmul tile 128 on {}: it takes {} bytes of workgroup memory, and the device \
                 has {}",
                gpu.rt.info().name,
                tiled_kernel_bytes(128, gpu.tiled_buffers()),
                gpu.rt.caps().max_workgroup_storage
            )));
        }
        if let Some(mut kernel) = coop {
            // A cooperative-matrix configuration a driver mishandles returns zeros rather than an
            // error, so check the kernel once, in every layout it may run in, before trusting it
            // with training.
            let mut worst: Option<KernelCheck> = None;
            let layouts: Vec<CoopLayout> = kernel.layouts().collect();
            for layout in layouts {
                gpu.coop = Some(CoopKernel {
                    small: layout,
                    big: None,
                    tuning_only: None,
                    ..kernel
                });
                let mut check =
                    self_test("coop", &gpu, options, &gpu.coop, validate::coop_self_test)?;
                check.case += &format!(" layout {layout}");
                // The tuner's extra layout is only a candidate: failing, it is left out alone.
                if kernel.tuning_only == Some(layout) && !check.passed() {
                    eprintln!(
                        "cohort: warning: the cooperative-matrix kernel's tuner-only layout \
                         failed its self-test on {} ({}: {}); the tuner leaves it out",
                        gpu.rt.info().name,
                        check.case,
                        check.worst
                    );
                    kernel.tuning_only = None;
                    continue;
                }
                if worst
                    .as_ref()
                    .is_none_or(|w| check.worst_ratio > w.worst_ratio)
                {
                    worst = Some(check);
                }
            }
            let mut check = worst.expect("at least one layout");
            if check.passed() {
                gpu.coop = Some(kernel);
                if options.f32_matmul == F32Matmul::SplitF16 {
                    gpu.f32_matmul = F32Matmul::SplitF16;
                    let split = self_test(
                        "split f32",
                        &gpu,
                        options,
                        &gpu.coop,
                        validate::split_f32_self_test,
                    )?;
                    if !split.passed() {
                        eprintln!(
                            "cohort: warning: f32 products split into f16 parts failed their \
                             self-test on {} ({}: {}); they use the f32 kernel instead",
                            gpu.rt.info().name,
                            split.case,
                            split.worst
                        );
                        gpu.f32_matmul = F32Matmul::Plain;
                    }
                    if split.worst_ratio > check.worst_ratio {
                        check = split;
                    }
                }
            } else {
                eprintln!(
                    "cohort: warning: the cooperative-matrix matmul ({:?}) failed its self-test \
                     on {} ({}: {}); f16 products use the f32 kernel with f16 rounding instead{}",
                    kernel.ops,
                    gpu.rt.info().name,
                    check.case,
                    check.worst,
                    match options.f32_matmul {
                        F32Matmul::SplitF16 => ", and f32 products are not split",
                        F32Matmul::Plain => "",
                    }
                );
                gpu.coop = None;
            }
            gpu.coop_check = Some(check);
        }
        if gpu.rows.reduction == RowReduction::Subgroup {
            // Rows reduced in subgroups rely on a workgroup's subgroups being full (together
            // its 64 threads): a driver that launched part-filled ones would mix rows up without
            // an error, so check the row kernels once before trusting them with training.
            let check = self_test("rows", &gpu, options, &gpu.rows, validate::row_self_test)?;
            if !check.passed() {
                eprintln!(
                    "cohort: warning: the loss and accuracy kernels with rows reduced in \
                     subgroups failed their self-test on {} ({} {}: {}); they reduce through \
                     workgroup memory instead",
                    gpu.rt.info().name,
                    check.kernel,
                    check.case,
                    check.worst
                );
                gpu.rows = RowLayout::workgroup(options);
            }
            gpu.row_check = Some(check);
        }
        gpu.tune_matmuls = tunes;
        if let Some(path) = &options.tune_file {
            gpu.tuned = plan::Tuned::from_file(&gpu, path, options)?;
        }
        Ok(gpu)
    }

    /// The build of the cooperative-matrix kernel (`shaders/matmul_coop.wgsl`) that f16-input
    /// matmuls run on, if any: the adapter offers it (or emulation was asked for, see
    /// [`GpuOptions::coop`]) and it passed its self-test.
    pub fn matmul_coop(&self) -> Option<CoopOps> {
        self.coop.map(|k| k.ops)
    }

    /// The k per step that kernel runs `layout` with by default (untuned), for f16 products or
    /// (`split_f32`) f32 products split into f16 parts (64 only with
    /// [`GpuOptions::coop_deep_k_step`], where the layout fits it); `None` without the kernel.
    pub fn coop_k_step(&self, layout: &CoopLayout, split_f32: bool) -> Option<u32> {
        self.coop
            .map(|k| k.k_step(layout, split_f32, self.rt.caps()))
    }

    /// Every k per step that kernel can run `layout` with here: 32, and 64 where the layout's
    /// deeper slices fit (what the matmul tuner chooses between); empty without the kernel.
    pub fn coop_k_steps(&self, layout: &CoopLayout, split_f32: bool) -> Vec<u32> {
        self.coop
            .map_or(vec![], |k| k.k_steps(layout, split_f32, self.rt.caps()))
    }

    /// How products of f32 inputs run here: [`F32Matmul::SplitF16`] where it was asked for
    /// ([`GpuOptions::f32_matmul`]) and the cooperative-matrix kernel passed its self-test.
    pub fn f32_matmul(&self) -> F32Matmul {
        self.f32_matmul
    }

    /// Whether products run the fastest of their candidate plans, timed once per shape
    /// ([`GpuOptions::tune_matmuls`] or [`GpuOptions::tune_file`]).
    pub fn tunes_matmuls(&self) -> bool {
        self.tune_matmuls
    }

    /// The row kernels' self-test from [`GpuBackend::new`], where they reduce rows in subgroups
    /// (or were to, and failed it): run at the first such backend the process opened on this
    /// adapter with these options, and kept for the rest.
    pub fn row_check(&self) -> Option<&KernelCheck> {
        self.row_check.as_ref()
    }

    /// The cooperative-matrix kernel's self-test from [`GpuBackend::new`], where it was chosen
    /// (kept per adapter and options, as [`GpuBackend::row_check`]'s).
    pub fn coop_check(&self) -> Option<&KernelCheck> {
        self.coop_check.as_ref()
    }

    /// Opens the GPU as the `COHORT_*` environment variables say ([`GpuOptions::from_env`]:
    /// the adapter, and the kernels' variants); with none set, the best adapter, a software
    /// one too where it is the only one.
    pub fn from_env() -> Result<Self> {
        Self::new(&GpuOptions::from_env()?)
    }

    /// The runtime (device, capabilities, timing).
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Whether the adapter is a software rasteriser such as lavapipe.
    pub fn is_software(&self) -> bool {
        self.rt.info().device_type == wgpu::DeviceType::Cpu
    }

    /// How a row kernel runs over `classes` classes for a range of `peers` peers, where
    /// `iterations(n, e)` counts the loop iterations of one thread that walks `n` classes of
    /// each row for `e` peers of the range. The backend's layout, unless on a software adapter
    /// that would pass [`SOFTWARE_LOOP_BUDGET`]: there the fewest more threads per row (in
    /// the subgroup, then through workgroup memory) that keep under it, else 64 threads and the
    /// most peers per dispatch that do; an [`CohortError::Unsupported`] where one peer does not.
    fn row_plan(
        &self,
        op: &str,
        classes: usize,
        peers: usize,
        iterations: impl Fn(usize, usize) -> usize,
    ) -> Result<RowPlan> {
        let r = self.rows;
        let lanes = row_lanes(classes, r.classes_per_lane, r.max_lanes);
        let plan = |reduction, lanes, peers_per_dispatch| RowPlan {
            reduction,
            lanes,
            peers_per_dispatch,
        };
        let peers = peers.max(1);
        let fits =
            |lanes: usize, e: usize| iterations(classes.div_ceil(lanes), e) <= SOFTWARE_LOOP_BUDGET;
        if !self.is_software() || fits(lanes, peers) {
            return Ok(plan(r.reduction, lanes, peers));
        }
        let wider = |reduction, max: usize| {
            std::iter::successors(Some(lanes), |&l| Some(2 * l))
                .take_while(move |&l| l <= max)
                .map(move |l| (reduction, l))
        };
        let candidates: Vec<_> = wider(r.reduction, r.max_lanes)
            .chain(wider(RowReduction::Workgroup, ROW_WORKGROUP))
            .collect();
        if let Some(&(reduction, lanes)) = candidates.iter().find(|c| fits(c.1, peers)) {
            return Ok(plan(reduction, lanes, peers));
        }
        // The widest: 64 threads a row, fewer peers a dispatch.
        let (reduction, lanes) = candidates.last().copied().unwrap_or((r.reduction, lanes));
        match (1..peers).rev().find(|&e| fits(lanes, e)) {
            Some(e) => Ok(plan(reduction, lanes, e)),
            None => {
                let fewest = if peers > 1 {
                    " and one peer a dispatch"
                } else {
                    ""
                };
                let what = format!("over {classes} classes, even at {lanes} threads a row{fewest}");
                Err(self.loop_limit_error(op, &what, iterations(classes.div_ceil(lanes), 1)))
            }
        }
    }

    /// Dispatches a row kernel of `plan` over `rows` rows for `peers`, as many peers a dispatch
    /// as the plan takes; `params(begin, end)` gives each dispatch's parameters.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_peer_ranges<P: bytemuck::Pod>(
        &self,
        op: &'static str,
        shader: fn(RowReduction) -> Shader,
        plan: &RowPlan,
        peers: &std::ops::Range<usize>,
        rows: usize,
        bindings: &[&PooledBuffer],
        params: impl Fn(u32, u32) -> P,
    ) -> Result<()> {
        for begin in peers.clone().step_by(plan.peers_per_dispatch) {
            let end = (begin + plan.peers_per_dispatch).min(peers.end);
            self.rt.dispatch(
                shader(plan.reduction),
                "main",
                &[("LANES", plan.lanes as f64)],
                bytemuck::bytes_of(&params(u32_of(op, begin)?, u32_of(op, end)?)),
                bindings,
                self.grid(rows, ROW_WORKGROUP / plan.lanes),
            )?;
        }
        Ok(())
    }

    /// On a software adapter, an [`CohortError::Unsupported`] where a thread of `op` would loop
    /// `iterations` times, past [`SOFTWARE_LOOP_BUDGET`] (lavapipe would stop it silently);
    /// `what` (called only then) says what the op ran over.
    fn check_software_loops(
        &self,
        op: &str,
        what: impl FnOnce() -> String,
        iterations: usize,
    ) -> Result<()> {
        if !self.is_software() || iterations <= SOFTWARE_LOOP_BUDGET {
            return Ok(());
        }
        Err(self.loop_limit_error(op, &what(), iterations))
    }

    /// The error for a thread of `op` over `what` that would loop `iterations` times on this
    /// software adapter.
    fn loop_limit_error(&self, op: &str, what: &str, iterations: usize) -> CohortError {
        CohortError::Unsupported(format!(
            "{op} {what} on {}: a thread would loop {iterations} times, and this software \
             adapter silently stops a kernel's loops after 65535 (use the CPU backend)",
            self.rt.info().name
        ))
    }

    /// Threads the row kernels give each row of `classes` classes by default (on a software
    /// adapter a kernel may take more, where its loops would pass lavapipe's limit).
    pub fn row_threads(&self, classes: usize) -> usize {
        let r = self.rows;
        row_lanes(classes, r.classes_per_lane, r.max_lanes)
    }

    /// Whether the row kernels reduce rows by subgroup shuffles
    /// (`GpuOptions::row_subgroups`, resolved).
    pub fn row_subgroups(&self) -> bool {
        self.rows.reduction == RowReduction::Subgroup
    }

    /// Compiles now every kernel whose pipelines do not depend on the shapes, so the first
    /// training step does not wait for them. (The products and the row kernels are built per
    /// shape, with pipeline constants, at their first launch: [`Shader::specialised`].)
    pub fn warm_up(&self) -> Result<()> {
        for shader in Shader::ALL {
            let entries: Vec<&'static str> = match shader {
                Shader::Convert(_) | Shader::Optimizer(true) if !self.f16_tensors() => continue,
                // The updates a launch may record from this build: the one-dispatch layer
                // updates only where they run.
                Shader::Optimizer(copy) => (UpdateForm::ALL.into_iter())
                    .filter(|form| form.writes_copy() == copy)
                    .flat_map(|form| [(form, false), (form, true)])
                    .filter(|&(form, adam)| {
                        !form.whole_layer() || self.updates_layers_at_once(1 + adam as usize, copy)
                    })
                    .map(|(form, adam)| form.entry(adam))
                    .collect(),
                _ => (shader.entries().iter())
                    .filter(|entry| !shader.specialised(entry))
                    .copied()
                    .collect(),
            };
            self.rt.warm_up(shader, &entries)?;
        }
        Ok(())
    }

    /// Whether a layer's weights and bias are updated in one dispatch (the `*_layer` entries)
    /// for a rule of `states` state tensors, with an f16 copy of the weights or not: where
    /// [`GpuOptions::fused_layer_update`] says so and the entry's storage buffers fit the
    /// device (weights, dpre, weight gradient, bias, the states of both, the copy, and the
    /// parameters where they are read from a storage buffer: up to 10).
    fn updates_layers_at_once(&self, states: usize, copy: bool) -> bool {
        let buffers = 4 + 2 * states + copy as usize + self.rt.params_in_storage() as usize;
        self.fused_layer_update && buffers <= self.rt.caps().max_storage_buffers as usize
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let shape = Shape::new(shape);
        // Saturated where the count overflows: the runtime then refuses it as too large.
        let bytes = shape.bytes(dtype).unwrap_or(u64::MAX);
        let buffer = self.rt.alloc(bytes, &format!("tensor {shape}"))?;
        Ok(GpuTensor {
            shape,
            dtype,
            buffer,
        })
    }

    /// Workgroups for `threads` threads in groups of `size`, folded into two dimensions when
    /// one is not enough (kernels rebuild the index as `x + y · groups_x · size`).
    fn grid(&self, threads: usize, size: usize) -> [u32; 3] {
        let groups = threads.div_ceil(size) as u64;
        let max = self.rt.caps().max_workgroups_per_dim as u64;
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            // Past max² workgroups y too exceeds the limit, and the dispatch refuses it.
            let y = u32::try_from(groups.div_ceil(max)).unwrap_or(u32::MAX);
            [groups.div_ceil(y as u64) as u32, y, 1]
        }
    }

    fn write_bytes(&self, t: &mut GpuTensor, data: &[u8], dtype: DType) -> Result<()> {
        if t.dtype != dtype || data.len() as u64 != t.bytes() {
            return Err(CohortError::shape(
                "write",
                format!(
                    "{} {:?} elements into a {:?} tensor {}",
                    data.len() / dtype.size(),
                    dtype,
                    t.dtype,
                    t.shape
                ),
            ));
        }
        if data.len().is_multiple_of(4) {
            self.rt.upload(t.buf(), 0, data)?;
        } else {
            // Copies move whole 4-byte words: an odd count of F16 elements gets a zero pad.
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.rt.upload(t.buf(), 0, &padded)?;
        }
        Ok(())
    }

    fn read_checked(&self, t: &GpuTensor, dtype: DType) -> Result<Vec<u8>> {
        if t.dtype != dtype {
            return Err(CohortError::shape(
                "read",
                format!("reading a tensor of {:?} as {dtype:?}", t.dtype),
            ));
        }
        let mut bytes = self
            .rt
            .read_bytes(t.buf(), 0, t.bytes().next_multiple_of(4))?;
        bytes.truncate(t.bytes() as usize);
        Ok(bytes)
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;

    fn instance(&self) -> u64 {
        self.instance
    }

    fn describe(&self) -> String {
        let i = self.rt.info();
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    fn tensor(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        ops::check_len(shape, data.len())?;
        let mut t = self.alloc(shape, DType::F32)?;
        self.write_bytes(&mut t, bytemuck::cast_slice(data), DType::F32)?;
        Ok(t)
    }

    fn tensor_u32(&self, shape: &[usize], data: &[u32]) -> Result<GpuTensor> {
        ops::check_len(shape, data.len())?;
        let mut t = self.alloc(shape, DType::U32)?;
        self.write_bytes(&mut t, bytemuck::cast_slice(data), DType::U32)?;
        Ok(t)
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let t = self.alloc(shape, dtype)?;
        self.rt.clear(t.buf())?;
        Ok(t)
    }

    fn write(&self, t: &mut GpuTensor, data: &[f32]) -> Result<()> {
        if t.dtype == DType::F16 {
            let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            return self.write_bytes(t, bytemuck::cast_slice(&halves), DType::F16);
        }
        self.write_bytes(t, bytemuck::cast_slice(data), DType::F32)
    }

    fn write_u32(&self, t: &mut GpuTensor, data: &[u32]) -> Result<()> {
        self.write_bytes(t, bytemuck::cast_slice(data), DType::U32)
    }

    fn read(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        if t.dtype == DType::F16 {
            let halves: Vec<half::f16> =
                bytemuck::pod_collect_to_vec(&self.read_checked(t, DType::F16)?);
            return Ok(halves.iter().map(|x| x.to_f32()).collect());
        }
        Ok(bytemuck::pod_collect_to_vec(
            &self.read_checked(t, DType::F32)?,
        ))
    }

    fn read_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        Ok(bytemuck::pod_collect_to_vec(
            &self.read_checked(t, DType::U32)?,
        ))
    }

    fn next_batch(&self) -> Result<()> {
        if !self.one_pass {
            self.rt.end_pass();
        }
        Ok(())
    }

    fn copy(
        &self,
        src: &GpuTensor,
        src_offset: usize,
        dst: &mut GpuTensor,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        ops::copy_range(src, src_offset, dst, dst_offset, len)?;
        let size = src.dtype.size() as u64;
        self.rt.copy(
            src.buf(),
            src_offset as u64 * size,
            dst.buf(),
            dst_offset as u64 * size,
            len as u64 * size,
        )
    }

    fn matmul(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &mut GpuTensor,
        spec: &MatmulSpec,
    ) -> Result<()> {
        let d = MatmulDims::infer(a, b, c, spec)?;
        self.launch_matmul(&d, spec, [a, b, c], None)
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_bias_act(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: &GpuTensor,
        pre: &mut GpuTensor,
        y: &mut GpuTensor,
        spec: &MatmulSpec,
        act: Activation,
    ) -> Result<()> {
        let d = MatmulDims::infer(a, b, pre, spec)?;
        let e = BiasActDims::infer_fused(pre, bias, y)?;
        self.launch_matmul(
            &d,
            spec,
            [a, b, pre],
            Some(Epilogue {
                entries: ["main_bias_act", "reduce_splits_bias_act"],
                bias,
                aux: y,
                act,
                bias_stride: e.bias_stride,
            }),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_act_grad(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        pre: &GpuTensor,
        bias: &GpuTensor,
        dpre: &mut GpuTensor,
        spec: &MatmulSpec,
        act: Activation,
    ) -> Result<()> {
        let d = MatmulDims::infer(a, b, dpre, spec)?;
        let e = BiasActDims::infer_fused(dpre, bias, pre)?;
        self.launch_matmul(
            &d,
            spec,
            [a, b, dpre],
            Some(Epilogue {
                entries: ["main_act_grad", "reduce_splits_act_grad"],
                bias,
                aux: pre,
                act,
                bias_stride: e.bias_stride,
            }),
        )
    }

    fn bias_act(
        &self,
        x: &GpuTensor,
        bias: &GpuTensor,
        y: &mut GpuTensor,
        act: Activation,
    ) -> Result<()> {
        let d = BiasActDims::infer(x, bias, y)?;
        self.launch_bias_act("forward", &d, act, &[x.buf(), bias.buf(), y.buf()])
    }

    fn bias_act_backward(
        &self,
        x: &GpuTensor,
        bias: &GpuTensor,
        dy: &GpuTensor,
        dx: &mut GpuTensor,
        act: Activation,
    ) -> Result<()> {
        let d = BiasActDims::infer(x, bias, dx)?;
        BiasActDims::infer(x, bias, dy)?;
        self.launch_bias_act(
            "backward",
            &d,
            act,
            &[x.buf(), bias.buf(), dx.buf(), dy.buf()],
        )
    }

    fn reduce_sum(
        &self,
        x: &GpuTensor,
        axis: usize,
        out: &mut GpuTensor,
        spec: &ReduceSpec,
    ) -> Result<()> {
        let (d, offset) = ReduceDims::infer_into(x, axis, out, spec.out_row)?;
        const OP: &str = "reduce_sum";
        let params = ReduceParams {
            outer: u32_of(OP, d.outer)?,
            n: u32_of(OP, d.n)?,
            inner: u32_of(OP, d.inner)?,
            accumulate: spec.accumulate as u32,
            scale: spec.scale,
            out_offset: u32_of(OP, offset)?,
            _pad: [0; 2],
        };
        // A workgroup per 16 outputs of a row (the kernel unfolds the index), 16 threads a
        // column, each summing every 16th of its n values.
        self.check_software_loops(OP, || format!("over {} rows", d.n), d.n.div_ceil(16))?;
        let groups = self.grid(d.inner.div_ceil(16).saturating_mul(d.outer), 1);
        self.rt.dispatch(
            Shader::ReduceSum,
            "main",
            &[],
            bytemuck::bytes_of(&params),
            &[x.buf(), out.buf()],
            groups,
        )
    }

    fn softmax_ce(
        &self,
        logits: &GpuTensor,
        labels: &GpuTensor,
        losses: &mut GpuTensor,
        dlogits: &mut GpuTensor,
        spec: &CrossEntropySpec,
    ) -> Result<()> {
        let d = spec.infer(logits, labels, losses, dlogits)?;
        const OP: &str = "softmax_ce";
        let total = d.groups * d.rows;
        let params = CeParams {
            total_rows: u32_of(OP, total)?,
            rows: u32_of(OP, d.rows)?,
            classes: u32_of(OP, d.classes)?,
            _pad: 0,
            smoothing: spec.label_smoothing,
            grad_scale: spec.grad_scale,
            _pad1: [0; 2],
        };
        // Each thread: the row's log-sum-exp (two loops), then the loss and gradient (one).
        let plan = self.row_plan(OP, d.classes, 1, |n, _| 3 * n)?;
        let (rows, lanes) = (plan.reduction, plan.lanes);
        self.rt.dispatch(
            Shader::SoftmaxCe(rows),
            "main",
            &[("LANES", lanes as f64)],
            bytemuck::bytes_of(&params),
            &[logits.buf(), labels.buf(), losses.buf(), dlogits.buf()],
            self.grid(total, ROW_WORKGROUP / lanes),
        )
    }

    fn kl_div(
        &self,
        logits: &GpuTensor,
        losses: &mut GpuTensor,
        dlogits: &mut GpuTensor,
        spec: &KlSpec,
    ) -> Result<()> {
        let d = spec.infer(logits, losses, dlogits)?;
        const OP: &str = "kl_div";
        check_peers(OP, d.groups)?;
        let params = KlParams {
            peers: u32_of(OP, d.groups)?,
            rows: u32_of(OP, d.rows)?,
            classes: u32_of(OP, d.classes)?,
            peer_begin: u32_of(OP, spec.peers.start)?,
            peer_end: u32_of(OP, spec.peers.end)?,
            accumulate: spec.accumulate as u32,
            temperature: spec.temperature,
            grad_scale: spec.grad_scale,
        };
        // Each thread: every peer's log-sum-exp (two loops each), then per peer of the range
        // its (class, peer) pairs.
        let p = d.groups;
        let plan = self.row_plan(OP, d.classes, spec.peers.len(), |n, e| {
            2 * p * n + e * p * n
        })?;
        let bindings = [logits.buf(), losses.buf(), dlogits.buf()];
        self.dispatch_peer_ranges(
            OP,
            Shader::KlDiv,
            &plan,
            &spec.peers,
            d.rows,
            &bindings,
            |b, e| KlParams {
                peer_begin: b,
                peer_end: e,
                ..params
            },
        )
    }

    fn dml_loss(
        &self,
        logits: &GpuTensor,
        labels: &GpuTensor,
        losses: &mut GpuTensor,
        dlogits: &mut GpuTensor,
        spec: &DmlLossSpec,
    ) -> Result<()> {
        let d = spec.infer(logits, labels, losses, dlogits)?;
        const OP: &str = "dml_loss";
        check_peers(OP, d.groups)?;
        let params = DmlLossParams {
            peers: u32_of(OP, d.groups)?,
            rows: u32_of(OP, d.rows)?,
            classes: u32_of(OP, d.classes)?,
            peer_begin: u32_of(OP, spec.peers.start)?,
            peer_end: u32_of(OP, spec.peers.end)?,
            _pad0: 0,
            temperature: spec.temperature,
            kl_scale: spec.kl_scale,
            ce_scale: spec.ce_scale,
            smoothing: spec.label_smoothing,
            _pad1: [0; 2],
        };
        // Each thread: with other peers, every peer's log-sum-exp (two loops each); then per
        // peer of the range its own log-sum-exp at T = 1 and its (class, peer) pairs (each
        // class once without other peers).
        let p = d.groups;
        let plan = self.row_plan(OP, d.classes, spec.peers.len(), |n, e| match p {
            1 => e * 3 * n,
            _ => 2 * p * n + e * (2 * n + p * n),
        })?;
        let bindings = [logits.buf(), labels.buf(), losses.buf(), dlogits.buf()];
        self.dispatch_peer_ranges(
            OP,
            Shader::DmlLoss,
            &plan,
            &spec.peers,
            d.rows,
            &bindings,
            |b, e| DmlLossParams {
                peer_begin: b,
                peer_end: e,
                ..params
            },
        )
    }

    fn optimizer_step(
        &self,
        step: &OptimizerStep,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        states: &mut [GpuTensor],
    ) -> Result<()> {
        step.check(param, grad, states)?;
        self.launch_optimizer(step, param, grad, states, Update::Plain)
    }

    fn bias_optimizer_step(
        &self,
        step: &OptimizerStep,
        bias: &mut GpuTensor,
        dpre: &GpuTensor,
        states: &mut [GpuTensor],
    ) -> Result<()> {
        let d = ReduceDims::bias_gradient(dpre, bias)?;
        step.check(bias, bias, states)?;
        self.launch_optimizer(step, bias, dpre, states, Update::Bias(d))
    }

    fn convert(&self, src: &GpuTensor, dst: &mut GpuTensor) -> Result<()> {
        let n = ops::convert_len(src, dst)?;
        self.need_f16("conversions between F32 and F16")?;
        let params = [u32_of("convert", n)?, 0, 0, 0];
        self.rt.dispatch(
            Shader::Convert(dst.dtype == DType::F16),
            "main",
            &[],
            bytemuck::cast_slice(&params),
            &[src.buf(), dst.buf()],
            self.grid(n, 256),
        )
    }

    fn splits_f32_products(&self) -> bool {
        self.f32_matmul == F32Matmul::SplitF16
    }

    fn f16_tensors(&self) -> bool {
        self.f16_tensors
    }

    fn optimizer_step_f16_copy(
        &self,
        step: &OptimizerStep,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        states: &mut [GpuTensor],
        copy: &mut GpuTensor,
    ) -> Result<()> {
        step.check(param, grad, states)?;
        ops::convert_len(param, copy)?;
        self.need_f16("f16 copies of parameters")?;
        self.launch_optimizer(step, param, grad, states, Update::F16Copy(copy))
    }

    fn update_layer(&self, step: &OptimizerStep, layer: LayerUpdate<'_, GpuTensor>) -> Result<()> {
        if !self.updates_layers_at_once(step.state_count(), layer.weight_f16.is_some()) {
            return update_layer_in_turn(self, step, layer);
        }
        step.check(layer.weight, layer.weight_grad, layer.weight_states)?;
        let dims = ReduceDims::bias_gradient(layer.dpre, layer.bias)?;
        step.check(layer.bias, layer.bias, layer.bias_states)?;
        if let Some(copy) = &layer.weight_f16 {
            ops::convert_len(layer.weight, *copy)?;
            self.need_f16("f16 copies of parameters")?;
        }
        let update = Update::Layer {
            copy: layer.weight_f16.as_deref(),
            bias: layer.bias,
            dpre: layer.dpre,
            bias_states: layer.bias_states,
            dims,
        };
        self.launch_optimizer(
            step,
            layer.weight,
            layer.weight_grad,
            layer.weight_states,
            update,
        )
    }

    fn axpby(&self, x: Option<&GpuTensor>, y: &mut GpuTensor, k: &Axpby) -> Result<()> {
        if y.dtype != DType::F32 {
            return Err(CohortError::shape("axpby", "y must be F32"));
        }
        if let Some(x) = x {
            ops::axpby_len(x, y)?;
        }
        let n = y.shape.numel();
        let params = AxpbyParams {
            n: u32_of("axpby", n)?,
            a: k.a,
            b: k.b,
            c: k.c,
        };
        let (entry, buffers) = match x {
            Some(x) => ("axpby", vec![y.buf(), x.buf()]),
            None => ("affine", vec![y.buf()]),
        };
        self.rt.dispatch(
            Shader::Axpby,
            entry,
            &[],
            bytemuck::bytes_of(&params),
            &buffers,
            self.grid(n, 256),
        )
    }

    fn count_correct(
        &self,
        logits: &GpuTensor,
        labels: &GpuTensor,
        counts: &mut GpuTensor,
    ) -> Result<()> {
        let d = ops::accuracy_dims(logits, labels, counts)?;
        const OP: &str = "count_correct";
        check_peers(OP, d.groups)?;
        if d.classes >= COUNT_MAX_CLASSES {
            return Err(CohortError::InvalidConfig(format!(
                "{OP}: {} classes; the kernel counts fewer than {COUNT_MAX_CLASSES} (its class \
                 indices pass through f32)",
                d.classes
            )));
        }
        let params = CountParams {
            peers: u32_of(OP, d.groups)?,
            rows: u32_of(OP, d.rows)?,
            classes: u32_of(OP, d.classes)?,
            _pad: 0,
        };
        // Each thread: per peer its best class and log-sum-exp (two loops), then the
        // ensemble's (class, peer) pairs.
        let p = d.groups;
        let plan = self.row_plan(OP, d.classes, 1, |n, _| 3 * p * n)?;
        let (rows, lanes) = (plan.reduction, plan.lanes);
        self.rt.dispatch(
            Shader::CountCorrect(rows),
            "main",
            &[("LANES", lanes as f64)],
            bytemuck::bytes_of(&params),
            &[logits.buf(), labels.buf(), counts.buf()],
            self.grid(d.rows, ROW_WORKGROUP / lanes),
        )
    }

    fn gather_batch(
        &self,
        features: &GpuTensor,
        labels: &GpuTensor,
        index: &GpuTensor,
        offset: usize,
        x: &mut GpuTensor,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let g = ops::gather_batch_dims(features, labels, index, offset, x, y)?;
        // The kernel moves 4-byte words: an F16 row (of even width) is d / 2 of them.
        let words = |d: usize, t: &GpuTensor| d * t.dtype.size() / 4;
        let (wx, wy) = (words(g.widths[0], features), words(g.widths[1], labels));
        const OP: &str = "gather_batch";
        // The kernel's thread count spans both outputs: it must fit its u32 too.
        u32_of(OP, g.rows * (wx + wy))?;
        let params = GatherParams {
            src_rows: u32_of(OP, g.n)?,
            dst_rows: u32_of(OP, g.rows)?,
            width_a: u32_of(OP, wx)?,
            width_b: u32_of(OP, wy)?,
            offset: u32_of(OP, offset)?,
            _pad: [0; 3],
        };
        self.rt.dispatch(
            Shader::Gather,
            "main",
            &[],
            bytemuck::bytes_of(&params),
            &[index.buf(), features.buf(), x.buf(), labels.buf(), y.buf()],
            self.grid(g.rows * (wx + wy), 256),
        )
    }

    fn finish(&self) -> Result<()> {
        self.rt.finish()
    }

    fn submit(&self) -> Result<()> {
        self.rt.flush()
    }
}

impl GpuBackend {
    /// The C tile of `matmul.wgsl` for product `d`: 64×64 unless [`GpuOptions::matmul_tile`]
    /// forces 128 or asks for it by shape ([`GpuBackend::fills_with_big_tiles`]), or on a
    /// software adapter for products at least 128 each way and shallow enough for its loops
    /// ([`tiled_loops`]: at most 48,000 deep), where its workgroup memory fits:
    /// lavapipe ran those 1.5× faster in 128 tiles (BENCHMARKS.md, "The 128 tile by default
    /// on software adapters"). (On an H200 the 128 tile, 8×8 accumulators per thread, ran at
    /// 1.5 TFLOP/s where the 64 tile ran at 27, at 4096³, before its accumulators became vec4s:
    /// BENCHMARKS.md.)
    fn matmul_tile(&self, d: &MatmulDims) -> usize {
        match self.matmul_tile {
            TileChoice::Fixed(tile) => tile, // 64, or 128 where it fits: checked at opening
            TileChoice::ByShape
                if self.fills_with_big_tiles(d, 128)
                    && self.tiled_kernel_fits(128, self.tiled_buffers()) =>
            {
                128
            }
            TileChoice::Default
                if self.is_software()
                    && d.m >= 128
                    && d.n >= 128
                    && tiled_loops(128, d.k) <= SOFTWARE_LOOP_BUDGET
                    && self.tiled_kernel_fits(128, self.tiled_buffers()) =>
            {
                128
            }
            TileChoice::Default | TileChoice::ByShape => 64,
        }
    }

    /// Workgroup buffers per operand of `matmul.wgsl`: 2, or 1 where
    /// [`GpuOptions::matmul_single_buffer`] asks.
    fn tiled_buffers(&self) -> u32 {
        if self.matmul_single_buffer {
            1
        } else {
            2
        }
    }

    /// The build of `matmul.wgsl` with `buffers` workgroup buffers that products run by
    /// default: reading two k-slices ahead with [`GpuOptions::matmul_deep_prefetch`] where it
    /// has two buffers, else one.
    fn tiled_build(&self, buffers: u32) -> MatmulKernel {
        let deep = self.matmul_deep_prefetch && buffers == 2;
        MatmulKernel::Tiled {
            buffers,
            prefetch: if deep { 2 } else { 1 },
        }
    }

    /// Every build of `matmul.wgsl` with `buffers` workgroup buffers that the matmul tuner
    /// times, the default ([`Self::tiled_build`]) first: with two buffers reading one and two
    /// k-slices ahead, unless the options ask for two.
    fn tiled_tuner_builds(&self, buffers: u32) -> Vec<MatmulKernel> {
        let default = self.tiled_build(buffers);
        let other = MatmulKernel::Tiled {
            buffers,
            prefetch: 2,
        };
        match buffers == 2 && !self.matmul_deep_prefetch {
            true => vec![default, other],
            false => vec![default],
        }
    }

    /// Whether `matmul.wgsl`'s workgroup memory with `tile` and `buffers` fits the device.
    fn tiled_kernel_fits(&self, tile: usize, buffers: u32) -> bool {
        tiled_kernel_bytes(tile, buffers) <= self.rt.caps().max_workgroup_storage as usize
    }

    /// Whether product `d` has enough output tiles `tile` wide to fill a large GPU
    /// ([`fills_with_tiles`]), on a hardware adapter.
    fn fills_with_big_tiles(&self, d: &MatmulDims, tile: usize) -> bool {
        !self.is_software() && fills_with_tiles(d.m, d.n, d.batch, tile)
    }

    /// An [`CohortError::Unsupported`] error for `what` where F16 tensors are not offered.
    fn need_f16(&self, what: &str) -> Result<()> {
        if self.f16_tensors {
            return Ok(());
        }
        let why = if self.rt.caps().shader_f16 {
            "F16 tensors were declined (COHORT_F16_TENSORS=0)".to_string()
        } else {
            format!("{} has no f16 shaders (SHADER_F16)", self.rt.info().name)
        };
        Err(CohortError::Unsupported(format!(
            "{what} need F16 tensors: {why}"
        )))
    }

    /// Records a matmul, optionally with a fused epilogue; a profile counts it under its shape
    /// and FLOPs.
    fn launch_matmul(
        &self,
        d: &MatmulDims,
        spec: &MatmulSpec,
        operands: [&GpuTensor; 3],
        epilogue: Option<Epilogue<'_>>,
    ) -> Result<()> {
        let describe = || (d.to_string(), d.flops());
        let plan = self.matmul_plan(d, spec, operands[0], operands[1])?;
        self.rt.annotated(describe, || {
            self.record_matmul(d, spec, operands, epilogue, plan)
        })
    }

    /// [`GpuBackend::launch_matmul`]'s work: records the product as `plan` says.
    fn record_matmul(
        &self,
        d: &MatmulDims,
        spec: &MatmulSpec,
        [a, b, c]: [&GpuTensor; 3],
        epilogue: Option<Epilogue<'_>>,
        plan: MatmulPlan,
    ) -> Result<()> {
        const OP: &str = "matmul";
        let params = MatmulParams {
            m: u32_of(OP, d.m)?,
            n: u32_of(OP, d.n)?,
            k: u32_of(OP, d.k)?,
            stride_a: u32_of(OP, d.stride_a)?,
            stride_b: u32_of(OP, d.stride_b)?,
            alpha: spec.alpha,
            beta: spec.beta,
            act: epilogue.as_ref().map_or(0, |e| e.act.code()),
            bias_stride: u32_of(OP, epilogue.as_ref().map_or(0, |e| e.bias_stride))?,
            batch: u32_of(OP, d.batch)?,
            // Unsplit: one range covers K.
            k_split: u32_of(OP, k_split(d.k, 1, Some(1)))?,
            _pad: 0,
        };
        let storage = MatmulStorage {
            a_f16: a.dtype == DType::F16,
            b_f16: b.dtype == DType::F16,
            aux_f16: epilogue.as_ref().is_some_and(|e| e.aux.dtype == DType::F16),
        };
        if storage.any_f16() {
            self.need_f16("matmuls on F16 tensors")?;
        }
        // vec4 loads where the operand's stored contiguous axis is a multiple of 4 (then every
        // batch stride is too, and a vec4 never straddles the matrix edge).
        let (vec_a, vec_b) = vec4_loads(d);
        let mut constants = vec![
            ("TRANS_A", flag(d.trans_a)),
            ("TRANS_B", flag(d.trans_b)),
            ("VEC_A", flag(vec_a)),
            ("VEC_B", flag(vec_b)),
        ];
        let shader = match plan.kernel {
            MatmulKernel::Coop {
                layout,
                k_step,
                prefetch,
            } => {
                // f32 products split into f16 parts run on this kernel too, in its split layout.
                let kernel = self.coop.ok_or_else(|| {
                    CohortError::Unsupported("a cooperative-matrix plan without its kernel".into())
                })?;
                constants.extend([
                    ("SPLIT_F32", flag(!d.f16_inputs)),
                    ("MN_STAGING", flag(kernel.mn_staging)),
                    ("UNROLL", flag(kernel.unroll)),
                    ("WIDE_STORES", flag(kernel.wide_stores)),
                    ("PREFETCH", prefetch as f64),
                    ("TK", k_step as f64),
                    ("SG_SIZE", kernel.sg_size as f64),
                    ("SG_ROWS", layout.sg_rows as f64),
                    ("SG_COLS", layout.sg_cols as f64),
                    ("FR", layout.fr as f64),
                    ("FC", layout.fc as f64),
                ]);
                Shader::MatmulCoop(kernel.ops, storage)
            }
            MatmulKernel::Tiled { buffers, prefetch } => {
                constants.extend([
                    ("F16_INPUTS", flag(d.f16_inputs)),
                    ("TILE", plan.tile as f64),
                    ("SLICE_BUFFERS", buffers as f64),
                    ("PREFETCH", prefetch as f64),
                ]);
                Shader::Matmul(storage)
            }
            MatmulKernel::Narrow => {
                let operands = [a, b, c];
                return self.record_narrow(d, &params, storage, operands, epilogue, plan.tile);
            }
        };
        let (tile, k_split, splits) = (plan.tile, plan.k_per_split, plan.splits(d.k));
        // A thread's loops over K (split or not) on a software adapter ([`tiled_loops`]); the
        // cooperative-matrix kernel runs there only in K ranges of at most
        // SOFTWARE_COOP_K_PER_DISPATCH.
        let check_depth = |k: usize| match plan.kernel {
            MatmulKernel::Coop { .. } if self.is_software() && k > SOFTWARE_COOP_K_PER_DISPATCH => {
                Err(CohortError::Unsupported(format!(
                    "{OP}: a cooperative-matrix product {k} deep in one dispatch on {} \
                     (software adapters stop a kernel's loops after 65535: at most \
                     {SOFTWARE_COOP_K_PER_DISPATCH})",
                    self.rt.info().name
                )))
            }
            MatmulKernel::Coop { .. } => Ok(()),
            _ => self.check_software_loops(OP, || format!("{k} deep"), tiled_loops(tile, k)),
        };
        let groups = |z: usize| -> Result<[u32; 3]> {
            Ok([
                u32_of(OP, d.n.div_ceil(tile))?,
                u32_of(OP, d.m.div_ceil(tile))?,
                u32_of(OP, z)?,
            ])
        };
        // A split product whose grid would pass the device's limit (the batch times the
        // splits) multiplies unsplit instead.
        let max_groups = self.rt.caps().max_workgroups_per_dim as usize;
        if splits > 1 && d.batch * splits <= max_groups {
            check_depth(k_split)?;
            let elements = d.batch * d.m * d.n;
            match self
                .rt
                .alloc((splits * elements * 4) as u64, "split-K partial products")
            {
                Ok(partial) => {
                    // Each split's partial product (alpha 1, beta 0) into its slice, then the
                    // reduction applies alpha, beta and the epilogue.
                    let params = MatmulParams {
                        k_split: u32_of(OP, k_split)?,
                        ..params
                    };
                    let first = MatmulParams {
                        alpha: 1.0,
                        beta: 0.0,
                        ..params
                    };
                    let operands = [a.buf(), b.buf(), &partial, a.buf(), b.buf()];
                    self.rt.dispatch(
                        shader,
                        "main",
                        &constants,
                        bytemuck::bytes_of(&first),
                        &operands,
                        groups(d.batch * splits)?,
                    )?;
                    let mut bindings = vec![(3, c.buf()), (8, &partial)];
                    let entry = match &epilogue {
                        Some(e) => {
                            bindings.extend([(6, e.bias.buf()), (7, e.aux.buf())]);
                            e.entries[1]
                        }
                        None => "reduce_splits",
                    };
                    // The reduction reads no A or B: the module of its aux type serves every
                    // product.
                    let reduce = Shader::Matmul(MatmulStorage {
                        a_f16: false,
                        b_f16: false,
                        aux_f16: storage.aux_f16,
                    });
                    return self.rt.dispatch_at(
                        reduce,
                        entry,
                        &[],
                        bytemuck::bytes_of(&params),
                        &bindings,
                        self.grid(elements, 256),
                    );
                }
                // A scratch buffer too large for the device, or out of its memory (the only
                // GPU error an allocation reports): multiply unsplit instead.
                Err(CohortError::BufferTooLarge { .. } | CohortError::Gpu(_)) => {}
                Err(e) => return Err(e),
            }
        }
        check_depth(d.k)?;
        // `a4` and `b4`: the same buffers, read as vec4s.
        let mut buffers = vec![a.buf(), b.buf(), c.buf(), a.buf(), b.buf()];
        let entry = match epilogue {
            Some(e) => {
                buffers.extend([e.bias.buf(), e.aux.buf()]);
                e.entries[0]
            }
            None => "main",
        };
        self.rt.dispatch(
            shader,
            entry,
            &constants,
            bytemuck::bytes_of(&params),
            &buffers,
            groups(d.batch)?,
        )
    }

    /// [`GpuBackend::record_matmul`] on `shaders/matmul_narrow.wgsl`, `rows` rows of C per
    /// workgroup: one dispatch, K never split.
    fn record_narrow(
        &self,
        d: &MatmulDims,
        params: &MatmulParams,
        storage: MatmulStorage,
        [a, b, c]: [&GpuTensor; 3],
        epilogue: Option<Epilogue<'_>>,
        rows: usize,
    ) -> Result<()> {
        const OP: &str = "matmul";
        let chunk = plan::narrow_chunk(rows, d.n);
        self.check_software_loops(OP, || format!("{} deep", d.k), narrow_loops(d, rows))?;
        let constants = [
            ("TRANS_A", flag(d.trans_a)),
            ("TRANS_B", flag(d.trans_b)),
            ("F16_INPUTS", flag(d.f16_inputs)),
            ("ROWS", rows as f64),
            ("COLS", d.n as f64),
            ("CHUNK", chunk as f64),
        ];
        let mut bindings = vec![(1, a.buf()), (2, b.buf()), (3, c.buf())];
        let entry = match &epilogue {
            Some(e) => {
                bindings.extend([(6, e.bias.buf()), (7, e.aux.buf())]);
                e.entries[0]
            }
            None => "main",
        };
        let groups = [u32_of(OP, d.m.div_ceil(rows))?, 1, u32_of(OP, d.batch)?];
        self.rt.dispatch_at(
            Shader::MatmulNarrow(storage),
            entry,
            &constants,
            bytemuck::bytes_of(params),
            &bindings,
            groups,
        )
    }

    /// K per split for a product of `tiles` output tiles: [`k_split`] with the splits forced by
    /// [`GpuOptions::k_splits`], or none on software adapters (a few cores, which any product
    /// fills), or chosen by shape; on the cooperative-matrix kernel (`coop`) of a software
    /// adapter at most [`SOFTWARE_COOP_K_PER_DISPATCH`].
    fn k_split(&self, d: &MatmulDims, tiles: usize, coop: bool) -> Result<usize> {
        let forced = self.k_splits.or(self.is_software().then_some(1));
        let split = k_split(d.k, tiles, forced);
        if !(coop && self.is_software()) || split <= SOFTWARE_COOP_K_PER_DISPATCH {
            return Ok(split);
        }
        let splits = d.k.div_ceil(SOFTWARE_COOP_K_PER_DISPATCH);
        if splits > MAX_K_SPLITS {
            return Err(CohortError::Unsupported(format!(
                "a product {} deep on the cooperative-matrix kernel of {}: at most {} \
                 (its loops would be cut short; use the f32 kernel, COHORT_COOP=off)",
                d.k,
                self.rt.info().name,
                MAX_K_SPLITS * SOFTWARE_COOP_K_PER_DISPATCH
            )));
        }
        Ok(k_split(d.k, tiles, Some(splits)))
    }

    /// The cooperative-matrix kernel's layout for this product: the big one where the product
    /// has enough such tiles to fill a large GPU (or `COHORT_MATMUL_TILE=128` asks for it), else
    /// the small (or forced) one.
    fn coop_layout(&self, kernel: &CoopKernel, d: &MatmulDims) -> CoopLayout {
        let Some(big) = kernel.big else {
            return kernel.small;
        };
        let wanted = match self.matmul_tile {
            TileChoice::Default | TileChoice::ByShape => {
                self.fills_with_big_tiles(d, big.tile(kernel.ops.frag()) as usize)
            }
            TileChoice::Fixed(tile) => tile == 128,
        };
        if wanted {
            big
        } else {
            kernel.small
        }
    }

    /// Records an optimizer update (checked by the caller) of the kind `update` says.
    fn launch_optimizer(
        &self,
        step: &OptimizerStep,
        param: &GpuTensor,
        grad: &GpuTensor,
        states: &[GpuTensor],
        update: Update<'_>,
    ) -> Result<()> {
        const OP: &str = "optimizer";
        let n = param.shape.numel();
        let n32 = u32_of(OP, n)?;
        let (rows, cols) = match update {
            Update::Bias(d) | Update::Layer { dims: d, .. } => {
                // The bias gradient's column sums, as reduce_sum's.
                let what = || format!("of a bias over {} rows", d.n);
                self.check_software_loops(OP, what, d.n.div_ceil(16))?;
                (u32_of(OP, d.n)?, u32_of(OP, d.inner)?)
            }
            _ => (0, 0),
        };
        // A layer's weights take the first workgroups, 256 weights each; its bias the rest.
        let (bias_n, weight_groups) = match update {
            Update::Layer { bias, .. } => (bias.shape.numel(), n.div_ceil(256)),
            _ => (0, 0),
        };
        // The fields every rule shares; each rule then sets its own.
        let (lr, weight_decay, grad_scale) = step.lr_weight_decay_grad_scale();
        let shared = OptimizerParams {
            n: n32,
            flag: 0,
            lr,
            weight_decay,
            momentum_or_beta1: 0.0,
            beta2: 0.0,
            eps: 0.0,
            c1: 1.0,
            c2: 1.0,
            rows,
            cols,
            grad_scale,
            bias_n: u32_of(OP, bias_n)?,
            weight_groups: u32_of(OP, weight_groups)?,
            _pad: [0; 2],
        };
        let params = match *step {
            OptimizerStep::Sgd {
                momentum, nesterov, ..
            } => OptimizerParams {
                flag: nesterov as u32,
                momentum_or_beta1: momentum,
                ..shared
            },
            OptimizerStep::Adam {
                beta1,
                beta2,
                eps,
                decoupled,
                t,
                ..
            } => OptimizerParams {
                flag: decoupled as u32,
                momentum_or_beta1: beta1,
                beta2,
                eps,
                c1: crate::ops::adam_bias_correction(beta1, t) as f32,
                c2: crate::ops::adam_bias_correction(beta2, t) as f32,
                ..shared
            },
        };
        let entry = update
            .form()
            .entry(matches!(step, OptimizerStep::Adam { .. }));
        // param, grad, then the states from binding 3; the f16 copy is binding 5. A layer
        // update binds dpre as `grad` (as the bias entries do), its weight gradient at 7, and
        // the bias and its states at 6 and from 8.
        let mut bindings = vec![(1, param.buf()), (2, grad.buf())];
        bindings.extend((3..).zip(states.iter().map(|s| s.buf())));
        let copy = match update {
            Update::F16Copy(copy)
            | Update::Layer {
                copy: Some(copy), ..
            } => Some(copy),
            _ => None,
        };
        if let Some(copy) = copy {
            bindings.push((5, copy.buf()));
        }
        if let Update::Layer {
            bias,
            dpre,
            bias_states,
            ..
        } = update
        {
            bindings[1] = (2, dpre.buf());
            bindings.extend([(6, bias.buf()), (7, grad.buf())]);
            bindings.extend((8..).zip(bias_states.iter().map(|s| s.buf())));
        }
        self.rt.dispatch_at(
            Shader::Optimizer(copy.is_some()),
            entry,
            &[],
            bytemuck::bytes_of(&params),
            &bindings,
            match update {
                Update::Bias(_) => self.grid(n.div_ceil(16), 1),
                Update::Layer { .. } => self.grid(weight_groups + bias_n.div_ceil(16), 1),
                _ => self.grid(n, 256),
            },
        )
    }

    fn launch_bias_act(
        &self,
        entry: &'static str,
        d: &BiasActDims,
        act: Activation,
        buffers: &[&PooledBuffer],
    ) -> Result<()> {
        const OP: &str = "bias_act";
        let total = d.groups * d.rows * d.cols;
        let params = BiasActParams {
            total: u32_of(OP, total)?,
            rows_cols: u32_of(OP, d.rows * d.cols)?,
            cols: u32_of(OP, d.cols)?,
            bias_stride: u32_of(OP, d.bias_stride)?,
            act: act.code(),
            _pad: [0; 3],
        };
        self.rt.dispatch(
            Shader::BiasAct,
            entry,
            &[],
            bytemuck::bytes_of(&params),
            buffers,
            self.grid(total, 256),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{
        fills_with_tiles, k_split, tiled_kernel_bytes, Capabilities, CohortError, CoopKernel,
        CoopLayout, CoopOps, GpuOptions, Shader, UpdateForm,
    };

    #[test]
    fn each_optimizer_build_lists_the_entries_its_update_forms_launch() {
        // The f32 build holds the forms that write no f16 copy; the f16 build all of them.
        for copy in [false, true] {
            let mut launched: Vec<&str> = (UpdateForm::ALL.into_iter())
                .filter(|form| copy || !form.writes_copy())
                .flat_map(|form| [form.entry(false), form.entry(true)])
                .collect();
            let mut listed = Shader::Optimizer(copy).entries().to_vec();
            launched.sort_unstable();
            listed.sort_unstable();
            assert_eq!(launched, listed, "Shader::Optimizer({copy})");
        }
    }

    #[test]
    fn the_tensor_core_kernel_takes_the_layouts_that_fit_the_devices_workgroup_memory() {
        let layout = |s: &str| s.parse::<CoopLayout>().unwrap();
        // The kernel on a device of `bytes` workgroup memory.
        let kernel = |ops, bytes| {
            let caps = Capabilities::with_workgroup_memory(bytes);
            CoopKernel::new(ops, &caps, &GpuOptions::default(), false)
        };
        // 48 KiB (the H200's): the small and big layouts.
        let k = kernel(CoopOps::Native16, 48 << 10).unwrap();
        assert_eq!(
            (k.small, k.big),
            (layout("2x2:2x2"), Some(layout("4x2:2x4")))
        );
        // 16 KiB (WebGPU's least): the small layout takes 24 KiB of 16×16 fragments, so the
        // quarter one (14 KiB) runs in its place, and no big one.
        for ops in [CoopOps::Native16, CoopOps::Emulated] {
            let k = kernel(ops, 16 << 10).unwrap();
            assert_eq!((k.small, k.big), (layout("2x2:1x1"), None), "{ops:?}");
        }
        // Less than the quarter layout's: refused, as Unsupported (which opening the backend
        // with COHORT_COOP=auto takes as no tensor-core kernel).
        let err = kernel(CoopOps::Native16, 12 << 10).err().unwrap();
        assert!(matches!(err, CohortError::Unsupported(_)), "{err}");
        // The f32 kernel's 128 tile takes 32 KiB with two buffers per operand, 16 with one.
        assert_eq!(tiled_kernel_bytes(128, 2), 32 << 10);
        assert_eq!(tiled_kernel_bytes(128, 1), 16 << 10);
        assert_eq!(tiled_kernel_bytes(64, 2), 16 << 10);
    }

    #[test]
    fn big_tiles_go_to_products_that_fill_a_gpu_with_them() {
        // The large step (2 peers of 784-4096-4096-10, batch 1024): the hidden layers' forward
        // and input-gradient products (1024×4096) have 512 tiles of 128, the weight gradients
        // (4096×4096, 784×4096) 2048 and 448; the output layer's products (1024×10, 4096×10)
        // 16 and 64, too few.
        assert!(fills_with_tiles(1024, 4096, 2, 128));
        assert!(fills_with_tiles(4096, 4096, 2, 128));
        assert!(fills_with_tiles(784, 4096, 2, 128));
        assert!(!fills_with_tiles(1024, 10, 2, 128));
        assert!(!fills_with_tiles(4096, 10, 2, 128));
        // The small step (784-1024-1024-10, batch 256): 32 tiles of 128 at most, and 128 of 64.
        assert!(!fills_with_tiles(256, 1024, 2, 128));
        assert!(!fills_with_tiles(1024, 1024, 2, 128));
        assert!(!fills_with_tiles(256, 1024, 2, 64));
        // The edge: 256 tiles fill, 255 do not.
        assert!(fills_with_tiles(16 * 128, 16 * 128, 1, 128));
        assert!(!fills_with_tiles(15 * 128, 17 * 128, 1, 128));
    }

    /// The splits `k_split` gives a product of depth `k` with `tiles` 64-wide tiles.
    fn splits(k: usize, tiles: usize, forced: Option<usize>) -> usize {
        k.div_ceil(k_split(k, tiles, forced))
    }

    #[test]
    fn split_k_goes_to_deep_products_with_few_tiles() {
        // Issue 4's small step (2 peers of 784-1024-1024-10, batch 256): the output layer's
        // forward (256×10, K 1024: 8 tiles) splits in 4; the hidden layers' forward and dX
        // products (128 tiles, K 784 and 1024) in 2; the weight gradients (K 256) never.
        assert_eq!(splits(1024, 8, None), 4);
        assert_eq!(splits(784, 128, None), 2);
        assert_eq!(splits(1024, 128, None), 2);
        assert_eq!(splits(256, 32, None), 1);
        assert_eq!(splits(256, 416, None), 1);
        // The large step (784-4096-4096-10, batch 1024): the output layer (32 tiles, K 4096)
        // in 8; products with many tiles never.
        assert_eq!(splits(4096, 32, None), 8);
        assert_eq!(splits(4096, 2048, None), 1);
        // At most 16 splits; forced counts are kept where K allows them, never past K.
        assert_eq!(splits(1 << 20, 1, None), 16);
        assert_eq!(splits(1000, 10_000, Some(3)), 3);
        assert_eq!(splits(100, 1, Some(16)), 2);
        assert_eq!(splits(64, 1, Some(16)), 1);
        assert_eq!(splits(0, 1, Some(2)), 0);
        assert_eq!(k_split(5000, 1, Some(1)), 5056);
    }
}
