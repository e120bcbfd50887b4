//! How each matmul runs: the kernel, its variant and K's ranges (a [`MatmulPlan`]). By default
//! the plan follows from the product's shape; with [`GpuOptions::tune_matmuls`] the backend
//! times every plan that can run a product the first time it meets that product's shape, and
//! keeps the fastest for it ([`GpuBackend::tuned_matmuls`] lists them).
//!
//! [`GpuOptions::tune_matmuls`]: super::GpuOptions::tune_matmuls

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{k_split, CoopKernel, GpuBackend, GpuTensor, TileChoice};
use crate::error::Result;
use crate::ops::{MatmulDims, MatmulSpec};
use crate::tensor::DType;

pub use super::runtime::CoopLayout;

/// Timed runs of each candidate plan (after one untimed run); the fastest run counts.
const TUNING_RUNS: usize = 3;

/// Depth of `matmul.wgsl`'s k-slices (its `TK`), for the workgroup memory of a tile.
const TILED_K_SLICE: usize = 16;

/// The matmul kernel a plan runs, in its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// `shaders/matmul.wgsl` with this many workgroup buffers per operand (1 or 2).
    Tiled {
        /// Workgroup buffers per operand (`SLICE_BUFFERS`).
        buffers: u32,
    },
    /// `shaders/matmul_coop.wgsl` (tensor cores) in this workgroup layout.
    Coop(CoopLayout),
}

/// How one product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    /// The kernel and its variant.
    pub kernel: MatmulKernel,
    /// Edge of the square C tile each workgroup computes.
    pub tile: usize,
    /// K per range; a range at least K deep leaves the product unsplit.
    pub k_per_split: usize,
}

impl MatmulPlan {
    /// Workgroups along K: how many ranges a product `k` deep is split into.
    pub fn splits(&self, k: usize) -> usize {
        k.div_ceil(self.k_per_split).max(1)
    }

    /// Output tiles of product `d`, every batch entry counted.
    fn tiles(&self, d: &MatmulDims) -> usize {
        d.n.div_ceil(self.tile) * d.m.div_ceil(self.tile) * d.batch
    }

    /// E.g. `tiled 64, 2 buffers, K whole` or `coop 4x2:2x4, 128, K in 4 ranges` for a
    /// product `k` deep.
    pub fn label(&self, k: usize) -> String {
        let kernel = match self.kernel {
            MatmulKernel::Tiled { buffers: 1 } => format!("tiled {}, 1 buffer", self.tile),
            MatmulKernel::Tiled { buffers } => format!("tiled {}, {buffers} buffers", self.tile),
            MatmulKernel::Coop(layout) => format!("coop {layout}, {}", self.tile),
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
#[derive(Clone, Debug)]
pub struct TunedMatmul {
    /// The product's dimensions.
    pub dims: MatmulDims,
    /// A is stored as F16.
    pub a_f16: bool,
    /// B is stored as F16.
    pub b_f16: bool,
    /// The plan every product of this shape runs.
    pub plan: MatmulPlan,
    /// Each candidate with its fastest of three timed runs, the shape's own plan
    /// first; empty where only one plan could run it.
    pub timings: Vec<(MatmulPlan, Duration)>,
}

impl std::fmt::Display for TunedMatmul {
    /// One line: the shape (batch×M×N×K and transposes), the plan chosen, and each
    /// candidate's time.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.dims;
        let layout = |t: bool| if t { 'T' } else { 'N' };
        write!(
            f,
            "{}×{}×{}×{} {}{}{}{}: {}",
            d.batch,
            d.m,
            d.n,
            d.k,
            layout(d.trans_a),
            layout(d.trans_b),
            if d.f16_inputs { " f16" } else { "" },
            match (self.a_f16, self.b_f16) {
                (false, false) => "",
                (true, false) => " (A F16)",
                (false, true) => " (B F16)",
                (true, true) => " (A, B F16)",
            },
            self.plan.label(d.k)
        )?;
        for (i, (plan, time)) in self.timings.iter().enumerate() {
            let label = plan.label(d.k);
            let us = time.as_secs_f64() * 1e6;
            write!(
                f,
                "{}{label} {us:.1} µs",
                if i == 0 { " (timed: " } else { "; " }
            )?;
        }
        if !self.timings.is_empty() {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// The tuner's choices so far.
#[derive(Default)]
pub(super) struct Tuned(Mutex<HashMap<TuneKey, TunedMatmul>>);

impl Tuned {
    fn lock(&self) -> MutexGuard<'_, HashMap<TuneKey, TunedMatmul>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        if let Some(tuned) = self.tuned.lock().get(&key) {
            return Ok(tuned.plan);
        }
        // Timing inside a profile would count the tuner's launches as the profiled work's.
        if self.rt.is_profiling() {
            return self.plan_by_shape(d);
        }
        let candidates = self.plan_candidates(d)?;
        let mut timings = Vec::new();
        if candidates.len() > 1 {
            let c = self.alloc(&[d.batch * d.m * d.n], DType::F32)?;
            for plan in candidates {
                let run = || self.record_matmul(d, spec, [a, b, &c], None, plan);
                run()?;
                let mut best = Duration::MAX;
                for _ in 0..TUNING_RUNS {
                    best = best.min(self.rt.time_alone(run)?);
                }
                timings.push((plan, best));
            }
        }
        let plan = match timings.iter().min_by_key(|(_, time)| *time) {
            Some((plan, _)) => *plan,
            None => self.plan_by_shape(d)?,
        };
        self.tuned.lock().insert(
            key,
            TunedMatmul {
                dims: *d,
                a_f16: key.a_f16,
                b_f16: key.b_f16,
                plan,
                timings,
            },
        );
        Ok(plan)
    }

    /// Every product shape the tuner has met, with its plan and timings, by shape.
    pub fn tuned_matmuls(&self) -> Vec<TunedMatmul> {
        let mut all: Vec<_> = self.tuned.lock().values().cloned().collect();
        all.sort_by_key(|t| {
            let d = t.dims;
            (
                d.batch,
                d.m,
                d.n,
                d.k,
                d.trans_a,
                d.trans_b,
                d.f16_inputs,
                t.a_f16,
                t.b_f16,
            )
        });
        all
    }

    /// The cooperative-matrix kernel product `d` runs on, if any: f16 products, and f32 ones
    /// split into f16 parts (`split_f32`), where the backend has that kernel.
    fn coop_kernel_for(&self, d: &MatmulDims) -> Option<(CoopKernel, bool)> {
        let split_f32 = !d.f16_inputs && self.f32_matmul == super::F32Matmul::SplitF16;
        self.coop
            .filter(|_| d.f16_inputs || split_f32)
            .map(|kernel| (kernel, split_f32))
    }

    /// The plan that follows from `d`'s shape: the cooperative-matrix kernel for f16 products
    /// where there is one (the big layout for products with many tiles), else the tiled kernel
    /// with its 64 tile (or as [`TileChoice`] says); K split where few tiles would leave a
    /// hardware adapter idle.
    fn plan_by_shape(&self, d: &MatmulDims) -> Result<MatmulPlan> {
        let (kernel, tile) = match self.coop_kernel_for(d) {
            Some((kernel, split_f32)) => {
                // Granted only where the kernel has a split layout.
                let layout = match kernel.split {
                    Some(split) if split_f32 => split,
                    _ => self.coop_layout(&kernel, d),
                };
                let tile = layout.tile(kernel.ops.frag()) as usize;
                (MatmulKernel::Coop(layout), tile)
            }
            None => {
                let buffers = if self.matmul_single_buffer { 1 } else { 2 };
                (MatmulKernel::Tiled { buffers }, self.matmul_tile(d))
            }
        };
        self.with_k_split(d, kernel, tile)
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
        let coop = matches!(kernel, MatmulKernel::Coop(_));
        plan.k_per_split = self.k_split(d, plan.tiles(d), coop)?;
        Ok(plan)
    }

    /// The plans the tuner times for `d`, the shape's own first: on the tiled kernel each tile
    /// (64, 128) and buffer count (2, 1) whose workgroup memory fits, on the cooperative-matrix
    /// kernel each layout it has; each with its chosen K split and, on hardware adapters,
    /// unsplit too. What the options force ([`TileChoice::Fixed`], one buffer, a K split, a
    /// layout) is not varied.
    fn plan_candidates(&self, d: &MatmulDims) -> Result<Vec<MatmulPlan>> {
        let own = self.plan_by_shape(d)?;
        let kernels: Vec<(MatmulKernel, usize)> = match self.coop_kernel_for(d) {
            // Split f32 products have the one layout that fits their doubled memory.
            Some((_, true)) => vec![(own.kernel, own.tile)],
            Some((kernel, false)) => kernel
                .layouts()
                .map(|l| (MatmulKernel::Coop(l), l.tile(kernel.ops.frag()) as usize))
                .collect(),
            None => {
                let tiles: &[usize] = match self.matmul_tile {
                    TileChoice::Fixed(tile) => &[tile][..],
                    TileChoice::Default | TileChoice::ByShape => &[64, 128][..],
                };
                let buffers: &[u32] = if self.matmul_single_buffer {
                    &[1]
                } else {
                    &[2, 1]
                };
                let max_bytes = self.rt.caps().max_workgroup_storage as usize;
                tiles
                    .iter()
                    .flat_map(|&tile| buffers.iter().map(move |&b| (tile, b)))
                    .filter(|&(tile, b)| 2 * b as usize * TILED_K_SLICE * tile * 4 <= max_bytes)
                    .map(|(tile, buffers)| (MatmulKernel::Tiled { buffers }, tile))
                    .collect()
            }
        };
        // Unsplit too, where the splits are the backend's to choose and a dispatch may take
        // any depth (the software adapters' cooperative-matrix kernel may not).
        let unsplit_too = self.k_splits.is_none() && !self.is_software();
        let mut plans = vec![own];
        for (kernel, tile) in kernels {
            let chosen = self.with_k_split(d, kernel, tile)?;
            let unsplit = MatmulPlan {
                k_per_split: k_split(d.k, 1, Some(1)),
                ..chosen
            };
            for plan in std::iter::once(chosen).chain(unsplit_too.then_some(unsplit)) {
                if !plans.contains(&plan) {
                    plans.push(plan);
                }
            }
        }
        Ok(plans)
    }
}
