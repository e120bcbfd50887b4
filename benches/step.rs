//! Time of one full cohort training step (gather, forward of every peer, fused CE and KL, backward,
//! SGD with momentum) recorded as one submission, on the GPU backend and on the CPU backend.
//! GPU time comes from timestamp queries around the step; wall time covers record, submit and
//! wait; then 20 steps submitted back to back and waited for once give the time per step that
//! training reaches ("pipelined"; the median of 5 such runs). Device memory: the model's
//! buffers, and what a step needs beyond them at its peak (`Runtime::memory`). One summary line
//! per configuration goes to stderr.
//!
//! Run:
//! ```text
//! cargo bench --bench step -- --warm-up-time 1 --measurement-time 3
//! COHORT_BENCH_STEPS=small,large cargo bench --bench step     # the H100 configurations
//! ```
//! Configurations (`COHORT_BENCH_STEPS`, comma-separated; default `tiny`):
//! - `tiny`:  2 × 784-64-10, batch 64 (seconds on lavapipe);
//! - `small`: 2 × 784-1024-1024-10, batch 256 (the PyTorch reference's small DML step);
//! - `large`: 2 × 784-4096-4096-10, batch 1024.
//!
//! `COHORT_BENCH_PRECISION=f16` (or `mixed`) measures the mixed-precision step instead;
//! `COHORT_BENCH_SAMPLES` sets criterion's samples, as in the other benches.
//!
//! Data are synthetic blobs of 784 features resident on the device, as in training.

mod common;

use std::time::{Duration, Instant};

use cohort::config::{parse_peers, LrSchedule, OptimizerConfig, OptimizerKind, TrainConfig};
use cohort::data::synthetic::blobs;
use cohort::ops::Activation;
use cohort::trainer::Trainer;
use cohort::{Backend, CpuBackend, GpuBackend};
use common::JsonSink;
use criterion::{Criterion, Throughput};

/// Steps submitted back to back for the pipelined time per step.
const PIPELINED_STEPS: u32 = 20;

/// Runs of [`PIPELINED_STEPS`] whose median per-step time is reported (one run's time swings
/// with the GPU's clocks and the host's scheduling).
const PIPELINED_RUNS: usize = 5;

fn config(name: &str) -> Option<(TrainConfig, usize)> {
    let (peers, batch) = match name {
        "tiny" => ("2x_-64-_", 64),
        "small" => ("2x_-1024-1024-_", 256),
        "large" => ("2x_-4096-4096-_", 1024),
        _ => return None,
    };
    let peers = parse_peers(peers, 784, 10, Activation::Relu).ok()?;
    let mut c = TrainConfig::new(peers);
    c.batch_size = batch;
    c.mixed_precision = mixed_precision();
    c.optimizer = OptimizerConfig {
        kind: OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        lr: 0.01,
        weight_decay: 0.0,
        schedule: LrSchedule::Constant,
        warmup_steps: 0,
    };
    Some((c, batch))
}

/// `COHORT_BENCH_PRECISION=f16` (or `mixed`): the mixed-precision step (f16 matmul inputs);
/// unset or `f32`, the f32 step. Any other value stops the bench.
fn mixed_precision() -> bool {
    match std::env::var("COHORT_BENCH_PRECISION").as_deref() {
        Err(_) | Ok("f32") => false,
        Ok("f16" | "mixed") => true,
        Ok(other) => panic!("COHORT_BENCH_PRECISION={other}: use f32, f16 or mixed"),
    }
}

/// Matmul FLOPs of one step: forward and weight gradient of every layer, input gradient of
/// every layer but the first (nothing needs the data's gradient; the trainer skips it), as
/// `dml_flops` in benches/reference/torch_reference.py counts them.
fn step_flops(c: &TrainConfig) -> f64 {
    c.peers
        .iter()
        .map(|p| {
            (p.layers.windows(2).enumerate())
                .map(|(l, w)| {
                    let products = if l == 0 { 4.0 } else { 6.0 };
                    products * c.batch_size as f64 * w[0] as f64 * w[1] as f64
                })
                .sum::<f64>()
        })
        .sum()
}

/// `COHORT_BENCH_STEPS`: the configurations to time on the GPU (default `tiny`); an unknown
/// name stops the bench before anything runs.
fn step_names() -> Vec<String> {
    common::env_list("COHORT_BENCH_STEPS", "tiny", |name| {
        let name = name.trim();
        match config(name) {
            Some(_) => Ok(name.to_string()),
            None => Err(format!(
                "unknown step configuration '{name}' (tiny, small, large)"
            )),
        }
    })
}

fn bench_on<B: Backend>(
    crit: &mut Criterion,
    b: &B,
    label: &str,
    name: &str,
    gpu: Option<&GpuBackend>,
    json: &mut JsonSink,
) {
    let (config, batch) = config(name).expect("a configuration step_names checked");
    let flops = step_flops(&config);
    let data = blobs(batch * 8, 10, 784, 1).expect("blobs");
    let in_use = || gpu.map_or(0, |g| g.runtime().memory().in_use);
    let before = in_use();
    let mut trainer = Trainer::new(b, config).expect("trainer");
    let model = in_use() - before;
    let resident = trainer.upload(&data).expect("upload");
    let loaded = in_use();
    let rows: Vec<usize> = (0..batch).collect();
    // Two steps outside the timing: the first compiles the pipelines (and tunes the products'
    // plans with COHORT_MATMUL_TUNE=1); the second counts how a step reaches the GPU and gives
    // the memory it needs beyond the model and the data set (its workspace and scratch
    // buffers, at their peak).
    let counts = gpu.map(|g| {
        trainer.step(&resident, &rows).expect("step");
        g.finish().expect("finish");
        g.runtime().reset_memory_peak();
        let before = g.runtime().work_counts();
        trainer.step(&resident, &rows).expect("step");
        g.finish().expect("finish");
        let after = g.runtime().work_counts();
        (
            after.dispatches - before.dispatches,
            after.submissions - before.submissions,
        )
    });
    let memory = gpu.map(|g| Memory {
        model,
        data: loaded - before - model,
        step: g.runtime().memory().peak_in_use - loaded,
    });
    // Each criterion call's steps: host recording, GPU (where timestamps work) and wall time.
    let mut calls: Vec<Vec<(Duration, Option<Duration>, Duration)>> = Vec::new();
    let samples = common::sample_size();
    let mut group = crit.benchmark_group(format!("step/{label}"));
    group.sample_size(samples);
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function(name, |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut steps = Vec::new();
            for _ in 0..iters {
                let start = Instant::now();
                // Host time to record the step (no waiting), then GPU time around it.
                let mut recorded = Duration::ZERO;
                let mut record = || {
                    let t = Instant::now();
                    let r = trainer.step(&resident, &rows);
                    recorded = t.elapsed();
                    r
                };
                let gpu_time = match gpu {
                    Some(g) => g.runtime().time(&mut record).expect("step").1,
                    None => {
                        record().expect("step");
                        None
                    }
                };
                b.finish().expect("finish");
                let wall = start.elapsed();
                steps.push((recorded, gpu_time, wall));
                total += gpu_time.unwrap_or(wall);
            }
            calls.push(steps);
            total
        })
    });
    group.finish();
    if calls.is_empty() {
        // Criterion did not run it (filtered out, or `--list`): nothing measured to report.
        return;
    }
    // The measured samples only (criterion's warm-up calls come first).
    let measured = calls
        .iter()
        .skip(calls.len().saturating_sub(samples))
        .flatten();
    let mut record_times: Vec<Duration> = measured.clone().map(|s| s.0).collect();
    let mut gpu_times: Vec<Duration> = measured.clone().filter_map(|s| s.1).collect();
    let mut wall_times: Vec<Duration> = measured.map(|s| s.2).collect();
    // Steps submitted back to back, waiting only at the end, as training runs them: the time
    // per step that training reaches (the GPU's gaps between steps included, the host's
    // recording hidden behind the GPU's work where it is shorter), comparable with PyTorch
    // replaying its CUDA graph in a loop. The median of several runs.
    let pipelined = gpu.map(|g| {
        let mut runs: Vec<Duration> = (0..PIPELINED_RUNS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..PIPELINED_STEPS {
                    trainer.step(&resident, &rows).expect("step");
                    g.submit().expect("submit");
                }
                g.finish().expect("finish");
                start.elapsed() / PIPELINED_STEPS
            })
            .collect();
        runs.sort();
        runs[PIPELINED_RUNS / 2]
    });
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied()
    };
    let wall = median(&mut wall_times).unwrap_or_default();
    let best = median(&mut gpu_times).unwrap_or(wall);
    let record = median(&mut record_times).unwrap_or_default();
    if gpu.is_some() {
        json.record(
            format!(
                "dml_step/{name}/{}",
                if mixed_precision() { "mixed" } else { "fp32" }
            ),
            serde_json::json!({
                "median_ms": common::ms(best),
                "wall_ms": common::ms(wall),
                "record_ms": common::ms(record),
                "pipelined_ms": pipelined.map(common::ms),
                "tflops": flops / best.as_secs_f64() / 1e12,
                "flops": flops,
                "clock": if gpu_times.is_empty() { "wall" } else { "gpu timestamps" },
                "dispatches": counts.map(|c| c.0),
                "submissions": counts.map(|c| c.1),
                "memory_bytes": memory.map(|m| m.model + m.step),
                "model_bytes": memory.map(|m| m.model),
                "step_bytes": memory.map(|m| m.step),
                "data_bytes": memory.map(|m| m.data),
            }),
        );
    }
    let gpu_line = median(&mut gpu_times)
        .map(|t| {
            format!(
                "GPU {:.4} ms ({:.1} GFLOP/s), ",
                t.as_secs_f64() * 1e3,
                flops / t.as_secs_f64() / 1e9
            )
        })
        .unwrap_or_default();
    let pipelined_line = pipelined
        .map(|t| {
            format!(
                ", {PIPELINED_STEPS} back to back {:.4} ms each (median of {PIPELINED_RUNS} runs)",
                t.as_secs_f64() * 1e3
            )
        })
        .unwrap_or_default();
    let counts_line = counts
        .map(|(d, s)| format!(", {d} dispatches in {s} submission(s)"))
        .unwrap_or_default();
    let memory_line = memory
        .map(|m| {
            let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
            format!(
                " | memory {:.2} MiB: model {:.2} + step {:.2} (data set {:.2} more)",
                mib(m.model + m.step),
                mib(m.model),
                mib(m.step),
                mib(m.data)
            )
        })
        .unwrap_or_default();
    eprintln!(
        "SUMMARY step {label:<4} {name:<6} {} | {gpu_line}wall {:.4} ms (host recording {:.4} ms{counts_line}){pipelined_line}{memory_line} | {} samples | {}",
        if mixed_precision() { "mixed" } else { "f32" },
        wall.as_secs_f64() * 1e3,
        record.as_secs_f64() * 1e3,
        wall_times.len(),
        b.describe()
    );
}

/// Device memory of a cohort in its storage buffers (`Runtime::memory`), in bytes: the model
/// (weights, gradients, optimizer state, f16 copies), what a step needs beyond it at its peak
/// (the batch's workspace of activations and gradients, scratch such as split-K partial
/// products), and the resident data set, which the comparison with PyTorch leaves out.
#[derive(Clone, Copy)]
struct Memory {
    model: u64,
    step: u64,
    data: u64,
}

fn main() {
    let mut crit = Criterion::default().configure_from_args();
    let mut json = JsonSink::default();
    let names = step_names();
    if let Some(gpu) = common::open_gpu("step") {
        gpu.warm_up().expect("compile kernels");
        json.set_device(gpu.describe());
        for name in &names {
            bench_on(&mut crit, &gpu, "gpu", name, Some(&gpu), &mut json);
        }
        // `cargo test`: the mixed-precision step too, once.
        common::run_test_variants(
            "step",
            &[(
                &[("COHORT_BENCH_PRECISION", "mixed")],
                &["dml_step/tiny/mixed"],
            )],
        );
    }
    bench_on(&mut crit, &CpuBackend, "cpu", "tiny", None, &mut json);
    json.write();
    crit.final_summary();
}
