//! Throughput of cohort's matmul kernels (`shaders/matmul.wgsl`; `matmul_coop.wgsl` for f16
//! products where the backend chose it) on the GPU backend, for the three products a training
//! step uses: NN (`X·W`, forward), NT (`dY·Wᵀ`, input gradient) and TN
//! (`Xᵀ·dY`, weight gradient). Each iteration records one matmul inside `Runtime::time`, so the
//! time is GPU time from timestamp queries; on adapters without them it is wall time around
//! recording plus `finish()`. Criterion reports FLOP/s as "elem/s"; at the end one summary line
//! per shape and transpose goes to stderr (median ms, TFLOP/s = 2·B·M·N·K / time). A small CPU
//! group keeps the CPU twin's path exercised. Without a GPU adapter the GPU groups are skipped
//! with a loud banner and only the CPU group runs.
//!
//! Run:
//! ```text
//! cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 2
//! COHORT_BENCH_SHAPES=4096x4096x4096,1024x1024x1024,256x1024x784,1024x784x256 cargo bench --bench matmul
//! ```
//! Environment:
//! - `COHORT_BENCH_SHAPES`: comma-separated `MxNxK` (C is M×N, inner dimension K), optionally
//!   batched as `BbMxNxK` (e.g. `2b256x1024x784`: A, B and C all carry a batch of 2). The default
//!   (`64x64x64,128x256x96,2b64x128x80`) runs in seconds on lavapipe; large shapes are opt-in
//!   (4096³ takes minutes per iteration on a software device).
//! - `COHORT_BENCH_TRANSPOSES`: which of `nn,nt,tn,tt` to run (default `nn,nt,tn`).
//! - `COHORT_BENCH_PRECISION`: `f32` (default); `f16`: A and B are F16 tensors, f32
//!   accumulation (tensor cores where available; what cuBLAS HGEMM is given), JSON keys end in
//!   `fp16`; `mixed`: f32 tensors rounded to f16 as they are loaded, keys end in `mixed`.
//!   `COHORT_MATMUL_TILE=64|128` forces the f32 kernel's tile.
//! - `COHORT_BENCH_EPILOGUE`: `none` (default); `bias_act`: the fused forward of a layer
//!   (`Backend::matmul_bias_act`, ReLU, bias per batch entry); `act_grad`: the fused backward
//!   (`Backend::matmul_act_grad`). JSON keys and summary lines then end in `+bias_act` or
//!   `+act_grad` (PyTorch has no counterpart).
//! - `COHORT_BENCH_SAMPLES`, `COHORT_BENCH_JSON`, `COHORT_ADAPTER`: see `benches/common/mod.rs`.
//!   JSON keys are `matmul/<NN|NT|TN|TT>/<shape>/fp32`, as `benches/reference/torch_reference.py`
//!   names its cuBLAS timings.

mod common;

use std::time::Duration;

use cohort::gpu::GpuTensor;
use cohort::ops::{Activation, MatmulSpec};
use cohort::rng::Rng;
use cohort::{Backend, CpuBackend, DType, GpuBackend};
use common::{Clock, JsonSink};
use criterion::{BenchmarkId, Criterion, Throughput};

const DEFAULT_SHAPES: &str = "64x64x64,128x256x96,2b64x128x80";
const CPU_SHAPE: &str = "24x40x32";

/// A matmul problem: C[B, M, N] = op(A) · op(B) with inner dimension K.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

impl Shape {
    fn parse(s: &str) -> Result<Shape, String> {
        let s = s.trim();
        let (batch, rest) = match s.split_once(['b', 'B']) {
            Some((b, rest)) => (
                b.parse::<usize>()
                    .map_err(|_| format!("bad batch in '{s}'"))?,
                rest,
            ),
            None => (1, s),
        };
        let dims: Vec<usize> = rest
            .split(['x', 'X'])
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad shape '{s}': expected MxNxK or BbMxNxK"))?;
        match dims[..] {
            [m, n, k] if batch > 0 && m > 0 && n > 0 && k > 0 => Ok(Shape { batch, m, n, k }),
            _ => Err(format!(
                "bad shape '{s}': expected MxNxK or BbMxNxK, all positive"
            )),
        }
    }

    fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Stored shapes of A, B and C for the given transposes.
    fn operands(&self, t: Trans) -> [Vec<usize>; 3] {
        let a = if t.a {
            [self.k, self.m]
        } else {
            [self.m, self.k]
        };
        let b = if t.b {
            [self.n, self.k]
        } else {
            [self.k, self.n]
        };
        let c = [self.m, self.n];
        let with_batch = |d: [usize; 2]| {
            if self.batch > 1 {
                vec![self.batch, d[0], d[1]]
            } else {
                d.to_vec()
            }
        };
        [with_batch(a), with_batch(b), with_batch(c)]
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.batch > 1 {
            write!(f, "{}b", self.batch)?;
        }
        write!(f, "{}x{}x{}", self.m, self.n, self.k)
    }
}

#[derive(Clone, Copy, Debug)]
struct Trans {
    a: bool,
    b: bool,
}

impl Trans {
    fn name(self) -> &'static str {
        match (self.a, self.b) {
            (false, false) => "NN",
            (false, true) => "NT",
            (true, false) => "TN",
            (true, true) => "TT",
        }
    }

    fn spec(self) -> MatmulSpec {
        MatmulSpec::new(self.a, self.b).f16(precision() == Precision::Mixed)
    }
}

/// The operands' precision (`COHORT_BENCH_PRECISION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Precision {
    /// f32 tensors, f32 products.
    F32,
    /// F16 tensors, f32 accumulation.
    F16,
    /// f32 tensors rounded to f16 as they are loaded, f32 accumulation.
    Mixed,
}

impl Precision {
    /// The JSON key's last part and the summary's backend label.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Precision::F32 => ("fp32", "gpu"),
            Precision::F16 => ("fp16", "gpu f16"),
            Precision::Mixed => ("mixed", "gpu mixed"),
        }
    }
}

fn precision() -> Precision {
    match std::env::var("COHORT_BENCH_PRECISION").as_deref() {
        Err(_) | Ok("" | "f32") => Precision::F32,
        Ok("f16") => Precision::F16,
        Ok("mixed") => Precision::Mixed,
        Ok(other) => panic!("COHORT_BENCH_PRECISION: unknown '{other}' (f32, f16, mixed)"),
    }
}

/// What the timed product writes besides C (`COHORT_BENCH_EPILOGUE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Epilogue {
    /// C alone (`Backend::matmul`).
    None,
    /// C, then ReLU(C + bias) into a second tensor (`Backend::matmul_bias_act`).
    BiasAct,
    /// C times ReLU'(pre + bias) (`Backend::matmul_act_grad`).
    ActGrad,
}

impl Epilogue {
    fn from_env() -> Epilogue {
        match std::env::var("COHORT_BENCH_EPILOGUE").as_deref() {
            Err(_) | Ok("" | "none") => Epilogue::None,
            Ok("bias_act") => Epilogue::BiasAct,
            Ok("act_grad") => Epilogue::ActGrad,
            Ok(other) => {
                panic!("COHORT_BENCH_EPILOGUE: unknown '{other}' (none, bias_act, act_grad)")
            }
        }
    }

    /// The suffix of JSON keys and summary labels.
    fn suffix(self) -> &'static str {
        match self {
            Epilogue::None => "",
            Epilogue::BiasAct => "+bias_act",
            Epilogue::ActGrad => "+act_grad",
        }
    }
}

/// An epilogue other than `None` and the tensors it reads or writes besides A, B and C: the bias,
/// and a second tensor shaped as C (ReLU's output, or the pre-activation its gradient reads).
struct EpilogueTensors {
    kind: Epilogue,
    bias: GpuTensor,
    other: GpuTensor,
}

impl EpilogueTensors {
    /// The tensors for `kind` on a product of `shape` whose C is stored as `c_shape`; `None` for
    /// the plain product.
    fn new(
        gpu: &GpuBackend,
        rng: &mut Rng,
        kind: Epilogue,
        shape: &Shape,
        c_shape: &[usize],
    ) -> cohort::Result<Option<EpilogueTensors>> {
        if kind == Epilogue::None {
            return Ok(None);
        }
        let bias_shape = if shape.batch > 1 {
            vec![shape.batch, shape.n]
        } else {
            vec![shape.n]
        };
        let bias_data = rng.uniform_vec(shape.batch * shape.n, -1.0, 1.0);
        let other_data = rng.uniform_vec(c_shape.iter().product(), -1.0, 1.0);
        Ok(Some(EpilogueTensors {
            kind,
            bias: gpu.tensor(&bias_shape, &bias_data)?,
            other: gpu.tensor(c_shape, &other_data)?,
        }))
    }
}

/// Records one product, with the epilogue of `extra` when there is one.
fn record_product(
    gpu: &GpuBackend,
    (a, b, c): (&GpuTensor, &GpuTensor, &mut GpuTensor),
    extra: Option<&mut EpilogueTensors>,
    spec: &MatmulSpec,
) -> cohort::Result<()> {
    let Some(e) = extra else {
        return gpu.matmul(a, b, c, spec);
    };
    if e.kind == Epilogue::ActGrad {
        gpu.matmul_act_grad(a, b, &e.other, &e.bias, c, spec, Activation::Relu)
    } else {
        gpu.matmul_bias_act(a, b, &e.bias, c, &mut e.other, spec, Activation::Relu)
    }
}

/// A tensor of `shape` with uniform values in [-1, 1], F16 for `Precision::F16`.
fn operand(gpu: &GpuBackend, rng: &mut Rng, shape: &[usize]) -> cohort::Result<GpuTensor> {
    let data = rng.uniform_vec(shape.iter().product(), -1.0, 1.0);
    match precision() {
        Precision::F16 => gpu.tensor_f16(shape, &data),
        _ => gpu.tensor(shape, &data),
    }
}

fn shapes_from_env() -> Vec<Shape> {
    common::env_list("COHORT_BENCH_SHAPES", DEFAULT_SHAPES, Shape::parse)
}

fn transposes_from_env() -> Vec<Trans> {
    common::env_list("COHORT_BENCH_TRANSPOSES", "nn,nt,tn", |s| {
        match s.trim().to_ascii_lowercase().as_str() {
            "nn" => Ok(Trans { a: false, b: false }),
            "nt" => Ok(Trans { a: false, b: true }),
            "tn" => Ok(Trans { a: true, b: false }),
            "tt" => Ok(Trans { a: true, b: true }),
            other => Err(format!("unknown '{other}' (nn, nt, tn, tt)")),
        }
    })
}

/// One finished measurement, for the summary.
struct Row {
    backend: &'static str,
    /// The epilogue's suffix (empty for the plain product).
    epilogue: &'static str,
    shape: Shape,
    trans: Trans,
    median: Duration,
    iters: usize,
    clock: &'static str,
}

impl Row {
    fn tflops(&self) -> f64 {
        self.shape.flops() / self.median.as_secs_f64() / 1e12
    }

    fn line(&self) -> String {
        format!(
            "SUMMARY matmul {:<3} {:>18} {}{} | median {:>10.4} ms | {:>9.5} TFLOP/s | {} iters, {}",
            self.backend,
            self.shape.to_string(),
            self.trans.name(),
            self.epilogue,
            common::ms(self.median),
            self.tflops(),
            self.iters,
            self.clock
        )
    }
}

fn bench_gpu(
    c: &mut Criterion,
    gpu: &GpuBackend,
    samples: usize,
    rows: &mut Vec<Row>,
    json: &mut JsonSink,
) {
    let shapes = shapes_from_env();
    let transposes = transposes_from_env();
    let epilogue = Epilogue::from_env();
    let mut clock = None;
    let mut group = c.benchmark_group("matmul-gpu");
    group.sample_size(samples);
    for (si, &shape) in shapes.iter().enumerate() {
        for &t in &transposes {
            let [sa, sb, sc] = shape.operands(t);
            let mut rng = Rng::new(0xC0407 + si as u64);
            let setup = (|| {
                let a = operand(gpu, &mut rng, &sa)?;
                let b = operand(gpu, &mut rng, &sb)?;
                let mut c = gpu.zeros(&sc, DType::F32)?;
                let mut extra = EpilogueTensors::new(gpu, &mut rng, epilogue, &shape, &sc)?;
                let run = || record_product(gpu, (&a, &b, &mut c), extra.as_mut(), &t.spec());
                if common::warm_up(gpu, &mut clock, "matmul", run)? && precision() != Precision::F32
                {
                    eprintln!(
                        "[matmul] f16 products on {}",
                        match gpu.matmul_coop() {
                            Some(ops) => format!(
                                "matmul_coop.wgsl ({ops:?}, layout {})",
                                std::env::var("COHORT_COOP_LAYOUT")
                                    .unwrap_or_else(|_| "by shape".into())
                            ),
                            None => "matmul.wgsl (no cooperative matrices)".into(),
                        }
                    );
                }
                Ok::<_, cohort::CohortError>((a, b, c, extra))
            })();
            let (a, b, mut cm, mut extra) = match setup {
                Ok(v) => v,
                Err(e) => {
                    common::skip_case(&format!("matmul gpu {shape} {}", t.name()), e);
                    continue;
                }
            };
            let clock = clock.expect("clock picked during setup");
            group.throughput(Throughput::Elements(shape.flops() as u64));
            let id = BenchmarkId::new(t.name(), shape);
            if let Some((median, iters)) = common::measure(&mut group, id, samples, || {
                common::time_gpu(gpu, clock, || {
                    record_product(gpu, (&a, &b, &mut cm), extra.as_mut(), &t.spec())
                })
            }) {
                let row = Row {
                    backend: precision().names().1,
                    epilogue: epilogue.suffix(),
                    shape,
                    trans: t,
                    median,
                    iters,
                    clock: clock.label(),
                };
                eprintln!("{}", row.line());
                json.record(
                    format!(
                        "matmul/{}/{shape}/{}{}",
                        t.name(),
                        precision().names().0,
                        epilogue.suffix()
                    ),
                    serde_json::json!({
                        "median_ms": common::ms(median),
                        "tflops": row.tflops(),
                        "flops": shape.flops(),
                        "iters": iters,
                        "clock": clock.label(),
                    }),
                );
                rows.push(row);
            }
        }
    }
    group.finish();
}

fn bench_cpu(c: &mut Criterion, samples: usize, rows: &mut Vec<Row>) {
    let cpu = CpuBackend;
    let shape = Shape::parse(CPU_SHAPE).expect("valid CPU shape");
    let mut group = c.benchmark_group("matmul-cpu");
    group.sample_size(samples);
    group.throughput(Throughput::Elements(shape.flops() as u64));
    for t in [
        Trans { a: false, b: false },
        Trans { a: false, b: true },
        Trans { a: true, b: false },
    ] {
        let [sa, sb, sc] = shape.operands(t);
        let mut rng = Rng::new(7);
        let a = cpu
            .tensor(&sa, &rng.uniform_vec(sa.iter().product(), -1.0, 1.0))
            .expect("A");
        let b = cpu
            .tensor(&sb, &rng.uniform_vec(sb.iter().product(), -1.0, 1.0))
            .expect("B");
        let mut cm = cpu.zeros(&sc, DType::F32).expect("C");
        let id = BenchmarkId::new(t.name(), shape);
        if let Some((median, iters)) = common::measure(&mut group, id, samples, || {
            common::wall(|| {
                let spec = MatmulSpec::new(t.a, t.b);
                cpu.matmul(&a, &b, &mut cm, &spec).expect("CPU matmul");
                std::hint::black_box(&cm);
            })
        }) {
            let row = Row {
                backend: "cpu",
                epilogue: "",
                shape,
                trans: t,
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
    let gpu = common::open_gpu("matmul");
    if let Some(gpu) = &gpu {
        json.set_device(gpu.describe());
        bench_gpu(&mut c, gpu, samples, &mut rows, &mut json);
        // `cargo test`: the precisions, epilogues and transposes the GPU runs choose by
        // environment, each once on small shapes.
        const SHAPES: (&str, &str) = ("COHORT_BENCH_SHAPES", "33x17x70,2b40x24x50");
        let mut variants: Vec<common::TestVariant> = vec![(
            &[
                SHAPES,
                ("COHORT_BENCH_PRECISION", "mixed"),
                ("COHORT_BENCH_EPILOGUE", "act_grad"),
                ("COHORT_BENCH_TRANSPOSES", "nt"),
            ],
            &[
                "matmul/NT/33x17x70/mixed+act_grad",
                "matmul/NT/2b40x24x50/mixed+act_grad",
            ],
        )];
        if gpu.f16_tensors() {
            variants.push((
                &[
                    SHAPES,
                    ("COHORT_BENCH_PRECISION", "f16"),
                    ("COHORT_BENCH_EPILOGUE", "bias_act"),
                    ("COHORT_BENCH_TRANSPOSES", "nn,tt"),
                ],
                &[
                    "matmul/NN/33x17x70/fp16+bias_act",
                    "matmul/TT/2b40x24x50/fp16+bias_act",
                ],
            ));
        } else {
            eprintln!("**** SKIPPED: the F16-tensor variant: this adapter has no F16 tensors ****");
        }
        common::run_test_variants("matmul", &variants);
    }
    bench_cpu(&mut c, samples, &mut rows);
    c.final_summary();

    common::print_summary("matmul", gpu.as_ref(), rows.iter().map(Row::line));
    json.write();
}
