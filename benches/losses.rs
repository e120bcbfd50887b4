//! Throughput of cohort's fused loss kernels on the GPU backend, over stacked peer logits
//! `[P, B, C]`: `softmax_ce` (per-row cross-entropy and its logits gradient, labels `[B]` shared by
//! all peers), `kl_div` (the mutual-learning KL of every peer against the others, accumulated
//! into a gradient: `T = 1`, `grad_scale = 1/B`, `accumulate = true`) and `dml_loss` (both in one
//! pass, as the trainer's step runs them: CE and KL rows and the total gradient, `α = 1`) and
//! `count_correct` (each peer's and the ensemble's right rows, as evaluation counts them).
//! Each iteration records one kernel inside `Runtime::time` (GPU timestamp queries; wall time
//! around recording plus `finish()` where the adapter has none). Criterion reports bytes/s; at the
//! end one summary line per shape goes to stderr with the median ms and GB/s, counting each
//! tensor's bytes once:
//! - `softmax_ce`: logits read + labels read + losses written + dlogits written
//!   = 4·(P·B·C + B + P·B + P·B·C) bytes;
//! - `kl_div`: logits read + dlogits read and written (accumulate) + losses written
//!   = 4·(3·P·B·C + P·B) bytes;
//! - `dml_loss`: logits read + labels read + CE and KL rows written + dlogits written
//!   = 4·(2·P·B·C + B + 2·P·B) bytes;
//! - `count_correct`: logits read + labels read + counts written = 4·(P·B·C + B + P + 1) bytes.
//!
//! A small CPU group keeps the CPU twins' path exercised. Without a GPU adapter the GPU groups are
//! skipped with a loud banner and only the CPU group runs.
//!
//! Run:
//! ```text
//! cargo bench --bench losses -- --warm-up-time 1 --measurement-time 2
//! COHORT_BENCH_LOGITS=2x256x10,4x1024x100,2x1024x1000 cargo bench --bench losses
//! ```
//! Environment:
//! - `COHORT_BENCH_LOGITS`: comma-separated `PxBxC` (peers × batch × classes; P ≥ 2 for
//!   `kl_div`, at most 32 on the GPU). Default `2x256x10,4x1024x100`.
//! - `COHORT_BENCH_SAMPLES`, `COHORT_BENCH_JSON`, `COHORT_ADAPTER`: see `benches/common/mod.rs`.
//!   JSON keys are `softmax_ce/<PxBxC>`, `kl_div/<PxBxC>`, `dml_loss/<PxBxC>` and
//!   `count_correct/<PxBxC>` with
//!   `median_ms` and `gbps`.

mod common;

use std::time::Duration;

use cohort::ops::{CrossEntropySpec, DmlLossSpec, KlSpec};
use cohort::rng::Rng;
use cohort::{Backend, CpuBackend, DType, GpuBackend};
use common::{Clock, JsonSink};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};

const DEFAULT_LOGITS: &str = "2x256x10,4x1024x100";
const CPU_LOGITS: &str = "2x32x10";

/// Stacked logits `[P, B, C]`.
#[derive(Clone, Copy, Debug)]
struct Logits {
    p: usize,
    b: usize,
    c: usize,
}

impl Logits {
    fn parse(s: &str) -> Result<Logits, String> {
        let dims: Vec<usize> = s
            .trim()
            .split(['x', 'X'])
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad logits shape '{s}': expected PxBxC"))?;
        match dims[..] {
            [p, b, c] if p > 0 && b > 0 && c > 0 => Ok(Logits { p, b, c }),
            _ => Err(format!(
                "bad logits shape '{s}': expected PxBxC, all positive"
            )),
        }
    }

    fn dims(&self) -> [usize; 3] {
        [self.p, self.b, self.c]
    }

    fn numel(&self) -> usize {
        self.p * self.b * self.c
    }
}

impl std::fmt::Display for Logits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.p, self.b, self.c)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    SoftmaxCe,
    KlDiv,
    DmlLoss,
    CountCorrect,
}

/// Every kernel the bench times.
const KERNELS: [Kernel; 4] = [
    Kernel::SoftmaxCe,
    Kernel::KlDiv,
    Kernel::DmlLoss,
    Kernel::CountCorrect,
];

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::SoftmaxCe => "softmax_ce",
            Kernel::KlDiv => "kl_div",
            Kernel::DmlLoss => "dml_loss",
            Kernel::CountCorrect => "count_correct",
        }
    }

    /// Bytes read plus written by one call, each tensor counted once.
    fn bytes(self, s: Logits) -> u64 {
        let (pbc, pb, b) = (s.numel() as u64, (s.p * s.b) as u64, s.b as u64);
        4 * match self {
            Kernel::SoftmaxCe => pbc + b + pb + pbc,
            Kernel::KlDiv => 3 * pbc + pb,
            Kernel::DmlLoss => 2 * pbc + b + 2 * pb,
            Kernel::CountCorrect => pbc + b + s.p as u64 + 1,
        }
    }

    fn ce_spec(s: Logits) -> CrossEntropySpec {
        CrossEntropySpec {
            label_smoothing: 0.0,
            grad_scale: 1.0 / s.b as f32,
        }
    }

    fn kl_spec(s: Logits) -> KlSpec {
        KlSpec {
            temperature: 1.0,
            grad_scale: 1.0 / s.b as f32,
            accumulate: true,
            peers: 0..s.p,
        }
    }

    fn dml_spec(s: Logits) -> DmlLossSpec {
        DmlLossSpec {
            label_smoothing: 0.0,
            ce_scale: 1.0 / s.b as f32,
            temperature: 1.0,
            kl_scale: 1.0 / s.b as f32,
            peers: 0..s.p,
        }
    }
}

/// The tensors one loss call touches.
struct Inputs<T> {
    logits: T,
    labels: T,
    losses: T,
    /// CE and KL rows, `[2, P, B]`, for `dml_loss`.
    dml_losses: T,
    dlogits: T,
    /// Right rows of each peer and the ensemble, `[P + 1]`, for `count_correct`.
    counts: T,
}

impl<T> Inputs<T> {
    fn new<Bk: Backend<Tensor = T>>(backend: &Bk, s: Logits, seed: u64) -> cohort::Result<Self> {
        let mut rng = Rng::new(seed);
        let logits = backend.tensor(&s.dims(), &rng.uniform_vec(s.numel(), -4.0, 4.0))?;
        let labels: Vec<u32> = (0..s.b).map(|_| rng.below(s.c) as u32).collect();
        let labels = backend.tensor_u32(&[s.b], &labels)?;
        let losses = backend.zeros(&[s.p, s.b], DType::F32)?;
        let dml_losses = backend.zeros(&[2, s.p, s.b], DType::F32)?;
        let dlogits = backend.zeros(&s.dims(), DType::F32)?;
        let counts = backend.zeros(&[s.p + 1], DType::U32)?;
        Ok(Inputs {
            logits,
            labels,
            losses,
            dml_losses,
            dlogits,
            counts,
        })
    }

    fn run<Bk: Backend<Tensor = T>>(
        &mut self,
        backend: &Bk,
        kernel: Kernel,
        s: Logits,
    ) -> cohort::Result<()> {
        match kernel {
            Kernel::SoftmaxCe => backend.softmax_ce(
                &self.logits,
                &self.labels,
                &mut self.losses,
                &mut self.dlogits,
                &Kernel::ce_spec(s),
            ),
            Kernel::KlDiv => backend.kl_div(
                &self.logits,
                &mut self.losses,
                &mut self.dlogits,
                &Kernel::kl_spec(s),
            ),
            Kernel::DmlLoss => backend.dml_loss(
                &self.logits,
                &self.labels,
                &mut self.dml_losses,
                &mut self.dlogits,
                &Kernel::dml_spec(s),
            ),
            Kernel::CountCorrect => {
                backend.count_correct(&self.logits, &self.labels, &mut self.counts)
            }
        }
    }
}

/// One finished measurement, for the summary.
struct Row {
    backend: &'static str,
    kernel: Kernel,
    shape: Logits,
    median: Duration,
    iters: usize,
    clock: &'static str,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.kernel.bytes(self.shape) as f64 / self.median.as_secs_f64() / 1e9
    }

    fn line(&self) -> String {
        format!(
            "SUMMARY {:<13} {:<3} {:>14} | median {:>10.4} ms | {:>9.4} GB/s | {} iters, {}",
            self.kernel.name(),
            self.backend,
            self.shape.to_string(),
            common::ms(self.median),
            self.gbps(),
            self.iters,
            self.clock
        )
    }
}

fn shapes_from_env() -> Vec<Logits> {
    common::env_list("COHORT_BENCH_LOGITS", DEFAULT_LOGITS, Logits::parse)
}

#[allow(clippy::too_many_arguments)]
fn bench_gpu_kernel(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    gpu: &GpuBackend,
    kernel: Kernel,
    shapes: &[Logits],
    clock: &mut Option<Clock>,
    samples: usize,
    rows: &mut Vec<Row>,
    json: &mut JsonSink,
) {
    for (si, &s) in shapes.iter().enumerate() {
        if kernel == Kernel::KlDiv && s.p < 2 {
            eprintln!("SKIPPED kl_div gpu {s}: needs P ≥ 2 peers");
            continue;
        }
        let setup = (|| {
            let mut inputs = Inputs::new(gpu, s, 0x1055 + si as u64)?;
            common::warm_up(gpu, clock, "losses", || inputs.run(gpu, kernel, s))?;
            Ok::<_, cohort::CohortError>(inputs)
        })();
        let mut inputs = match setup {
            Ok(v) => v,
            Err(e) => {
                common::skip_case(&format!("{} gpu {s}", kernel.name()), e);
                continue;
            }
        };
        let clock = clock.expect("clock picked during setup");
        group.throughput(Throughput::Bytes(kernel.bytes(s)));
        let id = BenchmarkId::new(kernel.name(), s);
        if let Some((median, iters)) = common::measure(group, id, samples, || {
            common::time_gpu(gpu, clock, || inputs.run(gpu, kernel, s))
        }) {
            let row = Row {
                backend: "gpu",
                kernel,
                shape: s,
                median,
                iters,
                clock: clock.label(),
            };
            eprintln!("{}", row.line());
            json.record(
                format!("{}/{s}", kernel.name()),
                serde_json::json!({
                    "median_ms": common::ms(median),
                    "gbps": row.gbps(),
                    "bytes": kernel.bytes(s),
                    "iters": iters,
                    "clock": clock.label(),
                }),
            );
            rows.push(row);
        }
    }
}

fn bench_cpu(c: &mut Criterion, samples: usize, rows: &mut Vec<Row>) {
    let cpu = CpuBackend;
    let s = Logits::parse(CPU_LOGITS).expect("valid CPU shape");
    let mut group = c.benchmark_group("losses-cpu");
    group.sample_size(samples);
    for kernel in KERNELS {
        let mut inputs = Inputs::new(&cpu, s, 3).expect("CPU tensors");
        group.throughput(Throughput::Bytes(kernel.bytes(s)));
        let id = BenchmarkId::new(kernel.name(), s);
        if let Some((median, iters)) = common::measure(&mut group, id, samples, || {
            common::wall(|| {
                inputs.run(&cpu, kernel, s).expect("CPU loss kernel");
                std::hint::black_box(&inputs.dlogits);
            })
        }) {
            let row = Row {
                backend: "cpu",
                kernel,
                shape: s,
                median,
                iters,
                clock: Clock::Wall.label(),
            };
            eprintln!("{}", row.line());
            rows.push(row);
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let samples = common::sample_size();
    let mut rows = Vec::new();
    let mut json = JsonSink::default();
    let gpu = common::open_gpu("losses");
    if let Some(gpu) = &gpu {
        json.set_device(gpu.describe());
        let shapes = shapes_from_env();
        let mut clock = None;
        let mut group = c.benchmark_group("losses-gpu");
        group.sample_size(samples);
        for kernel in KERNELS {
            bench_gpu_kernel(
                &mut group, gpu, kernel, &shapes, &mut clock, samples, &mut rows, &mut json,
            );
        }
        group.finish();
    }
    bench_cpu(&mut c, samples, &mut rows);
    c.final_summary();

    common::print_summary("losses", gpu.as_ref(), rows.iter().map(Row::line));
    json.write();
}
