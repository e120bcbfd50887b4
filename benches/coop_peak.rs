//! The ceiling of cohort's tensor-core kernel: its inner loop alone (`benches/coop_peak.wgsl`),
//! without global reads, staging or barriers, in the kernel's big workgroup layout (4 × 2
//! subgroups of 2 × 4 accumulators) and occupancy, each probe adding one of the kernel's costs:
//! - `registers`: 8 fragment products per step from fragments held in registers: the rate at
//!   which the matrix units take products as naga, wgpu and the driver build cohort's kernels;
//! - `workgroup`: each step first loads its 6 fragments from staged slices in workgroup memory,
//!   walking them as the kernel does;
//! - `barriers`: and a workgroup barrier closes each k-slice;
//! - `stores`: and before it every invocation stores its share of the next slice of both
//!   operands (four f16 a store): the kernel's k-step but for its global reads.
//!
//! From the last to `bench-matmul`'s tensor-core products lies what the global reads cost;
//! above the first, what the hardware gives other paths (cuBLAS's HGEMM in the reference script). Each
//! run's result is checked (every accumulator element must end at steps·FRAG), so a
//! configuration that silently computes nothing fails rather than timing. Run on the adapter's
//! own cooperative matrices (16×16 or 8×8 f16 → f32); where it lists none but has f16 shaders,
//! on the emulated operations in plain WGSL, which say nothing about tensor cores (it says so)
//! and keep the bench working on lavapipe; else skipped, loudly.
//!
//! Run:
//! ```text
//! cargo bench --bench coop_peak -- --warm-up-time 0.5 --measurement-time 1
//! ```
//! Environment:
//! - `COHORT_PEAK_STEPS` (default 4096; 8 in test mode) and `COHORT_PEAK_GROUPS` (workgroups,
//!   default 1056, enough to fill 132 SMs twice over; 2 in test mode).
//! - `COHORT_BENCH_SAMPLES`, `COHORT_BENCH_JSON`, `COHORT_ADAPTER`: see `benches/common/mod.rs`.
//!   JSON keys are `coop-peak/<probe>` (`registers`, `workgroup`, `barriers`, `stores`) with
//!   `median_ms` and `tflops`.

mod common;

use cohort::gpu::shaders::CoopOps;
use cohort::{Backend, GpuBackend};
use common::JsonSink;
use criterion::{BenchmarkId, Criterion, Throughput};

const SOURCE: &str = include_str!("coop_peak.wgsl");
/// Subgroups per workgroup and accumulators per subgroup (the kernel's big layout).
const SUBGROUPS: u64 = 8;
const ACCUMULATORS: u64 = 8;

/// The probe's WGSL for `ops`: the operations, the constants the probe leaves to the host, the
/// probe.
fn probe_source(ops: CoopOps, sg_size: u32, buffers: u32, level: u32) -> String {
    format!(
        "{}\nconst SG_SIZE: u32 = {sg_size}u;\nconst BUFFERS: u32 = {buffers}u;\n\
         const LEVEL: u32 = {level}u;\n{SOURCE}",
        ops.operations()
    )
}

/// The probes, by LEVEL (see `benches/coop_peak.wgsl`).
const PROBES: [&str; 4] = ["registers", "workgroup", "barriers", "stores"];

/// Workgroup memory the probe takes with `buffers` staged slices: the kernel's slices of op(A)
/// and op(B) (128 or 64 rows of 40 f16 each) and a FRAG × FRAG f32 tile per subgroup.
fn workgroup_bytes(frag: u32, buffers: u32) -> u32 {
    let tile = frag * 8;
    2 * buffers * tile * 40 * 2 + frag * frag * SUBGROUPS as u32 * 4
}

fn env_number(var: &str, default: u32) -> u32 {
    common::env_list(var, &default.to_string(), |s| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("'{s}' is not a positive whole number"))
    })[0]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let samples = common::sample_size();
    let mut json = JsonSink::default();
    let mut lines = Vec::new();
    let gpu = common::open_gpu("coop_peak");
    if let Some(g) = &gpu {
        json.set_device(g.describe());
        bench_probes(&mut c, g, samples, &mut lines, &mut json);
    }
    c.final_summary();
    common::print_summary("coop_peak", gpu.as_ref(), lines);
    json.write();
}

fn bench_probes(
    c: &mut Criterion,
    g: &GpuBackend,
    samples: usize,
    lines: &mut Vec<String>,
    json: &mut JsonSink,
) {
    let rt = g.runtime();
    let caps = rt.caps();
    let (ops, sg_size) = match (caps.coop_ops, caps.subgroup_size) {
        (Some(ops), Some(width)) => (ops, width),
        _ if caps.shader_f16 => {
            eprintln!(
                "\n**** {} lists no cooperative matrices this kernel can use (16×16 or 8×8, f16 \
                 → f32, a fixed subgroup width): the probes run the EMULATED operations, whose \
                 times say nothing about tensor cores ****\n",
                rt.info().name
            );
            (CoopOps::Emulated, 32)
        }
        _ => {
            eprintln!(
                "\n**** SKIPPED: {} has neither cooperative matrices nor f16 shaders: the \
                 coop_peak probes did NOT run ****\n",
                rt.info().name
            );
            return;
        }
    };
    let frag = ops.frag();
    let Some(buffers) = [2, 1]
        .into_iter()
        .find(|&b| workgroup_bytes(frag, b) <= caps.max_workgroup_storage)
    else {
        eprintln!(
            "\n**** SKIPPED: the coop_peak probes take {} bytes of workgroup memory at the \
             least and {} has {}: they did NOT run ****\n",
            workgroup_bytes(frag, 1),
            rt.info().name,
            caps.max_workgroup_storage
        );
        return;
    };
    let test = common::test_mode();
    let steps = env_number("COHORT_PEAK_STEPS", if test { 8 } else { 4096 });
    let groups = env_number("COHORT_PEAK_GROUPS", if test { 2 } else { 1056 });
    // Every accumulator element ends at steps·FRAG: exact in f32 below 2^24.
    assert!(
        u64::from(steps) * u64::from(frag) < 1 << 24,
        "COHORT_PEAK_STEPS {steps}: at most {} for exact sums",
        (1u64 << 24) / u64::from(frag) - 1
    );
    let elements = u64::from(groups) * SUBGROUPS * ACCUMULATORS * u64::from(frag * frag);
    let expected = u32::try_from(elements).expect("COHORT_PEAK_GROUPS too large to count");
    let flops = u64::from(groups)
        * SUBGROUPS
        * ACCUMULATORS
        * u64::from(steps)
        * 2
        * u64::from(frag).pow(3);
    let steps_tensor = g.tensor_u32(&[1], &[steps]).expect("the steps");
    let mut correct = g.tensor_u32(&[1], &[0]).expect("the count");
    let mut clock: Option<common::Clock> = None;
    let mut group = c.benchmark_group("coop-peak");
    group.sample_size(samples);
    group.throughput(Throughput::Elements(flops));
    for (level, name) in (0..).zip(PROBES) {
        let source = probe_source(ops, sg_size, buffers, level);
        // SAFETY: the probe indexes its workgroup arrays below their constant sizes (fragment
        // rows < TILE, k-offsets < 32, buffers < BUFFERS, staging tiles per subgroup), its
        // storage arrays at 0, and its loop counts to steps[0], which this bench writes.
        let pipeline =
            unsafe { rt.compile_wgsl_unchecked(&format!("coop_peak {name}"), &source, "main") }
                .unwrap_or_else(|e| {
                    panic!("the {name} probe does not build on {}: {e}", rt.info().name)
                });
        let bind_group = rt.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("coop_peak"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: steps_tensor.binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: correct.binding(),
                },
            ],
        });
        let dispatch = || rt.dispatch_own(&pipeline, &bind_group, [groups, 1, 1]);
        // The first probe's first run picks the clock (and compiles the pipeline); then each
        // run resets the count, is timed, and is checked.
        let clock = *clock.get_or_insert_with(|| {
            let picked = common::pick_clock(g, dispatch).expect("the first run");
            eprintln!("[coop_peak] timing with {}", picked.label());
            picked
        });
        let mut one = || {
            g.write_u32(&mut correct, &[0])
                .expect("resetting the count");
            let time = common::time_gpu(g, clock, dispatch);
            let got = g.read_u32(&correct).expect("reading the count")[0];
            assert_eq!(
                got, expected,
                "the {name} probe on {ops:?} left {got} of {expected} accumulator elements at \
                 steps·FRAG: its cooperative matrices computed something else"
            );
            time
        };
        one();
        let id = BenchmarkId::new(name, format!("{ops:?}"));
        let Some((median, iters)) = common::measure(&mut group, id, samples, &mut one) else {
            continue;
        };
        let tflops = flops as f64 / median.as_secs_f64() / 1e12;
        let line = format!(
            "SUMMARY coop-peak {name:<9} {ops:?} {frag}x{frag}: {:.4} ms, {tflops:.4} TFLOP/s \
             ({groups} workgroups × {SUBGROUPS} subgroups × {ACCUMULATORS} accumulators × \
             {steps} steps; {buffers} staged slice(s); {iters} runs, {})",
            common::ms(median),
            clock.label()
        );
        eprintln!("{line}");
        lines.push(line);
        json.record(
            format!("coop-peak/{name}"),
            serde_json::json!({
                "median_ms": common::ms(median),
                "tflops": tflops,
                "ops": format!("{ops:?}"),
                "frag": frag,
                "steps": steps,
                "workgroups": groups,
                "staged_slices": buffers,
                "clock": clock.label(),
            }),
        );
    }
    group.finish();
}
