//! The GPU runtime: the one place that owns the wgpu device and queue, the pipeline cache, the
//! buffer pool, the pending command encoder and readback.
//!
//! Every kernel launch is recorded into one pending command encoder; its small parameter block goes
//! into a shared uniform arena. Nothing reaches the GPU until [`Runtime::flush`] (called by
//! `Backend::submit` after each training step, by reads, `finish`, or when the arena fills), so a
//! whole training step is one submission.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::driver_stats::{driver_statistics, DriverStatistics};
use super::profile::{Note, Profile, Profiler};
use super::shaders::{with_integer_f16_rounding, CoopOps, Shader};
use super::spirv::{PipelineSource, SpirvTarget};
use crate::error::{CohortError, Result};

/// How to choose the GPU adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Use the adapter whose name contains this text (case-insensitive); otherwise rank them.
    pub adapter: Option<String>,
    /// Refuse software adapters such as lavapipe.
    pub hardware_only: bool,
    /// The matmul tile (see [`TileChoice`]).
    pub matmul_tile: TileChoice,
    /// Give the f32 matmul kernel one workgroup buffer per operand and two barriers per k-slice,
    /// as before 2026-11-30, instead of two buffers and one barrier: an experiment, to measure
    /// the difference (`SLICE_BUFFERS` in `shaders/matmul.wgsl`).
    pub matmul_single_buffer: bool,
    /// Let the f32 matmul kernel read its k-slices two ahead, in two register sets that take
    /// turns, instead of one, so that each global read has two slices' products to arrive
    /// before it is stored (`PREFETCH` in `shaders/matmul.wgsl`; with two workgroup buffers
    /// only): a candidate for products with too few workgroups per compute unit to hide a
    /// read's latency, off until timed on a GPU.
    pub matmul_deep_prefetch: bool,
    /// Where a layer's weights and bias are updated in one dispatch (the `*_layer` entries of
    /// `shaders/optimizer.wgsl`): `Some(true)` everywhere, `Some(false)` nowhere (two: the
    /// weights, then the bias from its column sums), `None` on hardware adapters only, for a
    /// dispatch fewer per layer. lavapipe ran the one-dispatch update 2.3× slower than the two
    /// (BENCHMARKS.md): its weight workgroups slow down when the bias part's column sums share
    /// their entry, though they never run them.
    pub fused_layer_update: Option<bool>,
    /// Force every matmul to split K into this many ranges (1 to 16; 1 never splits), each
    /// multiplied by workgroups of their own and then summed, instead of splitting products
    /// with too few tiles to fill a hardware adapter.
    pub k_splits: Option<usize>,
    /// Time every plan that can run a product (each tile and buffer count of the tiled kernel,
    /// for f16 products also each layout of the cooperative-matrix kernel, a quarter-size one
    /// only the tuner tries among them, and on hardware adapters several K splits:
    /// `gpu::plan`) the first time its shape comes, and run that shape's products on the
    /// fastest from then on, instead of choosing by shape. What other options force is not
    /// varied. Runs of one backend repeat bitwise; two runs may choose differently where
    /// timings are close (a different K split sums in a different order).
    pub tune_matmuls: bool,
    /// Keep the tuned plans in this file between runs (implies `tune_matmuls`): they are read
    /// when the backend opens, where the file was written for the same adapter, driver, matmul
    /// kernels and options that bear on products (else tuning starts afresh; the row kernels',
    /// the layer updates' and step scheduling's options do not count), and it is rewritten
    /// (atomically) whenever a new shape is tuned. Runs that share the file run the same plans.
    pub tune_file: Option<std::path::PathBuf>,
    /// Keep wgpu's loop bounding (a counter naga adds to every loop, against infinite loops) in
    /// all of cohort's kernels, instead of dropping it from all: an experiment, to measure the
    /// difference. Every loop in the kernels runs to a shape size from the uniform or halves
    /// down to zero, so the counters only cost time (1.5× the matmul's on lavapipe, 28× on an
    /// H200; BENCHMARKS.md). wgpu 30's Vulkan backend drops them only from shaders with
    /// pipeline constants (the matmuls and the row kernels); the others keep them either way.
    /// Bounds checks and division guards stay on; shaders passed to [`Runtime::compile_wgsl`]
    /// keep every check.
    pub loop_bounding: bool,
    /// wgpu's index clamping (bounds checks on every array access) for all of cohort's kernels:
    /// `Some(true)` drops it everywhere, `Some(false)` keeps it everywhere, `None` follows
    /// [`Shader::bounds_checks`]: dropped only in the cooperative-matrix matmul, which ran 2×
    /// faster without it on the H200 (BENCHMARKS.md). Every kernel guards its own indices
    /// against shapes the host checked before dispatch, so the clamps are redundant there.
    pub unchecked_indexing: Option<bool>,
    /// Where the kernels read their parameters (shapes, strides, scalars): `Some(false)` a
    /// uniform buffer, `Some(true)` a read-only storage buffer, `None` (the default) a storage
    /// buffer on Mesa's lavapipe before 23.1 and a uniform buffer everywhere else. That
    /// lavapipe inlines uniform values a kernel branches on and, where the shader shrinks by
    /// half with the first values it sees, compiles the pipeline again at every later dispatch
    /// (a transposed 32×12×32 matmul: 2.5 ms instead of 0.18 on Mesa 22.3.6; BENCHMARKS.md);
    /// it never inlines storage buffers. Later lavapipes keep each inlined variant, which then
    /// runs faster than the storage form (26.2.6 measured; 23.1 is when, by Mesa's history,
    /// lavapipe began keeping them).
    pub params_in_storage: Option<bool>,
    /// Round f32 values to f16 (the f32 matmuls' f16 products) in integer operations
    /// (`shaders/include/f16_rounding_integer.wgsl`) instead of with WGSL's packing
    /// conversions, which wgpu allows only where the adapter has
    /// `DownlevelFlags::SHADER_F16_IN_F32` (lavapipe lacks it where it lacks f16 shaders, as on
    /// ARM). `None`: where the adapter lacks it; asking for the conversions there is an error.
    pub integer_f16_rounding: Option<bool>,
    /// Where f16-input matmuls run on the cooperative-matrix kernel `shaders/matmul_coop.wgsl`.
    pub coop: CoopChoice,
    /// Force that kernel's workgroup layout instead of choosing one by shape.
    pub coop_layout: Option<CoopLayout>,
    /// Stage every operand of that kernel k-contiguous in workgroup memory, as before
    /// 2026-11-30, instead of in the layout it is stored in: an experiment, to measure the
    /// difference (`MN_STAGING` in `shaders/matmul_coop.wgsl`).
    pub coop_k_staging: bool,
    /// Write that kernel's k-step out for every fragment (`UNROLL` in
    /// `shaders/matmul_coop.wgsl`) instead of looping over them: a candidate, off until timed
    /// on a GPU with tensor cores.
    pub coop_unroll: bool,
    /// Stage that kernel's operands in workgroup memory one f16 at a time, as before
    /// 2026-12-04, instead of four values (a vec4) per store where the slice holds them
    /// contiguous (`WIDE_STORES` in `shaders/matmul_coop.wgsl`): an experiment, to measure the
    /// difference.
    pub coop_scalar_stores: bool,
    /// Read that kernel's k-slices two steps ahead into registers (two register sets) instead
    /// of one, so that each global read has two steps' products to arrive before it is staged
    /// (`PREFETCH` in `shaders/matmul_coop.wgsl`): a candidate, off until timed on a GPU with
    /// tensor cores.
    pub coop_deep_prefetch: bool,
    /// Give that kernel 64 k per step instead of 32 (`TK` in `shaders/matmul_coop.wgsl`) in
    /// the layouts whose slices then still fit the device's workgroup memory and the kernel's
    /// registers (on a 48 KiB device, the small layout but not the big one): half the steps
    /// and barriers of a product. A candidate, off until timed on a GPU with tensor cores.
    pub coop_deep_k_step: bool,
    /// Run products whose C is at most 16 columns wide (a classifier's output layer and its
    /// weight gradient) on the tiled or cooperative-matrix kernel like the others, instead of
    /// `shaders/matmul_narrow.wgsl`: an experiment, to measure the difference.
    pub no_narrow_kernel: bool,
    /// Rows of C per workgroup of that kernel (4, 8 or 16; 4 only where A is not stored
    /// transposed, else it takes 8) instead of the count chosen by shape: a way to run each of
    /// its builds on any adapter, and to time them.
    pub narrow_rows: Option<usize>,
    /// Offer no F16 tensors (`Backend::f16_tensors` is false) even where the adapter has f16
    /// shaders, so mixed precision rounds f32 operands as they are loaded instead of keeping
    /// f16 weight copies and activations: an experiment, to measure what those give.
    pub no_f16_tensors: bool,
    /// How products of f32 operands are computed: on the f32 kernel (the default), or split
    /// into f16 parts on the cooperative-matrix kernel's tensor cores.
    pub f32_matmul: F32Matmul,
    /// Make every dispatch wait for all before it in its compute pass (a step's, unless a copy
    /// splits it), instead of only where wgpu's tracking finds a dependency: an experiment, to
    /// measure what running independent kernels side by side is worth. wgpu puts a barrier
    /// before a dispatch only where it reads a buffer written since that buffer was last read,
    /// or writes one already used in the pass; where it puts none, GPUs may overlap the
    /// dispatch with the one before (a step's accuracy count and loss; each layer's weight
    /// gradient and the input gradient below it). Results are the same bit for bit either way.
    pub serial_dispatches: bool,
    /// Record a step's kernels in one compute pass, ignoring `Backend::next_batch` (the
    /// trainer's batches of independent kernels, each a pass of its own), so that only wgpu's
    /// barriers before dependent dispatches order them: an experiment, to measure what the
    /// batches give. Results are the same bit for bit either way.
    pub one_pass: bool,
    /// How the row kernels' threads of one row (losses, accuracy counts) reduce: `Some(true)` by
    /// shuffles within a subgroup (no workgroup memory, no barriers; an error where the adapter
    /// has no subgroup operations), `Some(false)` through workgroup memory, `None` (the default)
    /// by shuffles wherever the adapter has them. Reduced by shuffles, hardware adapters give a
    /// row a thread per class up to the subgroup's width, so that each thread's chain of loads
    /// is short. Same results to rounding: the sums add in another order.
    pub row_subgroups: Option<bool>,
    /// Classes per thread the row kernels aim at (at least 1; threads per row are a power of
    /// two up to the subgroup's width or the workgroup's 64), instead of 1 on hardware
    /// adapters that reduce rows in subgroups and 16 elsewhere: an experiment, to measure the
    /// difference, and a way to run every layout on any adapter.
    pub row_classes_per_lane: Option<usize>,
    /// Build every kernel from SPIR-V that cohort writes itself (as wgpu's Vulkan backend
    /// would) with its loops marked `Unroll` where they hold no barrier or count to a pipeline
    /// constant ([`super::spirv::hint_unroll`]), instead of through wgpu's shader compiler,
    /// which marks none: a candidate, to measure whether drivers keep the kernels' register
    /// arrays (fragments, accumulators, fetched operands) in registers once asked to unroll the
    /// loops over them. Vulkan only (wgpu's passthrough shaders); an error elsewhere. Same
    /// results bit for bit.
    pub unroll_hints: bool,
    /// Open the device with at most this many workgroups in each dimension of a dispatch's
    /// grid (at least 1; above the adapter's own limit, that limit), as a smaller device would
    /// allow, instead of the adapter's limit (65535 on most): a way to run, on small shapes and
    /// any adapter, the paths that limit decides: grids folded into two dimensions, split
    /// products multiplied unsplit, the narrow kernel declined, grids refused.
    pub max_workgroups_per_dimension: Option<u32>,
    /// Open the device with at most this many storage buffers per kernel (at least 8, what
    /// the matmuls bind; above the adapter's own limit, that limit), as a smaller device
    /// would allow, instead of the adapter's limit: a way to run, on any adapter, the paths
    /// that limit decides (each layer's update in two dispatches where the one-dispatch
    /// update's buffers do not fit).
    pub max_storage_buffers_per_stage: Option<u32>,
}

/// How matmuls with f32 inputs (no f16 rounding asked for) are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum F32Matmul {
    /// With f32 fused multiply-adds on the f32 kernel, `shaders/matmul.wgsl`.
    #[default]
    Plain,
    /// On the cooperative-matrix kernel (`SPLIT_F32` in `shaders/matmul_coop.wgsl`): every
    /// operand value v is split into f16 parts hi = f16(v) and lo = f16((v − hi)·2¹¹) and the
    /// product is hi·hi + (hi·lo + lo·hi)·2⁻¹¹, three f16 products accumulated in f32 (the
    /// corrections apart). Each operand keeps ~22 of f32's 24 bits, so the products agree with
    /// f32 ones to a few units of 2⁻²², at three times the f16 work; but the range is f16's:
    /// values beyond ±65504 overflow, and values below 6·10⁻⁵ (all in the lo part) keep 11 bits.
    /// The hi part is rounded from v's bits, not as f32(f16(v)), which shader compilers may fold
    /// to v (Mesa 26's lavapipe does). Needs a cooperative-matrix kernel ([`CoopChoice`]);
    /// training then scales the loss as mixed precision does.
    SplitF16,
}

impl std::str::FromStr for F32Matmul {
    type Err = CohortError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "plain" => Ok(F32Matmul::Plain),
            "split-f16" => Ok(F32Matmul::SplitF16),
            other => Err(CohortError::InvalidConfig(format!(
                "f32 matmul '{other}': use plain or split-f16"
            ))),
        }
    }
}

/// The C tile of the matmul kernels: 64 or 128 wide for the f32 kernel; for the
/// cooperative-matrix kernel, 128 means its big layout and 64 its small one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TileChoice {
    /// The f32 kernel takes 64 for every product on hardware adapters, and on software ones 128
    /// for products at least 128 each way; the cooperative-matrix kernel chooses by shape.
    #[default]
    Default,
    /// Both kernels choose by shape: 128 where a product has enough 128-wide tiles to fill a
    /// large GPU, on hardware adapters; 64 elsewhere. For the f32 kernel an experiment: its 128
    /// tile ran 18× slower than the 64 one on an H200, before its accumulators became vec4s
    /// read with constant indices, and has not been measured there since.
    ByShape,
    /// This width (64 or 128) for every product.
    Fixed(usize),
}

impl std::str::FromStr for TileChoice {
    type Err = CohortError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(TileChoice::Default),
            "shape" => Ok(TileChoice::ByShape),
            "64" => Ok(TileChoice::Fixed(64)),
            "128" => Ok(TileChoice::Fixed(128)),
            other => Err(CohortError::InvalidConfig(format!(
                "matmul tile '{other}': use 64, 128, shape or default"
            ))),
        }
    }
}

/// Where f16-input matmuls use the cooperative-matrix kernel (`shaders/matmul_coop.wgsl`); it
/// must pass a self-test against the CPU twin when the device opens, or the f32 kernel with f16
/// rounding runs them instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CoopChoice {
    /// On hardware adapters that offer cooperative matrices ([`Capabilities::coop_ops`]).
    #[default]
    Auto,
    /// Never.
    Off,
    /// Wherever the adapter offers them, software adapters too (lavapipe in Mesa 26.2
    /// offers 8×8; 25.0 none).
    On,
    /// Everywhere with f16 shaders, with the operations written out in plain WGSL
    /// ([`CoopOps::Emulated`]): slow; checks the kernel's tiling without cooperative matrices.
    Emulate,
}

impl std::str::FromStr for CoopChoice {
    type Err = CohortError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(CoopChoice::Auto),
            "off" => Ok(CoopChoice::Off),
            "on" => Ok(CoopChoice::On),
            "emulate" => Ok(CoopChoice::Emulate),
            other => Err(CohortError::InvalidConfig(format!(
                "cooperative matrices '{other}': use auto, off, on or emulate"
            ))),
        }
    }
}

/// The workgroup layout of `shaders/matmul_coop.wgsl`: a grid of subgroups, each owning a grid
/// of accumulator fragments. The C tile is `frag · fr · sg_rows` square.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoopLayout {
    /// Subgroups down the tile.
    pub sg_rows: u32,
    /// Subgroups across the tile.
    pub sg_cols: u32,
    /// Accumulator fragments per subgroup, down (1 to 4).
    pub fr: u32,
    /// Accumulator fragments per subgroup, across (1 to 4).
    pub fc: u32,
}

impl std::str::FromStr for CoopLayout {
    type Err = CohortError;

    /// Parses `SG_ROWSxSG_COLS:FRxFC`, e.g. `4x2:2x4`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            CohortError::InvalidConfig(format!(
                "cooperative-matrix layout '{s}': write SG_ROWSxSG_COLS:FRxFC, e.g. 4x2:2x4"
            ))
        };
        let pair = |t: &str| -> Option<(u32, u32)> {
            let (x, y) = t.split_once('x')?;
            Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
        };
        let (grid, frags) = s.split_once(':').ok_or_else(bad)?;
        let ((sg_rows, sg_cols), (fr, fc)) =
            (pair(grid).ok_or_else(bad)?, pair(frags).ok_or_else(bad)?);
        let layout = CoopLayout {
            sg_rows,
            sg_cols,
            fr,
            fc,
        };
        // What no device takes is refused here, whether or not the kernel runs later.
        match layout.shape_error() {
            Some(why) => Err(CohortError::InvalidConfig(format!(
                "cooperative-matrix layout {layout}: {why}"
            ))),
            None => Ok(layout),
        }
    }
}

impl std::fmt::Display for CoopLayout {
    /// The `SG_ROWSxSG_COLS:FRxFC` form that `COHORT_COOP_LAYOUT` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}:{}x{}",
            self.sg_rows, self.sg_cols, self.fr, self.fc
        )
    }
}

impl CoopLayout {
    /// Why no device takes this layout, whatever its fragments: counts out of bounds (checked
    /// before any arithmetic on them; no device holds more than 64 subgroups), or a C tile
    /// that is not square.
    fn shape_error(&self) -> Option<String> {
        if !(1..=4).contains(&self.fr)
            || !(1..=4).contains(&self.fc)
            || !(1..=64).contains(&self.sg_rows)
            || !(1..=64).contains(&self.sg_cols)
        {
            return Some("1 to 4 fragments and 1 to 64 subgroups each way".into());
        }
        let (rows, cols) = (self.fr * self.sg_rows, self.fc * self.sg_cols);
        (rows != cols)
            .then(|| format!("the tile must be square ({rows} fragments down, {cols} across)"))
    }

    /// Subgroups per workgroup.
    pub fn subgroups(&self) -> u32 {
        self.sg_rows * self.sg_cols
    }

    /// The C tile's edge for fragments of edge `frag`.
    pub fn tile(&self, frag: u32) -> u32 {
        frag * self.fr * self.sg_rows
    }

    /// Workgroup memory the kernel uses with `k_step` (32 or 64) k per step: per operand two f16
    /// buffers of a tile × (k_step + 8) slice (or of k_step × (tile + 8), staged by k, where
    /// that is more), and a staging fragment per subgroup; all but the latter alternative twice
    /// over for f32 products split into f16 parts (`split_f32`; matches `STAGED` and `STAGING`
    /// in `shaders/matmul_coop.wgsl`).
    pub fn workgroup_bytes(&self, frag: u32, split_f32: bool, k_step: u32) -> u32 {
        let parts = 1 + split_f32 as u32;
        let tile = self.tile(frag);
        let staged = (2 * tile * (k_step + 8) * parts).max(2 * k_step * (tile + 8));
        2 * staged * 2 + parts * self.subgroups() * frag * frag * 4
    }

    /// Checks the layout against the kernel's rules for fragments of edge `frag`, subgroups of
    /// `sg_size`, `k_step` (32 or 64) k per step and the device's limits, for f16 products or
    /// (`split_f32`) f32 products split into f16 parts.
    pub fn check(
        &self,
        frag: u32,
        sg_size: u32,
        caps: &Capabilities,
        split_f32: bool,
        k_step: u32,
    ) -> Result<()> {
        let bad = |why: String| {
            Err(CohortError::InvalidConfig(format!(
                "cooperative-matrix layout {self}: {why}"
            )))
        };
        if let Some(why) = self.shape_error() {
            return bad(why);
        }
        let tile = self.tile(frag);
        let threads = self.subgroups() * sg_size;
        if threads > caps.max_invocations_per_workgroup {
            return bad(format!(
                "{threads} invocations exceed the device's {}",
                caps.max_invocations_per_workgroup
            ));
        }
        // Each invocation stages TILE · k_step / threads elements of each operand per step: a
        // multiple of 4 (whole vec4s), at most 32 (the kernel's registers).
        let units = tile * k_step / threads;
        if units * threads != tile * k_step || !units.is_multiple_of(4) || units > 32 {
            return bad(format!(
                "{units} staged elements per invocation at {k_step} k per step (need a \
                 multiple of 4, at most 32)"
            ));
        }
        let bytes = self.workgroup_bytes(frag, split_f32, k_step);
        if bytes > caps.max_workgroup_storage {
            return bad(format!(
                "{bytes} bytes of workgroup memory exceed the device's {}",
                caps.max_workgroup_storage
            ));
        }
        Ok(())
    }
}

impl GpuOptions {
    /// Options from the environment: `COHORT_ADAPTER=<name part>` picks an adapter by name,
    /// `COHORT_HARDWARE_ONLY=1|0` refuses software adapters or not, `COHORT_MATMUL_TILE=64|128`
    /// forces the matmul tile, `=shape` chooses it by shape in both kernels and `=default` as
    /// without the variable,
    /// `COHORT_MATMUL_BUFFERS=1` single-buffers the f32 matmul's k-slices,
    /// `COHORT_MATMUL_PREFETCH=2` has it read them two ahead,
    /// `COHORT_SPLIT_K=N` forces N splits of K in every matmul (1: none),
    /// `COHORT_MATMUL_TUNE=1` times the candidate plans of each product shape and keeps the
    /// fastest, `COHORT_MATMUL_TUNE_FILE=path` also keeps them in that file between runs,
    /// `COHORT_FUSED_UPDATE=1|0` updates each layer's weights and bias in one dispatch or two,
    /// `COHORT_LOOP_BOUNDING=1` keeps wgpu's loop bounding in every kernel (`=0`, the default,
    /// drops it), `COHORT_UNCHECKED_INDEXING=1|0` drops or keeps wgpu's index clamping in every kernel,
    /// `COHORT_PARAMS_STORAGE=1|0` puts the kernels' parameters in a storage or a uniform buffer,
    /// `COHORT_INTEGER_F16_ROUNDING=1|0` rounds f32 values to f16 in integer operations or with
    /// WGSL's packing conversions,
    /// `COHORT_COOP=auto|off|on|emulate` chooses where the cooperative-matrix kernel runs and
    /// `COHORT_COOP_LAYOUT=4x2:2x4` forces its layout, `COHORT_COOP_STAGING=k` stages all its
    /// operands k-contiguous, `COHORT_COOP_UNROLL=1` writes its k-step out for every fragment
    /// instead of looping, `COHORT_COOP_STORES=scalar` stages its operands one f16 per store,
    /// `COHORT_COOP_PREFETCH=2` reads its k-slices two steps ahead,
    /// `COHORT_COOP_K_STEP=64` gives it 64 k per step where the layout fits,
    /// `COHORT_NARROW=0` runs narrow products on those kernels too instead
    /// of the narrow one, `COHORT_NARROW_ROWS=4|8|16` forces its rows per workgroup,
    /// `COHORT_F16_TENSORS=0` declines F16 tensors, `COHORT_F32_MATMUL=plain|split-f16` chooses how f32 products are computed,
    /// `COHORT_SERIAL_DISPATCHES=1` makes every dispatch wait for the ones before it,
    /// `COHORT_ONE_PASS=1` records a step in one compute pass (no batches of independent
    /// kernels),
    /// `COHORT_ROW_SUBGROUPS=1|0` reduces the row kernels' rows by subgroup shuffles or not,
    /// `COHORT_ROW_CLASSES_PER_LANE=N` gives their threads about N classes each,
    /// `COHORT_UNROLL_HINTS=1` builds the kernels from cohort's own SPIR-V with loops marked
    /// for unrolling, `COHORT_MAX_WORKGROUPS=N` (at least 1) opens the device with at most N
    /// workgroups per grid dimension, `COHORT_MAX_STORAGE_BUFFERS=N` (at least 8) with at most N
    /// storage buffers per kernel.
    /// Unknown values are errors.
    pub fn from_env() -> Result<Self> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|s| !s.is_empty())
        }
        // A switch spelt `on` or `off`; unset leaves the default (None).
        let switch = |name: &str, on: &str, off: &str| match var(name).as_deref() {
            None => Ok(None),
            Some(v) if v == on => Ok(Some(true)),
            Some(v) if v == off => Ok(Some(false)),
            Some(v) => Err(CohortError::InvalidConfig(format!(
                "{name}={v}: use {on} or {off}"
            ))),
        };
        let forced = |name: &str| switch(name, "1", "0");
        // A value of a type with its own spellings; the error names the variable too.
        fn parsed<T: std::str::FromStr<Err = CohortError>>(name: &str) -> Result<Option<T>> {
            var(name)
                .map(|v| {
                    v.parse().map_err(|e| match e {
                        CohortError::InvalidConfig(why) => {
                            CohortError::InvalidConfig(format!("{name}: {why}"))
                        }
                        other => other,
                    })
                })
                .transpose()
        }
        // A count of `what`, at least `least`.
        fn at_least<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
            name: &str,
            what: &str,
            least: T,
        ) -> Result<Option<T>> {
            var(name)
                .map(|v| match v.parse::<T>() {
                    Ok(n) if n >= least => Ok(n),
                    _ => Err(CohortError::InvalidConfig(format!(
                        "{name}={v}: use a number of {what}, at least {least}"
                    ))),
                })
                .transpose()
        }
        Ok(GpuOptions {
            adapter: var("COHORT_ADAPTER"),
            hardware_only: forced("COHORT_HARDWARE_ONLY")? == Some(true),
            matmul_tile: parsed("COHORT_MATMUL_TILE")?.unwrap_or_default(),
            matmul_single_buffer: switch("COHORT_MATMUL_BUFFERS", "2", "1")? == Some(false),
            matmul_deep_prefetch: switch("COHORT_MATMUL_PREFETCH", "2", "1")? == Some(true),
            k_splits: var("COHORT_SPLIT_K")
                .map(|v| match v.parse() {
                    Ok(n) if (1..=super::MAX_K_SPLITS).contains(&n) => Ok(n),
                    _ => Err(CohortError::InvalidConfig(format!(
                        "COHORT_SPLIT_K={v}: use a number of splits, 1 to {}",
                        super::MAX_K_SPLITS
                    ))),
                })
                .transpose()?,
            fused_layer_update: forced("COHORT_FUSED_UPDATE")?,
            loop_bounding: forced("COHORT_LOOP_BOUNDING")? == Some(true),
            unchecked_indexing: forced("COHORT_UNCHECKED_INDEXING")?,
            params_in_storage: forced("COHORT_PARAMS_STORAGE")?,
            integer_f16_rounding: forced("COHORT_INTEGER_F16_ROUNDING")?,
            tune_matmuls: forced("COHORT_MATMUL_TUNE")? == Some(true),
            tune_file: var("COHORT_MATMUL_TUNE_FILE").map(Into::into),
            coop: parsed("COHORT_COOP")?.unwrap_or_default(),
            coop_layout: parsed("COHORT_COOP_LAYOUT")?,
            coop_k_staging: switch("COHORT_COOP_STAGING", "auto", "k")? == Some(false),
            coop_unroll: forced("COHORT_COOP_UNROLL")? == Some(true),
            coop_scalar_stores: switch("COHORT_COOP_STORES", "wide", "scalar")? == Some(false),
            coop_deep_prefetch: switch("COHORT_COOP_PREFETCH", "2", "1")? == Some(true),
            coop_deep_k_step: switch("COHORT_COOP_K_STEP", "64", "32")? == Some(true),
            no_narrow_kernel: forced("COHORT_NARROW")? == Some(false),
            narrow_rows: at_least("COHORT_NARROW_ROWS", "rows", 1)?,
            no_f16_tensors: forced("COHORT_F16_TENSORS")? == Some(false),
            f32_matmul: parsed("COHORT_F32_MATMUL")?.unwrap_or_default(),
            serial_dispatches: forced("COHORT_SERIAL_DISPATCHES")? == Some(true),
            one_pass: forced("COHORT_ONE_PASS")? == Some(true),
            row_subgroups: forced("COHORT_ROW_SUBGROUPS")?,
            row_classes_per_lane: at_least("COHORT_ROW_CLASSES_PER_LANE", "classes", 1)?,
            unroll_hints: forced("COHORT_UNROLL_HINTS")? == Some(true),
            max_workgroups_per_dimension: at_least("COHORT_MAX_WORKGROUPS", "workgroups", 1)?,
            // cohort's kernels bind up to KERNEL_STORAGE_BUFFERS.
            max_storage_buffers_per_stage: at_least(
                "COHORT_MAX_STORAGE_BUFFERS",
                "buffers",
                KERNEL_STORAGE_BUFFERS,
            )?,
        })
    }
}

/// What the chosen device can do, recorded so kernels can pick variants.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Subgroup operations.
    pub subgroup: bool,
    /// f16 arithmetic in shaders.
    pub shader_f16: bool,
    /// GPU timestamps around passes.
    pub timestamp_query: bool,
    /// Cooperative-matrix configurations (empty when unsupported).
    pub cooperative_matrix: Vec<wgpu::CooperativeMatrixProperties>,
    /// Largest storage buffer binding in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Largest workgroup count per dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Workgroup memory per workgroup, in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup at most.
    pub max_invocations_per_workgroup: u32,
    /// Storage buffers one kernel may bind at most.
    pub max_storage_buffers: u32,
    /// The subgroup width where the adapter has one fixed width (`None` where it varies).
    pub subgroup_size: Option<u32>,
    /// The cooperative-matrix operations `shaders/matmul_coop.wgsl` can be built with here:
    /// 16×16×16 (or else 8×8×8) f16 → f32 cooperative matrices, f16 shaders and a fixed
    /// subgroup width.
    pub coop_ops: Option<CoopOps>,
}

/// Bytes a tensor may take at most on any device: under 4 GiB, so that every element index a
/// kernel computes (within one tensor, in u32 arithmetic) fits. wgpu 30 keeps bindings under
/// 2 GiB on Vulkan and DX12, but not on every backend or setting (Metal's follows its largest
/// buffer where indirect-call validation is off).
const MAX_INDEXED_BYTES: u64 = (1 << 32) - 256;

/// The largest buffer the host reads back into one allocation (a `Vec` holds at most
/// `isize::MAX` bytes: 2 GiB on a 32-bit host), in whole 256-byte pool blocks.
const MAX_HOST_READ_BYTES: u64 = isize::MAX as u64 + 1 - 256;

impl Capabilities {
    /// The largest tensor this device holds, in bytes: one storage binding, one buffer, under
    /// 4 GiB (32-bit indices in the kernels), and no more than the host reads back into one
    /// allocation (2 GiB on a 32-bit host).
    pub fn max_tensor_bytes(&self) -> u64 {
        self.max_storage_binding
            .min(self.max_buffer_size)
            .min(MAX_INDEXED_BYTES)
            .min(MAX_HOST_READ_BYTES)
    }
}

const PARAMS_CAPACITY: u64 = 1 << 20;
const PARAMS_SLOT: u64 = 256;

type PipelineKey = (Shader, &'static str, Vec<(&'static str, u64)>);

fn pipeline_key(
    shader: Shader,
    entry: &'static str,
    constants: &[(&'static str, f64)],
) -> PipelineKey {
    let bits = constants.iter().map(|(k, v)| (*k, v.to_bits())).collect();
    (shader, entry, bits)
}

/// Bind groups kept at most; the cache starts over past this (a step uses a few dozen).
const BIND_GROUP_CACHE: usize = 4096;

/// What a bind group binds: the pipeline's layout, the parameter slot, and the buffers with
/// their binding numbers.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    offset: u64,
    size: u64,
    buffers: Vec<(u32, wgpu::Buffer)>,
}

/// Work recorded but not yet submitted. Consecutive dispatches share one compute pass (wgpu
/// inserts the barriers between them); a copy, clear or submit ends it. The pass is declared
/// first so it is dropped, ending it, before the encoder.
#[derive(Default)]
struct Pending {
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
}

impl Pending {
    /// The compute pass being recorded, or a new one (in a new encoder where none is open) with
    /// `timestamp_writes`; and whether it is new.
    fn pass(
        &mut self,
        device: &wgpu::Device,
        label: &str,
        timestamp_writes: Option<wgpu::ComputePassTimestampWrites>,
    ) -> (&mut wgpu::ComputePass<'static>, bool) {
        let Pending { pass, encoder, .. } = self;
        let new = pass.is_none();
        let pass = pass.get_or_insert_with(|| {
            encoder
                .get_or_insert_with(|| {
                    device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cohort"),
                    })
                })
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes,
                })
                .forget_lifetime()
        });
        (pass, new)
    }
}

struct Timer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
}

/// Device memory in cohort's storage buffers: every tensor and every scratch buffer of a kernel
/// (split-K partial products, say), in bytes as allocated (sizes rounded up to 256 bytes). Not
/// counted: the fixed uniform buffer of kernel parameters (1 MiB), timestamp queries, and the
/// short-lived staging buffers of uploads and readbacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Bytes in buffers that hold a live tensor or scratch space.
    pub in_use: u64,
    /// Bytes in idle buffers the pool keeps for reuse ([`Runtime::trim_pool`] frees them).
    pub pooled: u64,
    /// The most `in_use` has been since the device was opened or [`Runtime::reset_memory_peak`].
    pub peak_in_use: u64,
    /// The most device memory held (`in_use + pooled`) has been, likewise.
    pub peak_held: u64,
}

impl MemoryUse {
    /// Device memory held now: buffers in use plus idle pooled ones.
    pub fn held(&self) -> u64 {
        self.in_use + self.pooled
    }

    fn take(&mut self, bytes: u64, from_pool: bool) {
        if from_pool {
            self.pooled -= bytes;
        }
        self.in_use += bytes;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
        self.peak_held = self.peak_held.max(self.held());
    }
}

/// Storage buffers not in use, by size, and the bytes of every storage buffer cohort holds.
#[derive(Default)]
struct Pool {
    idle: HashMap<u64, Vec<wgpu::Buffer>>,
    memory: MemoryUse,
}

/// A buffer from the pool; it goes back to the pool when dropped, unless it was handed out
/// ([`PooledBuffer::export`]).
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Arc<Mutex<Pool>>,
    exported: std::sync::atomic::AtomicBool,
}

impl PooledBuffer {
    fn new(buffer: wgpu::Buffer, pool: Arc<Mutex<Pool>>) -> Self {
        PooledBuffer {
            buffer: Some(buffer),
            pool,
            exported: Default::default(),
        }
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// The buffer, for a caller's own bind groups: once handed out it is freed when dropped,
    /// not pooled, so that a bind group made over it never reaches a later tensor's data.
    pub(crate) fn export(&self) -> &wgpu::Buffer {
        (self.exported).store(true, std::sync::atomic::Ordering::Relaxed);
        self.buffer()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let mut pool = lock(&self.pool);
            pool.memory.in_use -= buffer.size();
            if !*self.exported.get_mut() {
                pool.memory.pooled += buffer.size();
                pool.idle.entry(buffer.size()).or_default().push(buffer);
            }
        }
    }
}

/// Work sent to the device since it was opened: kernel launches recorded, command submissions,
/// readbacks to the host, compute passes and pipelines built. The differences around a piece of work show how it reaches the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkCounts {
    /// Kernel launches recorded.
    pub dispatches: u64,
    /// `queue.submit` calls.
    pub submissions: u64,
    /// Buffers copied back to the host.
    pub readbacks: u64,
    /// Compute passes begun (a pass holds consecutive dispatches: [`Runtime::end_pass`], a
    /// copy, a submission or a profile ends one).
    pub passes: u64,
    /// cohort's pipelines built: each once, at its first launch or in a warm-up; later
    /// launches take it from the cache.
    pub pipelines: u64,
}

/// Owns the device and everything attached to it.
pub struct Runtime {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: Capabilities,
    params_buffer: wgpu::Buffer,
    param_align: u64,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
    pool: Arc<Mutex<Pool>>,
    pending: Mutex<Pending>,
    timer: Option<Timer>,
    /// [`Runtime::time_alone`]'s, so that it can run inside a [`Runtime::time`].
    tuning_timer: Option<Timer>,
    profiler: Mutex<Option<Profiler>>,
    /// The pipelines dispatched since the last [`Runtime::start_profile`] while profiling.
    profiled_pipelines: Mutex<HashSet<PipelineKey>>,
    note: Mutex<Option<Note>>,
    loop_bounding: bool,
    unchecked_indexing: Option<bool>,
    /// Where kernels are built with unrolling hints ([`GpuOptions::unroll_hints`]): the SPIR-V
    /// wgpu would write for this device.
    unroll_hints: Option<SpirvTarget>,
    /// The kernels read their parameters from a storage buffer (`GpuOptions::params_in_storage`).
    params_in_storage: bool,
    /// The kernels round to f16 in integer operations (`GpuOptions::integer_f16_rounding`).
    integer_f16_rounding: bool,
    counts: Mutex<WorkCounts>,
    /// A buffer no kernel binds, declared written before every dispatch where
    /// [`GpuOptions::serial_dispatches`] asks for it, so that wgpu puts a barrier there.
    serializer: Option<wgpu::Buffer>,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave invalid state behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
impl Capabilities {
    /// For unit tests: a device of `workgroup_bytes` workgroup memory, 32-wide subgroups, f16
    /// shaders, 1024 invocations per workgroup and 8 storage buffers per kernel.
    pub(crate) fn with_workgroup_memory(workgroup_bytes: u32) -> Self {
        Capabilities {
            subgroup: true,
            shader_f16: true,
            timestamp_query: false,
            cooperative_matrix: Vec::new(),
            max_storage_binding: 1 << 30,
            max_buffer_size: 1 << 30,
            max_workgroups_per_dim: 65535,
            max_workgroup_storage: workgroup_bytes,
            max_invocations_per_workgroup: 1024,
            max_storage_buffers: 8,
            subgroup_size: Some(32),
            coop_ops: None,
        }
    }
}

/// The error scopes around creating shader modules and pipelines: validation errors, internal
/// ones, which wgpu raises where the driver or the shader back-end refuses a pipeline (over a
/// limit wgpu does not check, such as workgroup memory), and running out of memory: each way
/// the pipeline is unusable, and is reported as [`CohortError::ShaderCompile`] instead of
/// failing a later submission (and not kept in the pipeline cache).
struct PipelineScopes {
    validation: wgpu::ErrorScopeGuard,
    internal: wgpu::ErrorScopeGuard,
    out_of_memory: wgpu::ErrorScopeGuard,
}

impl PipelineScopes {
    fn push(device: &wgpu::Device) -> Self {
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        PipelineScopes {
            validation,
            internal,
            out_of_memory,
        }
    }

    /// The error a scope caught (the validation error first, then the internal one).
    fn pop(self) -> Option<wgpu::Error> {
        let out_of_memory = pollster::block_on(self.out_of_memory.pop());
        let internal = pollster::block_on(self.internal.pop());
        let validation = pollster::block_on(self.validation.pop());
        validation.or(internal).or(out_of_memory)
    }
}

/// Storage buffers a kernel binds besides its parameters, at most (the matmuls' operands, their
/// vec4 views, the epilogue's and the split-K reduction's). The one-dispatch layer update binds
/// up to 9 (Adam with an f16 copy) and, where they do not fit, updates in several dispatches.
const KERNEL_STORAGE_BUFFERS: u32 = 8;

/// Whether the kernels read their parameters from a storage buffer on this adapter: as
/// `forced`, else on lavapipe before Mesa 23.1 (see [`GpuOptions::params_in_storage`]).
/// Forced where the device cannot bind one more storage buffer: an error.
fn params_in_storage(
    info: &wgpu::AdapterInfo,
    caps: &Capabilities,
    forced: Option<bool>,
) -> Result<bool> {
    let fits = caps.max_storage_buffers > KERNEL_STORAGE_BUFFERS;
    match forced {
        Some(true) if !fits => Err(CohortError::Unsupported(format!(
            "kernel parameters in a storage buffer on {}: it binds {} storage buffers per \
             kernel, {} needed",
            info.name,
            caps.max_storage_buffers,
            KERNEL_STORAGE_BUFFERS + 1
        ))),
        Some(forced) => Ok(forced),
        None => Ok(fits
            && info.driver == "llvmpipe"
            && mesa_version(&info.driver_info).is_some_and(|v| v < (23, 1))),
    }
}

/// Mesa's (major, minor) version in a driver description such as `Mesa 22.3.6 (LLVM 15.0.6)`.
fn mesa_version(driver_info: &str) -> Option<(u32, u32)> {
    let version = driver_info.split("Mesa ").nth(1)?;
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn rank(info: &wgpu::AdapterInfo) -> u32 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Lists every adapter on Vulkan, Metal or DX12 as `(name, backend, type)`.
pub fn list_adapters() -> Vec<String> {
    let instance = wgpu::Instance::new(instance_descriptor());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
        })
        .collect()
}

fn instance_descriptor() -> wgpu::InstanceDescriptor {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::PRIMARY;
    desc
}

/// Whether a Vulkan adapter's cooperative matrices can be switched on. wgpu 30 offers
/// `EXPERIMENTAL_COOPERATIVE_MATRIX` wherever the driver lists `VK_KHR_cooperative_matrix`
/// configurations, without reading the extension's `cooperativeMatrix` feature: a driver that
/// lists them with the feature off (Mesa 26.2's lavapipe with 128-bit vectors) then fails
/// `vkCreateDevice`, and wgpu-hal panics. So the feature is read here, on adapters that list
/// the extension's configurations (so the query is valid); other backends keep wgpu's answer.
fn cooperative_matrix_enabled(adapter: &wgpu::Adapter) -> bool {
    let mut coop = ash::vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default();
    let features = ash::vk::PhysicalDeviceFeatures2::default().push_next(&mut coop);
    match vulkan_features(adapter, features) {
        Some(_) => coop.cooperative_matrix == ash::vk::TRUE,
        None => adapter.get_info().backend != wgpu::Backend::Vulkan,
    }
}

/// Reads a Vulkan adapter's features into the chain `features` heads (structures of its
/// version and extensions only), through the instance wgpu keeps alive for it: `None` on other
/// backends, or where the instance can read no chained features.
fn vulkan_features(
    adapter: &wgpu::Adapter,
    mut features: ash::vk::PhysicalDeviceFeatures2<'_>,
) -> Option<()> {
    use ash::vk;
    query_vulkan(adapter, |vulkan| {
        let (instance, phd) = (vulkan.instance, vulkan.device);
        // SAFETY: reads the physical device's features; nothing is created or changed.
        if vulkan.version >= vk::API_VERSION_1_1 {
            unsafe { instance.get_physical_device_features2(phd, &mut features) };
        } else if vulkan
            .extensions
            .contains(&ash::khr::get_physical_device_properties2::NAME)
        {
            let ext =
                ash::khr::get_physical_device_properties2::Instance::new(vulkan.entry, instance);
            unsafe { ext.get_physical_device_features2(phd, &mut features) };
        } else {
            return None;
        }
        Some(())
    })
}

/// What queries of a Vulkan adapter need, from the instance wgpu keeps alive for it.
struct VulkanAdapter<'a> {
    entry: &'a ash::Entry,
    instance: &'a ash::Instance,
    /// The instance's Vulkan version.
    version: u32,
    /// The instance's extensions.
    extensions: &'a [&'static std::ffi::CStr],
    device: ash::vk::PhysicalDevice,
}

/// `query` run on the Vulkan adapter behind `adapter`: `None` on other backends.
#[cfg(any(
    windows,
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd"
))]
fn query_vulkan<T>(
    adapter: &wgpu::Adapter,
    query: impl FnOnce(VulkanAdapter<'_>) -> Option<T>,
) -> Option<T> {
    // SAFETY: the instance and physical device stay alive while `hal` is held; the queries
    // read them only.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let shared = hal.shared_instance();
    query(VulkanAdapter {
        entry: shared.entry(),
        instance: shared.raw_instance(),
        version: shared.instance_api_version(),
        extensions: shared.extensions(),
        device: hal.raw_physical_device(),
    })
}

/// Always `None`: wgpu's `vulkan` feature builds its Vulkan backend on Windows, Linux, Android
/// and FreeBSD only (Apple platforms would need `vulkan-portability`, which cohort leaves off).
#[cfg(not(any(
    windows,
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd"
)))]
fn query_vulkan<T>(
    _adapter: &wgpu::Adapter,
    _query: impl FnOnce(VulkanAdapter<'_>) -> Option<T>,
) -> Option<T> {
    None
}

/// What the SPIR-V wgpu's Vulkan backend writes for `adapter` depends on
/// ([`super::spirv::compile`]): its SPIR-V version, from the Vulkan version of the device (as
/// the instance sees it); whether wgpu leaves buffer accesses to `robustBufferAccess2`; whether
/// it may declare 16-bit inputs and outputs. `None` on other backends and before Vulkan 1.2.
fn spirv_target(adapter: &wgpu::Adapter) -> Option<SpirvTarget> {
    use ash::vk;
    let (api, robustness2) = query_vulkan(adapter, |vulkan| {
        let (instance, phd) = (vulkan.instance, vulkan.device);
        // SAFETY: queries of the physical device; nothing is created or changed.
        let props = unsafe { instance.get_physical_device_properties(phd) };
        let extensions = unsafe { instance.enumerate_device_extension_properties(phd) }.ok()?;
        let robustness2 = extensions
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(ash::ext::robustness2::NAME));
        Some((props.api_version.min(vulkan.version), robustness2))
    })?;
    if api < vk::API_VERSION_1_2 {
        return None;
    }
    let mut robust = vk::PhysicalDeviceRobustness2FeaturesEXT::default();
    let mut storage16 = vk::PhysicalDevice16BitStorageFeatures::default();
    let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut storage16);
    if robustness2 {
        features = features.push_next(&mut robust);
    }
    vulkan_features(adapter, features)?;
    Some(SpirvTarget {
        lang_version: super::spirv::version_for(api),
        robust_buffers: robust.robust_buffer_access2 == vk::TRUE,
        storage_input_output_16: adapter.features().contains(wgpu::Features::SHADER_F16)
            && storage16.storage_input_output16 == vk::TRUE,
    })
}

/// Whether an adapter's `name` contains `want`, in any case.
fn is_named(want: &str, name: &str) -> bool {
    name.to_lowercase().contains(&want.to_lowercase())
}

/// Which of `adapters` (name and type, best first) to open: the first whose name contains
/// `named` (any case) where it is given, else the first; with `hardware_only`, never a software
/// one (a CPU device type). The error says which of those found were passed over and why.
fn choose_adapter(
    adapters: &[(String, wgpu::DeviceType)],
    named: Option<&str>,
    hardware_only: bool,
) -> Result<usize> {
    let allowed = |kind: &wgpu::DeviceType| !hardware_only || *kind != wgpu::DeviceType::Cpu;
    let wanted = |name: &str| named.is_none_or(|want| is_named(want, name));
    let chosen = adapters
        .iter()
        .position(|(name, kind)| wanted(name) && allowed(kind));
    chosen.ok_or_else(|| {
        // With none chosen, every wanted adapter is a software one that hardware_only refused.
        let passed_over: Vec<String> = adapters
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, _)| name.clone())
            .collect();
        let names: Vec<&str> = adapters.iter().map(|(name, _)| name.as_str()).collect();
        let reason = match (named, passed_over.is_empty()) {
            (None, true) => "no Vulkan, Metal or DX12 adapter found (on Linux without a GPU, \
                             mesa-vulkan-drivers gives lavapipe, a software adapter)"
                .to_string(),
            (None, false) => format!("only software adapters found: {names:?}"),
            (Some(want), false) => format!(
                "only software adapters are named like '{want}' among {names:?}, and \
                 hardware_only (COHORT_HARDWARE_ONLY=1) refuses them"
            ),
            (Some(want), true) => format!("none named like '{want}' among {names:?}"),
        };
        CohortError::NoAdapter {
            requested: named.map(str::to_string),
            reason,
            passed_over,
        }
    })
}

impl Runtime {
    /// Picks an adapter (a GPU first, then a software one), requests the features cohort can use
    /// and the adapter's full limits (the grid's lowered where
    /// [`GpuOptions::max_workgroups_per_dimension`] says), and prepares the parameter arena.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(instance_descriptor());
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let found: Vec<(String, wgpu::DeviceType)> = adapters
            .iter()
            .map(|a| (a.get_info().name, a.get_info().device_type))
            .collect();
        let chosen = choose_adapter(&found, options.adapter.as_deref(), options.hardware_only)?;
        let adapter = adapters.swap_remove(chosen);
        let info = adapter.get_info();
        let wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        let mut features = adapter.features() & wanted;
        if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && !cooperative_matrix_enabled(&adapter)
        {
            features.remove(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        }
        let unroll_hints = match options.unroll_hints {
            false => None,
            true => {
                let target = spirv_target(&adapter)
                    .filter(|_| {
                        adapter
                            .features()
                            .contains(wgpu::Features::PASSTHROUGH_SHADERS)
                    })
                    .ok_or_else(|| {
                        CohortError::Unsupported(format!(
                            "unrolling hints (COHORT_UNROLL_HINTS) need a Vulkan 1.2 adapter with \
                             wgpu's passthrough shaders; {} is {:?}",
                            info.name, info.backend
                        ))
                    })?;
                features |= wgpu::Features::PASSTHROUGH_SHADERS;
                Some(target)
            }
        };
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_workgroups_per_dimension {
            if cap == 0 {
                return Err(CohortError::InvalidConfig(
                    "max_workgroups_per_dimension 0: a grid needs at least one workgroup".into(),
                ));
            }
            let own = &mut limits.max_compute_workgroups_per_dimension;
            *own = (*own).min(cap);
        }
        let storage = &mut limits.max_storage_buffers_per_shader_stage;
        if let Some(cap) = options.max_storage_buffers_per_stage {
            if cap < KERNEL_STORAGE_BUFFERS {
                return Err(CohortError::InvalidConfig(format!(
                    "max_storage_buffers_per_stage {cap}: cohort's kernels bind up to \
                     {KERNEL_STORAGE_BUFFERS} storage buffers"
                )));
            }
            *storage = (*storage).min(cap);
        }
        if *storage < KERNEL_STORAGE_BUFFERS {
            return Err(CohortError::Unsupported(format!(
                "{} binds at most {} storage buffers per kernel, and cohort's kernels bind up \
                 to {KERNEL_STORAGE_BUFFERS}",
                info.name, *storage
            )));
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cohort"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: the only experimental feature requested is cooperative matrices, used solely
            // with configurations the adapter lists in `cooperative_matrix_properties`.
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| CohortError::Gpu(format!("opening {}: {e}", info.name)))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&sink).push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lock(&lost_sink) = Some(format!("{reason:?}: {message}"));
        });

        let cooperative_matrix =
            if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
                adapter.cooperative_matrix_properties()
            } else {
                Vec::new()
            };
        let offers = |size: u32| {
            cooperative_matrix.iter().any(|c| {
                (c.m_size, c.n_size, c.k_size) == (size, size, size)
                    && c.ab_type == wgpu::CooperativeScalarType::F16
                    && c.cr_type == wgpu::CooperativeScalarType::F32
            })
        };
        let subgroup_size = (features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size)
            .then_some(info.subgroup_min_size);
        let coop_ops = if !features.contains(wgpu::Features::SHADER_F16) || subgroup_size.is_none()
        {
            None
        } else if offers(16) {
            Some(CoopOps::Native16)
        } else if offers(8) {
            Some(CoopOps::Native8)
        } else {
            None
        };
        let caps = Capabilities {
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_storage_buffers: limits.max_storage_buffers_per_shader_stage,
            subgroup_size,
            coop_ops,
            max_storage_binding: limits.max_storage_buffer_binding_size as u64,
            max_buffer_size: limits.max_buffer_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        };
        let params_in_storage = params_in_storage(&info, &caps, options.params_in_storage)?;
        let conversions = adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32);
        let integer_f16_rounding = match options.integer_f16_rounding {
            Some(false) if !conversions => {
                return Err(CohortError::Unsupported(format!(
                    "f16 rounding by WGSL's packing conversions (COHORT_INTEGER_F16_ROUNDING=0) \
                     on {}: the adapter does not allow them in shaders without f16",
                    info.name
                )))
            }
            Some(forced) => forced,
            None => !conversions,
        };
        let param_align = (limits.min_uniform_buffer_offset_alignment as u64)
            .max(limits.min_storage_buffer_offset_alignment as u64)
            .max(PARAMS_SLOT);
        let params_buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cohort params"),
            size: PARAMS_CAPACITY,
            usage: wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let timer = |label| {
            caps.timestamp_query.then(|| Timer {
                queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some(label),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
            })
        };
        let (timer, tuning_timer) = (timer("cohort timer"), timer("cohort tuning timer"));
        let serializer = options.serial_dispatches.then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("cohort serializer"),
                size: 4,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        });
        Ok(Runtime {
            device,
            queue,
            info,
            caps,
            params_buffer,
            param_align,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            bind_groups: Mutex::default(),
            pool: Arc::default(),
            pending: Mutex::default(),
            timer,
            tuning_timer,
            profiler: Mutex::default(),
            profiled_pipelines: Mutex::default(),
            note: Mutex::default(),
            loop_bounding: options.loop_bounding,
            unchecked_indexing: options.unchecked_indexing,
            unroll_hints,
            params_in_storage,
            integer_f16_rounding,
            counts: Mutex::default(),
            serializer,
            errors,
            lost,
        })
    }

    /// The chosen adapter.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's recorded capabilities.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the kernels read their parameters from a storage buffer instead of a uniform
    /// one ([`GpuOptions::params_in_storage`]).
    pub fn params_in_storage(&self) -> bool {
        self.params_in_storage
    }

    /// Whether the kernels round f32 values to f16 in integer operations instead of with WGSL's
    /// packing conversions ([`GpuOptions::integer_f16_rounding`]).
    pub fn integer_f16_rounding(&self) -> bool {
        self.integer_f16_rounding
    }

    /// The wgpu device, for callers that build their own pipelines.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    fn check_health(&self) -> Result<()> {
        let mut errors = lock(&self.errors);
        if errors.is_empty() {
            return match lock(&self.lost).clone() {
                Some(reason) => Err(CohortError::DeviceLost(reason)),
                None => Ok(()),
            };
        }
        let all = errors.join("; ");
        errors.clear();
        drop(errors);
        Err(self.classify(CohortError::Gpu(all)))
    }

    /// `err`, or [`CohortError::DeviceLost`] where the device has been lost: wgpu calls the
    /// device-lost callback at a poll, after the calls on the lost device have failed (as
    /// invalid buffers, say), so it polls (without waiting) before it tells.
    fn classify(&self, err: CohortError) -> CohortError {
        if lock(&self.lost).is_none() {
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        match lock(&self.lost).clone() {
            Some(reason) => CohortError::DeviceLost(reason),
            None => err,
        }
    }

    /// A storage buffer of at least `bytes` bytes, from the pool when one of that size is free.
    /// Its contents are undefined.
    pub(crate) fn alloc(&self, bytes: u64, what: &str) -> Result<PooledBuffer> {
        let limit = self.caps.max_tensor_bytes();
        let size = bytes
            .max(16)
            .checked_next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT * 64)
            .unwrap_or(u64::MAX);
        if size > limit {
            return Err(CohortError::BufferTooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        let mut pool = lock(&self.pool);
        if let Some(buffer) = pool.idle.get_mut(&size).and_then(|v| v.pop()) {
            pool.memory.take(size, true);
            return Ok(PooledBuffer::new(buffer, self.pool.clone()));
        }
        drop(pool);
        let desc = wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        };
        let buffer = self.create_buffer(&desc, || format!("allocating {size} bytes for {what}"))?;
        lock(&self.pool).memory.take(size, false);
        Ok(PooledBuffer::new(buffer, self.pool.clone()))
    }

    /// Releases every idle pooled buffer (and the cached bind groups that may hold them).
    pub fn trim_pool(&self) {
        lock(&self.bind_groups).clear();
        let mut pool = lock(&self.pool);
        pool.idle.clear();
        pool.memory.pooled = 0;
    }

    /// Device memory in cohort's storage buffers now, and its peaks (see [`MemoryUse`]).
    pub fn memory(&self) -> MemoryUse {
        lock(&self.pool).memory
    }

    /// Starts the peaks of [`Runtime::memory`] over from the memory in use and held now, to
    /// measure the peak of one piece of work.
    pub fn reset_memory_peak(&self) {
        let mut pool = lock(&self.pool);
        pool.memory.peak_in_use = pool.memory.in_use;
        pool.memory.peak_held = pool.memory.held();
    }

    /// The bind group of one launch, from the cache when the same pipeline, parameter slot and
    /// buffers were bound before. A training step records the same launches in the same order
    /// every time, so after the first step every bind group is a cache hit.
    fn bind_group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        offset: u64,
        size: u64,
        bindings: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let key = BindKey {
            pipeline: pipeline.clone(),
            offset,
            size,
            buffers: bindings.iter().map(|&(i, b)| (i, b.clone())).collect(),
        };
        let mut cache = lock(&self.bind_groups);
        if let Some(group) = cache.get(&key) {
            return group.clone();
        }
        if cache.len() >= BIND_GROUP_CACHE {
            cache.clear();
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params_buffer,
                offset,
                size: wgpu::BufferSize::new(size),
            }),
        }];
        for &(binding, b) in bindings {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        cache.insert(key, group.clone());
        group
    }

    fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut pending = lock(&self.pending);
        pending.pass = None;
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("cohort"),
                })
        });
        f(encoder)
    }

    /// `b`'s wgpu buffer, where this runtime's pool made it. A tensor of another backend (each
    /// owns its device) is refused here, before it is bound or copied: bound beside this
    /// device's buffers it gave wrong numbers without an error.
    fn own<'a>(&self, b: &'a PooledBuffer) -> Result<&'a wgpu::Buffer> {
        if Arc::ptr_eq(&b.pool, &self.pool) {
            Ok(b.buffer())
        } else {
            Err(CohortError::InvalidConfig(
                "a tensor of another GPU backend: each backend owns its device, and its \
                 tensors work with its own only (read the tensor and make one of this backend's)"
                    .into(),
            ))
        }
    }

    /// `desc`'s buffer, or a [`CohortError::Gpu`] saying what it was for (`doing`) where the
    /// device has no memory for it.
    fn create_buffer(
        &self,
        desc: &wgpu::BufferDescriptor,
        doing: impl FnOnce() -> String,
    ) -> Result<wgpu::Buffer> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(desc);
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(self.classify(CohortError::Gpu(format!("{}: {e}", doing())))),
            None => Ok(buffer),
        }
    }

    /// Records a write of `data` into `dst` at byte `offset`, ordered with the recorded kernels.
    pub(crate) fn upload(&self, dst: &PooledBuffer, offset: u64, data: &[u8]) -> Result<()> {
        let dst = self.own(dst)?;
        if data.is_empty() {
            return Ok(());
        }
        // A lost device makes no buffers (and wgpu drops that error silently).
        if let Some(reason) = lock(&self.lost).clone() {
            return Err(CohortError::DeviceLost(reason));
        }
        // Staged in a buffer of its own, not written by the queue, so that the copy runs in
        // order with the recorded kernels. (wgpu's `create_buffer_init` panics where the buffer
        // cannot be made: here that is an error.)
        let size = (data.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let desc = wgpu::BufferDescriptor {
            label: Some("cohort upload"),
            size,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        };
        let staging =
            self.create_buffer(&desc, || format!("staging {size} bytes for an upload"))?;
        match staging.get_mapped_range_mut(..) {
            Ok(mut view) => view.slice(..data.len()).copy_from_slice(data),
            Err(e) => {
                return Err(self.classify(CohortError::Gpu(format!("staging an upload: {e}"))))
            }
        }
        staging.unmap();
        self.with_encoder(|e| e.copy_buffer_to_buffer(&staging, 0, dst, offset, data.len() as u64));
        Ok(())
    }

    /// Records a zero fill of all of `dst`.
    pub(crate) fn clear(&self, dst: &PooledBuffer) -> Result<()> {
        let dst = self.own(dst)?;
        self.with_encoder(|e| e.clear_buffer(dst, 0, None));
        Ok(())
    }

    /// Records a buffer-to-buffer copy (offsets and size in bytes, multiples of 4).
    pub(crate) fn copy(
        &self,
        src: &PooledBuffer,
        src_off: u64,
        dst: &PooledBuffer,
        dst_off: u64,
        bytes: u64,
    ) -> Result<()> {
        let (src, dst) = (self.own(src)?, self.own(dst)?);
        if bytes > 0 {
            self.with_encoder(|e| e.copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes));
        }
        Ok(())
    }

    fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = pipeline_key(shader, entry, constants);
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        if let Some(target) = &self.unroll_hints {
            let pipeline = Arc::new(self.hinted_pipeline(shader, entry, constants, target)?);
            lock(&self.pipelines).insert(key, pipeline.clone());
            lock(&self.counts).pipelines += 1;
            return Ok(pipeline);
        }
        let scope = PipelineScopes::push(&self.device);
        let mut modules = lock(&self.modules);
        let module = modules.entry(shader).or_insert_with(|| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(shader.file_name()),
                source: wgpu::ShaderSource::Wgsl(self.wgsl(shader).into()),
            };
            let mut checks = wgpu::ShaderRuntimeChecks::checked();
            // SAFETY: turning loop bounding off requires that no loop runs forever. Every loop
            // in cohort's kernels counts up to a shape size from the uniform (which the host
            // keeps far below u32::MAX, so the counter cannot wrap) or down to zero by halving.
            checks.force_loop_bounding = self.loop_bounding;
            // SAFETY: turning bounds checks off requires in-range indices. The host checks every
            // tensor's shape against the op before recording; each kernel then tests its row or
            // element index against those shapes (loads outside a matrix read an explicit zero,
            // rows past the last are clamped and not written), indexes workgroup and private
            // arrays below their constant sizes, and caps peer loops at MAX_PEERS, which the
            // host enforces. In matmul_coop (unchecked by default) the staged slices, staging
            // tiles and register arrays are sized from the layout's pipeline constants, which
            // `CoopLayout::check` bounds (at most 4×4 fragments, 32 staged elements per
            // invocation, the device's workgroup memory).
            checks.bounds_checks = self.bounds_checks(shader);
            unsafe { self.device.create_shader_module_trusted(desc, checks) }
        });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        drop(modules);
        if let Some(e) = scope.pop() {
            lock(&self.modules).remove(&shader);
            return Err(CohortError::ShaderCompile {
                shader: format!("{}::{entry}", shader.file_name()),
                message: e.to_string(),
            });
        }
        let pipeline = Arc::new(pipeline);
        lock(&self.pipelines).insert(key, pipeline.clone());
        lock(&self.counts).pipelines += 1;
        Ok(pipeline)
    }

    /// `shader`'s pipeline for `entry` from SPIR-V with unrolling hints
    /// ([`GpuOptions::unroll_hints`]): naga applies every pipeline constant, so each pipeline has
    /// a module of its own, and its layout is written out from the buffers the entry point uses
    /// (read-only where it never writes them, as wgpu would derive it).
    fn hinted_pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        target: &SpirvTarget,
    ) -> Result<wgpu::ComputePipeline> {
        let compiled =
            super::spirv::compile(&self.pipeline_source(shader, entry, constants), target)?;
        let failed = |message: String| CohortError::ShaderCompile {
            shader: format!("{}::{entry}", shader.file_name()),
            message,
        };
        if let Some(b) = compiled.bindings.iter().find(|b| b.group != 0) {
            return Err(failed(format!(
                "a binding in group {}: cohort binds group 0 only",
                b.group
            )));
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = compiled
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.uniform {
                        true => wgpu::BufferBindingType::Uniform,
                        false => wgpu::BufferBindingType::Storage {
                            read_only: b.read_only,
                        },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let scope = PipelineScopes::push(&self.device);
        let group = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(entry),
                entries: &entries,
            });
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&group)],
                immediate_size: 0,
            });
        let [x, y, z] = compiled.workgroup_size;
        let entry_points = [wgpu::PassthroughShaderEntryPoint {
            name: entry.into(),
            workgroup_size: (x, y, z),
        }];
        // SAFETY: the SPIR-V is naga's, from WGSL it validated, as wgpu's Vulkan backend writes
        // it for this device (the same bounds checks and loop bounding; see the SAFETY notes
        // in `pipeline`) with only loop-control hints added; its bindings are the layout above.
        let module = unsafe {
            self.device
                .create_shader_module_passthrough(wgpu::ShaderModuleDescriptorPassthrough {
                    label: Some(shader.file_name()),
                    entry_points: entry_points.as_slice().into(),
                    spirv: Some(compiled.code.as_slice().into()),
                    ..Default::default()
                })
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[],
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        match scope.pop() {
            Some(e) => Err(failed(e.to_string())),
            None => Ok(pipeline),
        }
    }

    /// The WGSL this runtime compiles for `shader` (with its parameters in a storage buffer
    /// where [`Runtime::params_in_storage`], rounding to f16 in integer operations where
    /// [`Runtime::integer_f16_rounding`]).
    fn wgsl(&self, shader: Shader) -> String {
        let source = match self.params_in_storage {
            true => shader.source_with_params_in_storage(),
            false => shader.source(),
        };
        match self.integer_f16_rounding {
            true => with_integer_f16_rounding(&source),
            false => source,
        }
    }

    /// Whether `shader`'s indices are clamped (wgpu's bounds checks) here.
    fn bounds_checks(&self, shader: Shader) -> bool {
        self.unchecked_indexing
            .map_or(shader.bounds_checks(), |unchecked| !unchecked)
    }

    /// `shader`'s pipeline for `entry` with `constants`, as this runtime compiles it.
    fn pipeline_source(
        &self,
        shader: Shader,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> PipelineSource {
        let mut shown: Vec<String> = constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
        shown.sort();
        PipelineSource {
            label: format!("{}::{entry} {}", shader.describe(), shown.join(" "))
                .trim_end()
                .to_string(),
            wgsl: self.wgsl(shader),
            entry: entry.to_string(),
            constants: constants.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            bounds_checks: self.bounds_checks(shader),
            loop_bounding: self.loop_bounding,
            unroll_hints: self.unroll_hints.is_some(),
        }
    }

    /// Every pipeline the last profile dispatched ([`Runtime::start_profile`]), as compiled:
    /// source, entry point, pipeline constants and runtime checks, sorted by label (for
    /// [`super::driver_stats`]).
    pub fn profiled_pipelines(&self) -> Vec<PipelineSource> {
        let keys = lock(&self.profiled_pipelines).clone();
        let mut sources: Vec<PipelineSource> = keys
            .into_iter()
            .map(|(shader, entry, constants)| {
                let constants: Vec<(&str, f64)> = constants
                    .iter()
                    .map(|&(name, bits)| (name, f64::from_bits(bits)))
                    .collect();
                self.pipeline_source(shader, entry, &constants)
            })
            .collect();
        sources.sort_by(|a, b| a.label.cmp(&b.label));
        sources
    }

    /// Compiles a caller's own WGSL compute kernel, reporting compiler errors as
    /// [`CohortError::ShaderCompile`] instead of panicking. wgpu's runtime checks stay on
    /// (index clamping, loop bounding). Run it with [`Runtime::dispatch_own`].
    pub fn compile_wgsl(
        &self,
        label: &str,
        source: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        self.compile_own(label, source, entry, wgpu::ShaderRuntimeChecks::checked())
    }

    /// [`Runtime::compile_wgsl`] without wgpu's index clamping and loop bounding, as cohort
    /// builds its own fastest kernels (e.g. for a benchmark that should measure what they do).
    ///
    /// # Safety
    /// Every array index the kernel computes must be in range and every loop must end: the
    /// driver no longer guards either.
    pub unsafe fn compile_wgsl_unchecked(
        &self,
        label: &str,
        source: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        self.compile_own(label, source, entry, wgpu::ShaderRuntimeChecks::unchecked())
    }

    fn compile_own(
        &self,
        label: &str,
        source: &str,
        entry: &str,
        checks: wgpu::ShaderRuntimeChecks,
    ) -> Result<wgpu::ComputePipeline> {
        let scope = PipelineScopes::push(&self.device);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // SAFETY: with checks off, the caller of `compile_wgsl_unchecked` vouches for the kernel;
        // `compile_wgsl` keeps them on.
        let module = unsafe { self.device.create_shader_module_trusted(desc, checks) };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        match scope.pop() {
            Some(e) => Err(CohortError::ShaderCompile {
                shader: format!("{label}::{entry}"),
                message: e.to_string(),
            }),
            None => Ok(pipeline),
        }
    }

    /// Compiles (once) every entry point a shader has, so later launches never wait on the compiler.
    pub fn warm_up(&self, shader: Shader, entries: &[&'static str]) -> Result<()> {
        for entry in entries {
            self.pipeline(shader, entry, &[])?;
        }
        Ok(())
    }

    /// Records one kernel launch: `params` go to binding 0, `buffers` to bindings 1, 2, ...
    pub(crate) fn dispatch(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &[u8],
        buffers: &[&PooledBuffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let bindings: Vec<_> = (1..).zip(buffers.iter().copied()).collect();
        self.dispatch_at(shader, entry, constants, params, &bindings, groups)
    }

    /// [`Runtime::dispatch`] with each buffer's binding number given, for entry points whose
    /// bindings are not 1, 2, ... in a row.
    pub(crate) fn dispatch_at(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &[u8],
        bindings: &[(u32, &PooledBuffer)],
        groups: [u32; 3],
    ) -> Result<()> {
        let bindings = (bindings.iter())
            .map(|&(i, b)| Ok((i, self.own(b)?)))
            .collect::<Result<Vec<_>>>()?;
        let pipeline = self.pipeline(shader, entry, constants)?;
        let max = self.caps.max_workgroups_per_dim;
        if groups.iter().any(|&g| g > max) {
            return Err(CohortError::Unsupported(format!(
                "{} {entry} needs a grid of {groups:?} workgroups, and {} allows at most {max} \
                 in each dimension (a smaller batch or shape fits)",
                shader.file_name(),
                self.info.name
            )));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let offset = {
            let pending = lock(&self.pending);
            pending.params.len() as u64
        };
        let profile_full = lock(&self.profiler).as_ref().is_some_and(Profiler::is_full);
        if offset + self.param_align > PARAMS_CAPACITY || profile_full {
            self.flush()?;
        }
        let mut pending = lock(&self.pending);
        let offset = pending.params.len() as u64;
        pending.params.extend_from_slice(params);
        pending
            .params
            .resize((offset + self.param_align) as usize, 0);
        let bind_group = self.bind_group(&pipeline, offset, params.len() as u64, &bindings);
        // In a profile, every dispatch gets a pass of its own with timestamps around it.
        let mut profiler = lock(&self.profiler);
        let mut note = lock(&self.note);
        let timestamp_writes = profiler
            .as_mut()
            .map(|p| p.next(shader.file_name(), entry, note.as_mut()));
        if timestamp_writes.is_some() {
            lock(&self.profiled_pipelines).insert(pipeline_key(shader, entry, constants));
        }
        if timestamp_writes.is_some() {
            pending.pass = None;
        }
        let (pass, new_pass) = pending.pass(&self.device, "cohort kernels", timestamp_writes);
        if new_pass {
            lock(&self.counts).passes += 1;
        }
        if let Some(buffer) = &self.serializer {
            // Written, as far as wgpu knows, before each dispatch: from the second dispatch of
            // a pass on, that is a write after a write, which gets a barrier.
            let written = wgpu::BufferTransition {
                buffer,
                state: wgpu::BufferUses::STORAGE_READ_WRITE,
            };
            pass.transition_resources(std::iter::once(written), std::iter::empty());
        }
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        lock(&self.counts).dispatches += 1;
        Ok(())
    }

    /// Records one launch of a caller's own kernel (from [`Runtime::compile_wgsl`]) with its
    /// bind group (made on [`Runtime::device`], e.g. over [`super::GpuTensor::binding`]s), in
    /// order with cohort's kernels: it runs at the next submission, and reading a tensor it
    /// writes waits for it. Inside [`Runtime::time`] it is timed with the rest; a per-kernel
    /// profile ([`Runtime::start_profile`]) leaves it out.
    ///
    /// The pipeline, the bind group and its tensors must all be this runtime's (each backend
    /// opens a device of its own): wgpu does not check across devices, and a launch with
    /// another's runs nothing, without an error. cohort's own kernels refuse another backend's
    /// tensors; here the caller keeps to one.
    pub fn dispatch_own(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        groups: [u32; 3],
    ) -> Result<()> {
        let max = self.caps.max_workgroups_per_dim;
        if groups.iter().any(|&g| g > max) {
            return Err(CohortError::Unsupported(format!(
                "a grid of {groups:?} workgroups: {} allows at most {max} in each dimension",
                self.info.name
            )));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let mut pending = lock(&self.pending);
        // A profile gives each of cohort's dispatches a pass with timestamps of its own; this
        // one gets a pass without.
        if self.is_profiling() {
            pending.pass = None;
        }
        let (pass, new_pass) = pending.pass(&self.device, "caller's kernel", None);
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        let mut counts = lock(&self.counts);
        counts.passes += new_pass as u64;
        counts.dispatches += 1;
        Ok(())
    }

    /// Ends the compute pass being recorded, so that the next dispatch begins a new one: wgpu
    /// then waits, at the new pass's start, for every buffer whose use changes (one barrier),
    /// and puts no barrier before a dispatch whose buffers were not used earlier in its pass
    /// (`Backend::next_batch`).
    pub fn end_pass(&self) {
        lock(&self.pending).pass = None;
    }

    /// Work sent to the device so far.
    pub fn work_counts(&self) -> WorkCounts {
        *lock(&self.counts)
    }

    /// Submits everything recorded so far (without waiting for it, unless a profile runs: then
    /// it waits to read the submission's timestamps).
    pub fn flush(&self) -> Result<()> {
        let mut pending = lock(&self.pending);
        pending.pass = None;
        let mut profiler = lock(&self.profiler);
        let mut timed = false;
        if let Some(mut encoder) = pending.encoder.take() {
            timed = profiler.as_ref().is_some_and(|p| p.resolve(&mut encoder));
            if !pending.params.is_empty() {
                self.queue
                    .write_buffer(&self.params_buffer, 0, &pending.params);
            }
            self.queue.submit([encoder.finish()]);
            lock(&self.counts).submissions += 1;
        }
        pending.params.clear();
        drop(pending);
        if let Some(p) = profiler.as_mut().filter(|_| timed) {
            match self.map_read(p.readback()) {
                Ok(raw) => p.add(&raw, self.queue.get_timestamp_period()),
                // Times that could not be read are not counted; the profile goes on.
                Err(e) => {
                    p.discard_recorded();
                    return Err(e);
                }
            }
        }
        drop(profiler);
        self.check_health()
    }

    /// Starts a per-kernel profile (see [`super::profile`]): from now on every dispatch is timed
    /// on its own until [`Runtime::stop_profile`]. Where the adapter has no timestamp queries it
    /// fails with [`CohortError::Unsupported`].
    pub fn start_profile(&self) -> Result<()> {
        self.can_profile()?;
        self.flush()?;
        lock(&self.profiled_pipelines).clear();
        *lock(&self.profiler) = Some(Profiler::new(&self.device));
        Ok(())
    }

    /// Whether [`Runtime::driver_statistics`] can run here: [`CohortError::Unsupported`] on
    /// backends other than Vulkan.
    pub fn can_read_driver_statistics(&self) -> Result<()> {
        match self.info.backend {
            wgpu::Backend::Vulkan => Ok(()),
            other => Err(CohortError::Unsupported(format!(
                "pipeline statistics come from Vulkan drivers; '{}' runs on {other:?}",
                self.info.name
            ))),
        }
    }

    /// What the Vulkan driver reports about each pipeline the last profile dispatched (see
    /// [`super::driver_stats`]). [`CohortError::Unsupported`] on other backends or without a
    /// Vulkan loader.
    pub fn driver_statistics(&self) -> Result<DriverStatistics> {
        self.can_read_driver_statistics()?;
        driver_statistics(&self.info.name, &self.profiled_pipelines())
    }

    /// Whether [`Runtime::start_profile`] can run here: [`CohortError::Unsupported`] where the
    /// adapter has no timestamp queries.
    pub fn can_profile(&self) -> Result<()> {
        if self.caps.timestamp_query {
            return Ok(());
        }
        Err(CohortError::Unsupported(format!(
            "a kernel profile needs timestamp queries, which {} does not offer",
            self.info.name
        )))
    }

    /// Finishes the recorded work and ends the profile, returning the GPU time per kernel
    /// (empty where none was running).
    pub fn stop_profile(&self) -> Result<Profile> {
        self.finish()?;
        Ok(lock(&self.profiler)
            .take()
            .map(Profiler::finish)
            .unwrap_or_default())
    }

    /// Runs `record`, which records kernels; in a running profile its dispatches are counted
    /// under the detail `describe` gives, with its FLOPs (called only while profiling).
    pub(crate) fn annotated<R>(
        &self,
        describe: impl FnOnce() -> (String, f64),
        record: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        if lock(&self.profiler).is_none() {
            return record();
        }
        let (detail, flops) = describe();
        *lock(&self.note) = Some(Note { detail, flops });
        let out = record();
        *lock(&self.note) = None;
        out
    }

    /// Submits everything recorded and waits until the GPU is idle.
    pub fn finish(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| match lock(&self.lost).clone() {
                Some(reason) => CohortError::DeviceLost(reason),
                None => CohortError::DeviceLost(e.to_string()),
            })?;
        self.check_health()
    }

    /// Reads `bytes` bytes of `src` from byte `offset`, after all recorded work.
    pub(crate) fn read_bytes(
        &self,
        src: &PooledBuffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        self.read_raw(self.own(src)?, offset, bytes)
    }

    /// [`Self::read_bytes`] of a buffer of the runtime's own (timestamps).
    fn read_raw(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        lock(&self.counts).readbacks += 1;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cohort readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|e| e.copy_buffer_to_buffer(src, offset, &staging, 0, bytes));
        self.flush()?;
        self.map_read(&staging)
    }

    /// Maps `staging` (MAP_READ, its copy submitted), waits for it and returns its bytes. On
    /// an error the buffer is left unmapped, its map cancelled, so that a buffer kept for reuse
    /// (a profile's or timer's readback) can be mapped again.
    fn map_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        match self.await_map(&rx) {
            Ok(Ok(())) => {}
            // A refused map left the buffer unmapped: unmapping it again would be an error.
            // (wgpu still counts the range as mapped on the host side, so later maps of this
            // buffer fail too; a map of a MAP_READ buffer within its size is refused only once
            // the device or the buffer is gone, when they would fail anyway.)
            Ok(Err(refused)) => {
                return Err(self.classify(CohortError::MapFailed(refused.to_string())))
            }
            // A map still pending is cancelled, unless its refusal arrived meanwhile.
            Err(e) => {
                if !matches!(rx.try_recv(), Ok(Err(_))) {
                    staging.unmap();
                }
                return Err(e);
            }
        }
        let read = staging
            .slice(..)
            .get_mapped_range()
            .map(|view| view.to_vec())
            .map_err(|e| self.classify(CohortError::MapFailed(e.to_string())));
        staging.unmap();
        read
    }

    /// Waits for the map whose callback reports on `rx` and returns the callback's verdict;
    /// an error where the wait itself failed (the device, or no verdict within 10 minutes).
    fn await_map(
        &self,
        rx: &std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    ) -> Result<std::result::Result<(), wgpu::BufferAsyncError>> {
        self.wait()?;
        // Another thread polling the same device may be the one that runs our callback, a moment
        // after our own wait returned: keep polling until it has run.
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(verdict) => return Ok(verdict),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(CohortError::MapFailed("map callback was dropped".into()))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if std::time::Instant::now() > deadline =>
                {
                    return Err(CohortError::MapFailed(
                        "map callback did not run within 10 minutes".into(),
                    ))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.device.poll(wgpu::PollType::Poll);
                    self.check_health()?;
                }
            }
        }
    }

    /// Runs `f`, which records kernels, and measures their GPU time with timestamp queries.
    /// Returns `None` for the time when the adapter has no timestamp queries.
    pub fn time<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, Option<Duration>)> {
        self.time_on(self.timer.as_ref(), f)
    }

    /// The time of the work `f` records alone, on the GPU's clock where the adapter has
    /// timestamp queries, else from submitting it to its end (the work recorded before it
    /// finished first). Safe inside a [`Runtime::time`] (its own queries); for the matmul tuner.
    pub(crate) fn time_alone(&self, f: impl FnOnce() -> Result<()>) -> Result<Duration> {
        if self.tuning_timer.is_none() {
            self.finish()?;
            let start = std::time::Instant::now();
            f()?;
            self.finish()?;
            return Ok(start.elapsed());
        }
        let ((), time) = self.time_on(self.tuning_timer.as_ref(), f)?;
        Ok(time.unwrap_or_default())
    }

    /// Whether a per-kernel profile is running ([`Runtime::start_profile`]).
    pub fn is_profiling(&self) -> bool {
        lock(&self.profiler).is_some()
    }

    fn time_on<R>(
        &self,
        timer: Option<&Timer>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<(R, Option<Duration>)> {
        let Some(timer) = timer else {
            return Ok((f()?, None));
        };
        self.flush()?;
        self.mark(timer, 0);
        let out = f()?;
        self.mark(timer, 1);
        self.with_encoder(|e| e.resolve_query_set(&timer.queries, 0..2, &timer.resolve, 0));
        let raw = self.read_raw(&timer.resolve, 0, 16)?;
        let tick =
            |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let ns = tick(1).saturating_sub(tick(0)) as f64 * self.queue.get_timestamp_period() as f64;
        Ok((out, Some(Duration::from_nanos(ns as u64))))
    }

    fn mark(&self, timer: &Timer, index: u32) {
        self.with_encoder(|e| {
            e.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("cohort timestamp"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &timer.queries,
                    beginning_of_pass_write_index: Some(index),
                    end_of_pass_write_index: None,
                }),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_stay_under_4_gib_whatever_the_device_allows() {
        let mut caps = Capabilities::with_workgroup_memory(1 << 15);
        assert_eq!(caps.max_tensor_bytes(), 1 << 30);
        caps.max_buffer_size = 1 << 20;
        assert_eq!(
            caps.max_tensor_bytes(),
            1 << 20,
            "the buffer limit counts too"
        );
        (caps.max_storage_binding, caps.max_buffer_size) = (1 << 40, 1 << 40);
        assert!(caps.max_tensor_bytes() < 1 << 32, "32-bit indices");
        assert!(
            caps.max_tensor_bytes() <= isize::MAX as u64,
            "one host allocation holds a read (2 GiB on 32-bit hosts)"
        );
        assert_eq!(
            caps.max_tensor_bytes() % 256,
            0,
            "a whole number of pool blocks"
        );
    }

    #[test]
    fn adapters_are_chosen_by_name_and_kind() {
        use wgpu::DeviceType::{Cpu, DiscreteGpu};
        let found = [
            ("NVIDIA H100".to_string(), DiscreteGpu),
            ("llvmpipe (LLVM 15)".to_string(), Cpu),
        ];
        assert_eq!(choose_adapter(&found, None, false).unwrap(), 0);
        assert_eq!(choose_adapter(&found, Some("LLVMPIPE"), false).unwrap(), 1);
        assert_eq!(choose_adapter(&found, Some("h100"), true).unwrap(), 0);
        let reason = |r: Result<usize>| match r {
            Err(CohortError::NoAdapter { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        // A software adapter named, with hardware only: refused, saying so.
        let why = reason(choose_adapter(&found, Some("llvmpipe"), true));
        assert!(
            why.starts_with("only software adapters are named like 'llvmpipe'"),
            "{why}"
        );
        let why = reason(choose_adapter(&found, Some("radeon"), false));
        assert!(why.starts_with("none named like 'radeon'"), "{why}");
        // Only software adapters, with hardware only; none at all.
        let software = &found[1..];
        assert_eq!(choose_adapter(software, None, false).unwrap(), 0);
        let why = reason(choose_adapter(software, None, true));
        assert!(why.starts_with("only software adapters found"), "{why}");
        // The refused software adapters are named for the caller; none where none was refused.
        let passed_over = |r: Result<usize>| match r {
            Err(CohortError::NoAdapter { passed_over, .. }) => passed_over,
            other => panic!("{other:?}"),
        };
        let llvmpipe = vec!["llvmpipe (LLVM 15)".to_string()];
        assert_eq!(passed_over(choose_adapter(software, None, true)), llvmpipe);
        assert_eq!(
            passed_over(choose_adapter(&found, Some("llvm"), true)),
            llvmpipe
        );
        assert!(passed_over(choose_adapter(&found, Some("radeon"), true)).is_empty());
        assert!(passed_over(choose_adapter(software, Some("radeon"), false)).is_empty());
        let why = reason(choose_adapter(&[], None, false));
        assert!(
            why.starts_with("no Vulkan, Metal or DX12 adapter found"),
            "{why}"
        );
    }

    #[test]
    fn mesa_versions_are_read_from_the_driver_description() {
        assert_eq!(mesa_version("Mesa 22.3.6 (LLVM 15.0.6)"), Some((22, 3)));
        assert_eq!(mesa_version("Mesa 26.2.6-1 (LLVM 22.1.8)"), Some((26, 2)));
        assert_eq!(mesa_version("Mesa 23.1.0-devel (git-1234)"), Some((23, 1)));
        assert_eq!(mesa_version("580.159.04"), None);
        assert_eq!(mesa_version("Mesa"), None);
    }

    /// The cooperative-matrix layouts' workgroup memory at 32 and 64 k per step, and which fit
    /// a device with the H200's 48 KiB at each.
    #[test]
    fn coop_layouts_take_the_deeper_k_step_where_their_slices_fit() {
        let caps = Capabilities::with_workgroup_memory(48 * 1024);
        let layout = |s: &str| s.parse::<CoopLayout>().unwrap();
        let (small, big, quarter) = (layout("2x2:2x2"), layout("4x2:2x4"), layout("2x2:1x1"));
        assert_eq!(big.workgroup_bytes(16, false, 32), 48 * 1024);
        assert_eq!(small.workgroup_bytes(16, false, 64), 40 * 1024);
        assert_eq!(big.workgroup_bytes(16, false, 64), 80 * 1024);
        assert!(big.check(16, 32, &caps, false, 32).is_ok());
        assert!(small.check(16, 32, &caps, false, 64).is_ok());
        let err = big.check(16, 32, &caps, false, 64).unwrap_err();
        assert!(err.to_string().contains("workgroup memory"), "{err}");
        // Split f32 products stage twice the slices: the small layout's no longer fit at 64,
        // the quarter one's do.
        assert!(small.check(16, 32, &caps, true, 64).is_err());
        assert!(quarter.check(16, 32, &caps, true, 64).is_ok());
        // 8×8 fragments in subgroups of 8: 64 staged elements per invocation at 64, past the
        // kernel's 32 registers.
        assert!(small.check(8, 8, &caps, false, 32).is_ok());
        let err = small.check(8, 8, &caps, false, 64).unwrap_err();
        assert!(err.to_string().contains("staged elements"), "{err}");
    }

    /// Each variable `from_env` reads has a row in the README's table of them, which names its
    /// `GpuOptions` field, and the table lists no variable that `from_env` does not read.
    #[test]
    fn the_readme_lists_every_environment_variable() {
        let source = include_str!("runtime.rs");
        let body = &source[source.find("pub fn from_env()").unwrap()..];
        let body = &body[..body.find("\n    }\n}").unwrap()];
        let readme = include_str!("../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| `COHORT_"))
            .collect();
        let name_of = |text: &str| {
            let at = text.find("COHORT_").unwrap();
            let end = text[at..]
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |e| at + e);
            text[at..end].to_string()
        };
        let mut read = Vec::new();
        let mut rest = body;
        while let Some(at) = rest.find("\"COHORT_") {
            let name = name_of(&rest[at..]);
            // The field whose value reads it: the name before the last `: ` ahead of the
            // variable's quoted name (on the same line or the one before).
            let before = &body[..body.find(&format!("\"{name}\"")).unwrap()];
            let field = before[..before.rfind(": ").unwrap()]
                .rsplit(char::is_whitespace)
                .next()
                .unwrap();
            assert!(
                rows.iter()
                    .any(|r| name_of(r) == name && r.contains(&format!("(`{field}`)"))),
                "README.md has no table row for {name} ({field})"
            );
            read.push(name);
            rest = &rest[at + 1..];
        }
        assert!(read.len() >= 20, "found only {read:?} in from_env");
        for row in rows {
            assert!(
                read.contains(&name_of(row)),
                "README.md lists {}, never read",
                name_of(row)
            );
        }
    }
}
