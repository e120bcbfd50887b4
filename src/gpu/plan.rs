//! How each matmul runs: the kernel, its variant and K's ranges (a [`MatmulPlan`]). By default
//! the plan follows from the product's shape; with [`GpuOptions::tune_matmuls`] the backend
//! times every plan that can run a product the first time it meets that product's shape, and
//! keeps the fastest for it ([`GpuBackend::tuned_matmuls`] lists them); with
//! [`GpuOptions::tune_file`] the plans are kept in a JSON file between runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::shaders::Shader;
use super::{k_split, CoopKernel, GpuBackend, GpuOptions, GpuTensor, TileChoice, MAX_K_SPLITS};
use crate::backend::Backend;
use crate::error::{CohortError, Result};
use crate::ops::{MatmulDims, MatmulSpec};
use crate::tensor::DType;

pub use super::runtime::CoopLayout;

/// Timed runs of each candidate plan (after one untimed run); the fastest run counts. A
/// candidate whose run took over twice the fastest candidate's time so far gets no more.
const TUNING_RUNS: usize = 3;

/// Depth of `matmul.wgsl`'s k-slices (its `TK`), for the workgroup memory of a tile.
pub(super) const TILED_K_SLICE: usize = 16;

/// The matmul kernel a plan runs, in its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatmulKernel {
    /// `shaders/matmul.wgsl` in this build.
    Tiled {
        /// Workgroup buffers per operand (`SLICE_BUFFERS`): 1 or 2.
        buffers: u32,
        /// k-slices read ahead into registers (`PREFETCH`): 1, or 2 with two buffers.
        prefetch: u32,
    },
    /// `shaders/matmul_coop.wgsl` (tensor cores) in this build.
    Coop {
        /// The workgroup layout.
        layout: CoopLayout,
        /// k per step (`TK`): 32, or 64 where the layout's slices fit.
        k_step: u32,
        /// k-slices read ahead into registers (`PREFETCH`): 1 or 2.
        prefetch: u32,
    },
    /// `shaders/matmul_narrow.wgsl`, for C at most [`NARROW_MAX_COLUMNS`] wide: each workgroup
    /// computes the plan's `tile` whole rows of C, with K spread over its threads.
    Narrow,
}

/// Columns of C at most for `shaders/matmul_narrow.wgsl` (four vec4s of sums per thread).
pub const NARROW_MAX_COLUMNS: usize = 16;

/// Workgroup memory of `shaders/matmul_narrow.wgsl`, in vec4s (its `SHARED`: 16 KiB).
const NARROW_SHARED_VEC4S: usize = 1024;

/// Rows of C per workgroup `shaders/matmul_narrow.wgsl` can take (its `ROWS`): 4, 8 or 16; 8
/// or 16 where A is stored [K, M], so that the rows its neighbouring threads read fill 32-byte
/// sectors.
pub fn narrow_row_choices(trans_a: bool) -> &'static [usize] {
    if trans_a {
        &[8, 16]
    } else {
        &[4, 8, 16]
    }
}

/// Workgroups the narrow kernel's rows are chosen to reach on hardware adapters, about two per
/// compute unit of a large GPU (as [`super::k_split`] aims for).
const NARROW_TARGET_WORKGROUPS: usize = 256;

/// The k values `shaders/matmul_narrow.wgsl` stages per round (its `CHUNK`) with `rows` rows
/// per workgroup and `columns` columns: as many whole rounds of its lanes as its workgroup memory
/// holds, at most eight per lane (each lane's loop over them is meant to be unrolled).
pub fn narrow_chunk(rows: usize, columns: usize) -> usize {
    let lanes = 256 / rows;
    let stride = columns.div_ceil(4) | 1; // vec4s per k, odd
    (NARROW_SHARED_VEC4S / stride / lanes * lanes).min(8 * lanes)
}

/// How one product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatmulPlan {
    /// The kernel and its variant.
    pub kernel: MatmulKernel,
    /// Edge of the square C tile each workgroup computes (on the narrow kernel, its rows).
    pub tile: usize,
    /// K per range; a range at least K deep leaves the product unsplit.
    pub k_per_split: usize,
}

impl MatmulPlan {
    /// Workgroups along K: how many ranges a product `k` deep is split into.
    pub fn splits(&self, k: usize) -> usize {
        match self.k_per_split {
            // (Only a plan built by hand has none: it counts as unsplit.)
            0 => 1,
            per_split => k.div_ceil(per_split).max(1),
        }
    }

    /// Output tiles of product `d`, every batch entry counted.
    fn tiles(&self, d: &MatmulDims) -> usize {
        d.n.div_ceil(self.tile) * d.m.div_ceil(self.tile) * d.batch
    }

    /// E.g. `tiled 64, 2 buffers, K whole` or `coop 4x2:2x4, 128, K in 4 ranges` for a
    /// product `k` deep (a tensor-core build's k per step and read-ahead where they are not 32
    /// and 1: `coop 2x2:2x2, 64, 64 k per step, 2 slices ahead, K whole`).
    pub fn label(&self, k: usize) -> String {
        let kernel = match self.kernel {
            MatmulKernel::Tiled { buffers: 1, .. } => format!("tiled {}, 1 buffer", self.tile),
            MatmulKernel::Tiled { buffers, prefetch } => {
                let mut label = format!("tiled {}, {buffers} buffers", self.tile);
                if prefetch > 1 {
                    label += &format!(", {prefetch} slices ahead");
                }
                label
            }
            MatmulKernel::Coop {
                layout,
                k_step,
                prefetch,
            } => {
                let mut label = format!("coop {layout}, {}", self.tile);
                if k_step != super::COOP_K_STEP {
                    label += &format!(", {k_step} k per step");
                }
                if prefetch > 1 {
                    label += &format!(", {prefetch} slices ahead");
                }
                label
            }
            MatmulKernel::Narrow => format!("narrow, {} rows", self.tile),
        };
        match self.splits(k) {
            1 => format!("{kernel}, K whole"),
            n => format!("{kernel}, K in {n} ranges"),
        }
    }
}

/// What the tuner tells products apart by: their dimensions and operand types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TuneKey {
    dims: MatmulDims,
    a_f16: bool,
    b_f16: bool,
}

/// A product shape the tuner met, the plan it chose and what every candidate took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunedMatmul {
    /// The product's dimensions.
    pub dims: MatmulDims,
    /// A is stored as F16.
    pub a_f16: bool,
    /// B is stored as F16.
    pub b_f16: bool,
    /// The plan every product of this shape runs.
    pub plan: MatmulPlan,
    /// Each candidate with its fastest of three timed runs (one where it took over twice the
    /// fastest's time), the shape's own plan first; empty where only one plan could run it.
    pub timings: Vec<(MatmulPlan, Duration)>,
    /// Candidates left out because their product disagreed with the shape's own plan's (a
    /// build the driver mishandles): not in `timings`, never chosen.
    #[serde(default)]
    pub rejected: Vec<MatmulPlan>,
}

impl TunedMatmul {
    /// The shape's own plan's time and the plan kept's (the first and fastest timings): what
    /// tuning gained on this shape. None where only one plan could run it.
    pub fn own_and_tuned_times(&self) -> Option<(Duration, Duration)> {
        let own = self.timings.first()?.1;
        let tuned = self.timings.iter().map(|(_, time)| *time).min()?;
        Some((own, tuned))
    }

    fn key(&self) -> TuneKey {
        TuneKey {
            dims: self.dims,
            a_f16: self.a_f16,
            b_f16: self.b_f16,
        }
    }
}

impl std::fmt::Display for TunedMatmul {
    /// One line: the shape (as [`MatmulDims`] shows it), the plan chosen with its speed-up
    /// over the shape's own plan, and each candidate's time (the shape's own first).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.dims;
        let stored = match (self.a_f16, self.b_f16) {
            (false, false) => "",
            (true, false) => " (A F16)",
            (false, true) => " (B F16)",
            (true, true) => " (A, B F16)",
        };
        write!(f, "{d}{stored}: {}", self.plan.label(d.k))?;
        if let Some((own, tuned)) = self.own_and_tuned_times() {
            let gain = own.as_secs_f64() / tuned.as_secs_f64().max(1e-9);
            write!(f, ", {gain:.2}× as fast as the shape's own plan")?;
        }
        for (i, (plan, time)) in self.timings.iter().enumerate() {
            let label = plan.label(d.k);
            let us = time.as_secs_f64() * 1e6;
            let start = if i == 0 { " (timed: by shape " } else { "; " };
            write!(f, "{start}{label} {us:.1} µs")?;
        }
        if !self.timings.is_empty() {
            write!(f, ")")?;
        }
        for (i, plan) in self.rejected.iter().enumerate() {
            let start = if i == 0 {
                "; left out, disagreeing: "
            } else {
                ", "
            };
            write!(f, "{start}{}", plan.label(d.k))?;
        }
        Ok(())
    }
}

/// The tuner's choices so far, and the file that keeps them with the identity of what they
/// were timed on ([`GpuOptions::tune_file`]).
#[derive(Default)]
pub(super) struct Tuned {
    plans: Mutex<HashMap<TuneKey, TunedMatmul>>,
    file: Option<(PathBuf, String)>,
}

/// The format tag of plan files.
const PLAN_FILE_FORMAT: &str = "cohort-matmul-plans-2";

/// The format tags of older plan files (their plans are timed afresh): 1 named a tensor-core
/// plan by its layout alone.
const OLD_PLAN_FILE_FORMATS: &[&str] = &["cohort-matmul-plans-1"];

/// What plan files are, in their errors: the user may have set the variable long ago.
const PLAN_FILE_ROLE: &str = "the matmul plan file: GpuOptions::tune_file, COHORT_MATMUL_TUNE_FILE";

/// What a plan file holds.
#[derive(Serialize, Deserialize)]
struct PlanFile {
    format: String,
    /// The adapter, driver, matmul kernels and options the plans were timed with ([`identity`]).
    tuned_on: String,
    plans: Vec<TunedMatmul>,
}

/// A plan file's format tag, read before the rest (whose form depends on it).
#[derive(Deserialize)]
struct PlanFileFormat {
    format: String,
}

impl Tuned {
    fn lock(&self) -> MutexGuard<'_, HashMap<TuneKey, TunedMatmul>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plans kept in `path` for `gpu`, opened with `options`: none where the file does not
    /// exist yet, is empty, or was written for another adapter, driver, build of the matmul
    /// kernels or matmul options ([`identity`]; said on stderr); a plan `gpu` would not choose
    /// between (an edited file) is left out and timed again. [`CohortError::CorruptFile`] where it is not a plan file; an I/O error where
    /// it cannot be read, or not written when new plans come.
    pub(super) fn from_file(gpu: &GpuBackend, path: &Path, options: &GpuOptions) -> Result<Self> {
        Self::read_file(gpu, path, options).map_err(|e| e.for_file(PLAN_FILE_ROLE))
    }

    fn read_file(gpu: &GpuBackend, path: &Path, options: &GpuOptions) -> Result<Self> {
        let tuned_on = identity(gpu, options);
        let mut plans = HashMap::new();
        // Refused now rather than when the first tuned shape is saved, mid-run, and before it
        // is read (a FIFO or device is refused: reading a FIFO would wait forever).
        crate::checkpoint::check_writable(path)?;
        match std::fs::read(path) {
            // An empty file (made ready with `touch`) holds no plans yet.
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Ok(bytes) => {
                let corrupt = |why: String| CohortError::corrupt(path, why);
                let json = |e: serde_json::Error| corrupt(e.to_string());
                let format = serde_json::from_slice::<PlanFileFormat>(&bytes).map_err(json)?;
                let stale = match format.format.as_str() {
                    PLAN_FILE_FORMAT => {
                        let file: PlanFile = serde_json::from_slice(&bytes).map_err(json)?;
                        let same = file.tuned_on == tuned_on;
                        for t in file
                            .plans
                            .into_iter()
                            .filter(|t| same && gpu.could_choose(t))
                        {
                            plans.insert(t.key(), t);
                        }
                        (!same).then_some(
                            "were tuned on another adapter, driver, build of the matmul kernels \
                             or matmul options",
                        )
                    }
                    old if OLD_PLAN_FILE_FORMATS.contains(&old) => {
                        Some("are in an older cohort's format")
                    }
                    other => return Err(corrupt(format!("format '{other}', not a plan file"))),
                };
                if let Some(why) = stale {
                    eprintln!(
                        "cohort: the matmul plans in {} {why}; tuning afresh",
                        path.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CohortError::io(path, e)),
        }
        Ok(Tuned {
            plans: Mutex::new(plans),
            file: Some((path.into(), tuned_on)),
        })
    }

    /// Every plan, by shape.
    fn sorted(&self) -> Vec<TunedMatmul> {
        by_shape(self.lock().values().cloned().collect())
    }

    /// Rewrites the plan file, if there is one, with every plan, and the plans another run
    /// sharing the file (same adapter, driver, matmul kernels and options) wrote there since
    /// this one read it, for shapes this one has not tuned (they are checked when a run reads
    /// them).
    fn save(&self) -> Result<()> {
        let Some((path, tuned_on)) = &self.file else {
            return Ok(());
        };
        let mut plans = self.lock().clone();
        let theirs = std::fs::read(path).ok().and_then(|bytes| {
            serde_json::from_slice::<PlanFile>(&bytes)
                .ok()
                .filter(|f| f.format == PLAN_FILE_FORMAT && f.tuned_on == *tuned_on)
        });
        for t in theirs.map_or(vec![], |f| f.plans) {
            plans.entry(t.key()).or_insert(t);
        }
        let file = PlanFile {
            format: PLAN_FILE_FORMAT.into(),
            tuned_on: tuned_on.clone(),
            plans: by_shape(plans.into_values().collect()),
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| CohortError::corrupt(path, format!("cannot encode the plans: {e}")))?;
        crate::checkpoint::write_atomic(path, &json).map_err(|e| e.for_file(PLAN_FILE_ROLE))
    }
}

/// `plans` in the plan file's order: by shape, then transposes and operand types.
fn by_shape(mut plans: Vec<TunedMatmul>) -> Vec<TunedMatmul> {
    plans.sort_by_key(|t| {
        let d = t.dims;
        let shape = (d.batch, d.m, d.n, d.k, d.stride_a, d.stride_b);
        (shape, d.trans_a, d.trans_b, d.f16_inputs, t.a_f16, t.b_f16)
    });
    plans
}

/// What tuned plans are only valid for: the adapter and its driver, this build of the matmul
/// kernels (a hash of their sources) and the GPU options that can change what a product's
/// plans compute or how fast they run. Options of other kernels (the row kernels, the layer
/// updates) and of how a step is scheduled are left out, so that runs differing only in those
/// share their plans; an option added later counts until it is named here.
fn identity(gpu: &GpuBackend, options: &GpuOptions) -> String {
    let info = gpu.rt.info();
    // FNV-1a: stable from build to build, unlike std's hasher.
    let kernels = Shader::ALL
        .iter()
        .filter(|shader| shader.is_matmul())
        .flat_map(|shader| shader.source().into_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, byte| {
            (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
        });
    let options = GpuOptions {
        adapter: None,
        hardware_only: false,
        tune_matmuls: true,
        tune_file: None,
        // Products are planned by their operands' types, whatever tensors hold them.
        no_f16_tensors: false,
        fused_layer_update: None,
        max_storage_buffers_per_stage: None,
        one_pass: false,
        row_subgroups: None,
        row_classes_per_lane: None,
        ..options.clone()
    };
    format!(
        "{} ({:?}, vendor {:#x}, device {:#x}), driver {} {}; cohort {}, kernels {kernels:016x}; \
         {options:?}",
        info.name,
        info.backend,
        info.vendor,
        info.device,
        info.driver,
        info.driver_info,
        env!("CARGO_PKG_VERSION"),
    )
}

/// Whether a candidate plan's product `got` is the shape's own plan's `want` up to the order of
/// summation: each element within 1e-3 of `want`'s largest finite magnitude (plus 1e-6), or
/// equal (infinities), or both NaN. A wrong build is far off: zeros, part of K, another tile.
fn results_agree(want: &[f32], got: &[f32]) -> bool {
    let scale = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| m.max(x.abs()));
    let tolerance = 1e-3 * scale + 1e-6;
    want.len() == got.len()
        && want
            .iter()
            .zip(got)
            .all(|(&w, &g)| w == g || (w.is_nan() && g.is_nan()) || (w - g).abs() <= tolerance)
}

/// The K per split of the splits the tuner times beside the `chosen` number for a product `k`
/// deep: whole, half as many and twice as many (at most [`MAX_K_SPLITS`]).
fn other_k_splits(k: usize, chosen: usize) -> Vec<usize> {
    [1, chosen / 2, (2 * chosen).min(MAX_K_SPLITS)]
        .into_iter()
        .filter(|&splits| splits >= 1)
        .map(|splits| k_split(k, 1, Some(splits)))
        .collect()
}

impl GpuBackend {
    /// The plan product `d` with operands `a` and `b` runs: the tuned one where tuning is on
    /// (timing the candidates the first time this shape comes), else the shape's own.
    pub(super) fn matmul_plan(
        &self,
        d: &MatmulDims,
        spec: &MatmulSpec,
        a: &GpuTensor,
        b: &GpuTensor,
    ) -> Result<MatmulPlan> {
        if !self.tune_matmuls {
            return self.plan_by_shape(d);
        }
        let key = TuneKey {
            dims: *d,
            a_f16: a.dtype == DType::F16,
            b_f16: b.dtype == DType::F16,
        };
        if let Some(plan) = self.tuned_plan(&key) {
            return Ok(plan);
        }
        // Timing inside a profile would count the tuner's launches as the profiled work's.
        if self.rt.is_profiling() {
            return self.plan_by_shape(d);
        }
        let candidates = self.plan_candidates(d)?;
        let own = candidates[0];
        let mut timings = Vec::new();
        let mut plan = own;
        let mut rejected = Vec::new();
        if candidates.len() > 1 {
            // Where the device has no room for a scratch C now, the product runs its own plan
            // and the shape is tuned the next time it comes.
            let Ok(c) = self.alloc(&[d.batch * d.m * d.n], DType::F32) else {
                return Ok(own);
            };
            let mut fastest = Duration::MAX;
            for plan in candidates {
                let run = || self.record_matmul(d, spec, [a, b, &c], None, plan);
                run()?;
                let mut best = Duration::MAX;
                for _ in 0..TUNING_RUNS {
                    best = best.min(self.rt.time_alone(run)?);
                    // Clearly slower than the fastest so far: no more runs of it.
                    if best > fastest.saturating_mul(2) {
                        break;
                    }
                }
                fastest = fastest.min(best);
                timings.push((plan, best));
            }
            (plan, rejected) = self.fastest_agreeing(d, spec, [a, b, &c], &timings)?;
            // Not kept as timed: the plan kept is then the fastest of the timings, as a run
            // reading them back checks ([`GpuBackend::could_choose`]).
            timings.retain(|(p, _)| !rejected.contains(p));
        }
        self.tuned.lock().insert(
            key,
            TunedMatmul {
                dims: *d,
                a_f16: key.a_f16,
                b_f16: key.b_f16,
                plan,
                timings,
                rejected,
            },
        );
        self.tuned.save()?;
        Ok(plan)
    }

    /// The fastest of the `timings`' plans (the shape's own first) whose product of `a` and `b`
    /// agrees with the shape's own plan's, computed into the scratch `c`: a build a driver
    /// mishandles may return wrong numbers without an error, and the self-tests at
    /// [`GpuBackend::new`] run only each layout's default build. Every candidate is checked,
    /// the slower ones too (one product each, beside the timed runs), so that a wrong build
    /// shows where it is met, not only once it is the fastest. A plan that disagrees is left
    /// out (said on stderr, and returned beside the plan chosen).
    fn fastest_agreeing(
        &self,
        d: &MatmulDims,
        spec: &MatmulSpec,
        [a, b, c]: [&GpuTensor; 3],
        timings: &[(MatmulPlan, Duration)],
    ) -> Result<(MatmulPlan, Vec<MatmulPlan>)> {
        let own = timings[0].0;
        // Fastest first (a stable sort: the shape's own first among equals).
        let mut ranked = timings.to_vec();
        ranked.sort_by_key(|(_, time)| *time);
        // C overwritten (beta 0): the timed runs left it accumulated.
        let spec = MatmulSpec { beta: 0.0, ..*spec };
        let product = |plan| -> Result<Vec<f32>> {
            self.record_matmul(d, &spec, [a, b, c], None, plan)?;
            self.read(c)
        };
        let want = product(own)?;
        let mut chosen = None;
        let mut rejected = Vec::new();
        for (plan, _) in ranked {
            if plan == own || results_agree(&want, &product(plan)?) {
                chosen = chosen.or(Some(plan));
                continue;
            }
            rejected.push(plan);
            eprintln!(
                "cohort: warning: matmul plan '{}' computed a different product of shape {d} \
                 than the shape's own plan '{}' on {}; the tuner leaves it out",
                plan.label(d.k),
                own.label(d.k),
                self.rt.info().name
            );
        }
        Ok((chosen.unwrap_or(own), rejected))
    }

    /// The plan product `d` runs untuned: the one that follows from its shape and the options
    /// (what [`GpuOptions::tune_matmuls`] starts from).
    pub fn matmul_plan_by_shape(&self, d: &MatmulDims) -> Result<MatmulPlan> {
        self.plan_by_shape(d)
    }

    /// The plan product `d`, its A and B stored as F16 or not (`a_f16`, `b_f16`), runs on this
    /// backend now: the one the tuner kept for it where tuning is on and it has met the
    /// product, else the shape's own. Times nothing.
    pub fn current_matmul_plan(
        &self,
        d: &MatmulDims,
        a_f16: bool,
        b_f16: bool,
    ) -> Result<MatmulPlan> {
        let key = TuneKey {
            dims: *d,
            a_f16,
            b_f16,
        };
        match self.tuned_plan(&key) {
            Some(plan) if self.tune_matmuls => Ok(plan),
            _ => self.plan_by_shape(d),
        }
    }

    /// The plan the tuner kept for `key`, where it has met it.
    fn tuned_plan(&self, key: &TuneKey) -> Option<MatmulPlan> {
        self.tuned.lock().get(key).map(|t| t.plan)
    }

    /// Every product shape the tuner has met (or read from its file), with its plan and
    /// timings, by shape.
    pub fn tuned_matmuls(&self) -> Vec<TunedMatmul> {
        self.tuned.sorted()
    }

    /// Whether `t` is what the tuner could have kept for its shape here: its dimensions within
    /// what a product can have, its plan and every timed one among the shape's candidates, and
    /// its plan the fastest timed (where any were).
    fn could_choose(&self, t: &TunedMatmul) -> bool {
        let d = &t.dims;
        let dims = [d.batch, d.m, d.n, d.k];
        let fits = dims.iter().all(|&x| (1..=u32::MAX as usize).contains(&x))
            && d.batch
                .checked_mul(d.m)
                .and_then(|x| x.checked_mul(d.n))
                .is_some();
        let fastest = t.timings.iter().map(|(_, time)| time).min();
        let kept = t.timings.iter().find(|(plan, _)| *plan == t.plan);
        let kept_fastest = match (fastest, kept) {
            (None, _) => true,
            (Some(fastest), Some((_, time))) => time == fastest,
            (Some(_), None) => false,
        };
        fits && kept_fastest
            && self.plan_candidates(d).is_ok_and(|plans| {
                plans.contains(&t.plan) && t.timings.iter().all(|(plan, _)| plans.contains(plan))
            })
    }

    /// The cooperative-matrix kernel product `d` runs on, if any: f16 products, and f32 ones
    /// split into f16 parts (`split_f32`), where the backend has that kernel.
    fn coop_kernel_for(&self, d: &MatmulDims) -> Option<(CoopKernel, bool)> {
        let split_f32 = !d.f16_inputs && self.f32_matmul == super::F32Matmul::SplitF16;
        self.coop
            .filter(|_| d.f16_inputs || split_f32)
            .map(|kernel| (kernel, split_f32))
    }

    /// The plan that follows from `d`'s shape: the narrow kernel for C at most
    /// [`NARROW_MAX_COLUMNS`] wide; else the cooperative-matrix kernel for f16 products where
    /// there is one (the big layout for products with many tiles) and its grid fits the device,
    /// else the tiled kernel with its 64 tile (or as [`TileChoice`] says); K split where few
    /// tiles would leave a hardware adapter idle.
    fn plan_by_shape(&self, d: &MatmulDims) -> Result<MatmulPlan> {
        if let Some(&plan) = self.narrow_plans(d).first() {
            return Ok(plan);
        }
        let coop = self.coop_kernel_for(d).map(|(kernel, split_f32)| {
            // Granted only where the kernel has a split layout.
            let layout = match kernel.split {
                Some(split) if split_f32 => split,
                _ => self.coop_layout(&kernel, d),
            };
            let tile = layout.tile(kernel.ops.frag()) as usize;
            (kernel.build(layout, split_f32, self.rt.caps()), tile)
        });
        let (kernel, tile) = match coop.filter(|&(_, tile)| self.grid_fits(d, tile)) {
            Some(chosen) => chosen,
            None => (self.tiled_build(self.tiled_buffers()), self.matmul_tile(d)),
        };
        self.with_k_split(d, kernel, tile)
    }

    /// Whether a product of `d` on tiles of `tile` (a workgroup per tile of C, a grid layer per
    /// product of the batch) fits the device's grid unsplit. The cooperative-matrix kernel's
    /// small tiles (32 rows with 8×8 matrices) may not where the tiled kernel's do.
    fn grid_fits(&self, d: &MatmulDims, tile: usize) -> bool {
        let max = self.rt.caps().max_workgroups_per_dim as usize;
        [d.m.div_ceil(tile), d.n.div_ceil(tile), d.batch]
            .iter()
            .all(|&groups| groups <= max)
    }

    /// The narrow kernel's plans for `d`, where it can run it, the one chosen by shape first: C
    /// at most [`NARROW_MAX_COLUMNS`] wide, workgroup memory within the device's, and not
    /// declined ([`GpuOptions::no_narrow_kernel`]); each of its row counts whose workgroups fit
    /// a dispatch. By shape, software adapters (a few cores, for which fewer and fuller
    /// workgroups are cheaper) take the most rows; hardware ones the most that still gives
    /// [`NARROW_TARGET_WORKGROUPS`] workgroups, else the fewest rows; [`GpuOptions::narrow_rows`]
    /// forces a count (the next one up where A stored transposed does not take it). It never
    /// splits K.
    fn narrow_plans(&self, d: &MatmulDims) -> Vec<MatmulPlan> {
        let caps = self.rt.caps();
        let max_groups = caps.max_workgroups_per_dim as usize;
        if !self.narrow_kernel
            || d.n > NARROW_MAX_COLUMNS
            || d.batch > max_groups
            || NARROW_SHARED_VEC4S * 16 > caps.max_workgroup_storage as usize
        {
            return Vec::new();
        }
        let groups = |rows: usize| d.m.div_ceil(rows) * d.batch;
        let choices = narrow_row_choices(d.trans_a);
        let chosen = match (self.narrow_rows, self.is_software()) {
            (Some(forced), _) => choices.iter().find(|&&rows| rows >= forced),
            (None, true) => choices.last(),
            (None, false) => choices
                .iter()
                .rev()
                .find(|&&rows| groups(rows) >= NARROW_TARGET_WORKGROUPS)
                .or(choices.first()),
        };
        // A forced count is the only one (the tuner varies none of what options force).
        let others = choices
            .iter()
            .filter(|&rows| Some(rows) != chosen && self.narrow_rows.is_none());
        chosen
            .into_iter()
            .chain(others)
            .filter(|&&rows| d.m.div_ceil(rows) <= max_groups)
            .map(|&rows| MatmulPlan {
                kernel: MatmulKernel::Narrow,
                tile: rows,
                k_per_split: d.k,
            })
            .collect()
    }

    /// Whether a thread of `plan` over `d` stays within a software adapter's loop limit
    /// (always on a hardware adapter): a tuner's candidate past it is left out, not the
    /// product. The cooperative-matrix kernel's K range there is [`Self::with_k_split`]'s.
    fn loops_fit(&self, d: &MatmulDims, plan: &MatmulPlan) -> bool {
        let loops = match plan.kernel {
            MatmulKernel::Tiled { .. } => super::tiled_loops(plan.tile, plan.k_per_split),
            MatmulKernel::Narrow => super::narrow_loops(d, plan.tile),
            MatmulKernel::Coop { .. } => 0,
        };
        !self.is_software() || loops <= super::SOFTWARE_LOOP_BUDGET
    }

    /// `kernel` with its `tile` and the K split chosen for them.
    fn with_k_split(
        &self,
        d: &MatmulDims,
        kernel: MatmulKernel,
        tile: usize,
    ) -> Result<MatmulPlan> {
        let mut plan = MatmulPlan {
            kernel,
            tile,
            k_per_split: d.k,
        };
        let coop = matches!(kernel, MatmulKernel::Coop { .. });
        plan.k_per_split = self.k_split(d, plan.tiles(d), coop)?;
        Ok(plan)
    }

    /// The plans the tuner times for `d`, the shape's own first: the narrow kernel's with each
    /// row count where it runs `d`; on the tiled kernel each tile (64, 128) and buffer count
    /// (2, 1) whose workgroup memory fits, with two buffers reading one and two k-slices ahead;
    /// for f16 products also on the cooperative-matrix kernel in each layout it has, the
    /// tuner's quarter-size one included (the tiled kernel rounds its loads to f16: the same
    /// products up to summation order), and in each layout each k per step that fits and
    /// read-ahead depth; each with its chosen K split and, on hardware adapters and for the
    /// default build of each kernel, whole, and in half and twice the chosen splits. What the
    /// options force ([`TileChoice::Fixed`], one buffer, a K split, a layout, 64 k per step,
    /// two slices ahead in either kernel) is not varied; f32 products split into f16 parts
    /// keep their one layout. On a software adapter, only plans within its loop limit
    /// ([`Self::loops_fit`]) besides the shape's own.
    fn plan_candidates(&self, d: &MatmulDims) -> Result<Vec<MatmulPlan>> {
        let own = self.plan_by_shape(d)?;
        let tiles: &[usize] = match self.matmul_tile {
            TileChoice::Fixed(tile) => &[tile],
            TileChoice::Default | TileChoice::ByShape => &[64, 128],
        };
        let buffers: &[u32] = if self.matmul_single_buffer {
            &[1]
        } else {
            &[2, 1]
        };
        let tiled = tiles
            .iter()
            .flat_map(|&tile| buffers.iter().map(move |&b| (tile, b)))
            .filter(|&(tile, b)| self.tiled_kernel_fits(tile, b))
            .map(|(tile, buffers)| {
                let builds = self.tiled_tuner_builds(buffers).into_iter();
                builds.map(|build| (build, tile)).collect::<Vec<_>>()
            });
        // Each kernel (and layout) with its builds and tile, the default build first.
        let builds: Vec<Vec<(MatmulKernel, usize)>> = match self.coop_kernel_for(d) {
            Some((kernel, split_f32)) => {
                // Split products in the one layout checked split (the shape's own plan may be
                // the narrow kernel's; the others may not fit the device split).
                let layouts: Vec<CoopLayout> = match split_f32 {
                    true => kernel.split.into_iter().collect(),
                    false => kernel.layouts().collect(),
                };
                let caps = self.rt.caps();
                let coop = layouts.into_iter().map(|layout| {
                    let tile = layout.tile(kernel.ops.frag()) as usize;
                    let builds = kernel.tuner_builds(layout, split_f32, caps);
                    builds.into_iter().map(|build| (build, tile)).collect()
                });
                match split_f32 {
                    true => coop.collect(),
                    false => coop.chain(tiled).collect(),
                }
            }
            None => tiled.collect(),
        };
        // Other splits where they are the backend's to choose and a dispatch may take any
        // depth (the software adapters' cooperative-matrix kernel may not).
        let vary_splits = self.k_splits.is_none() && !self.is_software();
        let mut plans = vec![own];
        let others = self.narrow_plans(d).into_iter();
        plans.extend(others.filter(|plan| *plan != own && self.loops_fit(d, plan)));
        for kernel_builds in builds {
            for (i, (kernel, tile)) in kernel_builds.into_iter().enumerate() {
                if !self.grid_fits(d, tile) {
                    continue;
                }
                // A candidate this adapter cannot run at this depth (the cooperative-matrix
                // kernel of a software adapter past its K limit) is left out, not the product.
                let chosen = match self.with_k_split(d, kernel, tile) {
                    Err(CohortError::Unsupported(_)) => continue,
                    chosen => chosen?,
                };
                let others = match vary_splits && i == 0 {
                    true => other_k_splits(d.k, chosen.splits(d.k)),
                    false => vec![],
                };
                let variants = others.into_iter().map(|k_per_split| MatmulPlan {
                    k_per_split,
                    ..chosen
                });
                for plan in std::iter::once(chosen).chain(variants) {
                    if !plans.contains(&plan) && self.loops_fit(d, &plan) {
                        plans.push(plan);
                    }
                }
            }
        }
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_narrow_kernels_rounds_fit_its_workgroup_memory_and_lanes() {
        for rows in narrow_row_choices(false)
            .iter()
            .chain(narrow_row_choices(true))
        {
            let lanes = 256 / rows;
            for columns in 1..=NARROW_MAX_COLUMNS {
                let chunk = narrow_chunk(*rows, columns);
                let stride = columns.div_ceil(4) | 1;
                assert!(
                    chunk > 0 && chunk.is_multiple_of(lanes),
                    "{rows} rows, {columns}"
                );
                assert!(chunk <= 8 * lanes && chunk * stride <= NARROW_SHARED_VEC4S);
                // The lanes' sums ([row][vec4 of columns][lane]) fit too.
                assert!(rows * columns.div_ceil(4) * lanes <= NARROW_SHARED_VEC4S);
            }
        }
        // 10 columns (three vec4s, stride 3): 320 k per round in 64 lanes, 128 in 16.
        assert_eq!((narrow_chunk(4, 10), narrow_chunk(16, 10)), (320, 128));
    }

    #[test]
    fn plans_name_their_build_and_survive_the_plan_file() {
        let plan = |k_step, prefetch| MatmulPlan {
            kernel: MatmulKernel::Coop {
                layout: "2x2:2x2".parse().unwrap(),
                k_step,
                prefetch,
            },
            tile: 64,
            k_per_split: 256,
        };
        assert_eq!(plan(32, 1).label(1024), "coop 2x2:2x2, 64, K in 4 ranges");
        assert_eq!(
            plan(64, 2).label(256),
            "coop 2x2:2x2, 64, 64 k per step, 2 slices ahead, K whole"
        );
        let tiled = |buffers, prefetch| MatmulPlan {
            kernel: MatmulKernel::Tiled { buffers, prefetch },
            tile: 128,
            k_per_split: 1024,
        };
        assert_eq!(tiled(1, 1).label(1024), "tiled 128, 1 buffer, K whole");
        assert_eq!(tiled(2, 1).label(1024), "tiled 128, 2 buffers, K whole");
        assert_eq!(
            tiled(2, 2).label(1024),
            "tiled 128, 2 buffers, 2 slices ahead, K whole"
        );
        let plans = [
            plan(32, 1),
            plan(64, 1),
            plan(32, 2),
            plan(64, 2),
            tiled(1, 1),
            tiled(2, 2),
        ];
        for p in plans {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(
                serde_json::from_str::<MatmulPlan>(&json).unwrap(),
                p,
                "{json}"
            );
        }
    }

    #[test]
    fn a_candidate_agrees_only_up_to_the_order_of_summation() {
        let want = [1.0, -200.0, 3.5, f32::INFINITY, f32::NAN, 0.0];
        let mut got = want;
        assert!(results_agree(&want, &got), "itself");
        got[2] += 0.19; // within 1e-3 of the largest finite magnitude, 200
        assert!(results_agree(&want, &got));
        got[2] += 0.02;
        assert!(!results_agree(&want, &got), "0.21 off");
        assert!(!results_agree(&want, &[0.0; 6]), "zeros");
        let mut nan = want;
        nan[0] = f32::NAN;
        assert!(!results_agree(&want, &nan), "a NaN where a number was");
        let mut inf = want;
        inf[3] = f32::NEG_INFINITY;
        assert!(!results_agree(&want, &inf), "the other infinity");
        assert!(!results_agree(&want, &want[..5]), "another length");
    }

    #[test]
    fn the_tuner_also_times_whole_half_and_twice_the_chosen_splits() {
        let splits = |k: usize, chosen| -> Vec<usize> {
            other_k_splits(k, chosen)
                .into_iter()
                .map(|per| k.div_ceil(per))
                .collect()
        };
        assert_eq!(splits(1024, 4), [1, 2, 8]);
        assert_eq!(splits(4096, 1), [1, 2], "none of half of one");
        assert_eq!(splits(4096, 16), [1, 8, 16], "at most MAX_K_SPLITS");
        // Splits stay 64 deep at least: 100 in two ranges of 64.
        assert_eq!(other_k_splits(100, 1), [128, 64]);
    }
}
