//! The GPU's own commands: `cohort devices`, `cohort check` and `cohort profile`.

use cohort::gpu::driver_stats::DriverStatistics;
use cohort::trainer::Trainer;
use cohort::{Backend, CohortError, GpuBackend, Result};

use crate::falls_back;
use crate::prepare::Prepared;
use crate::text::count;

/// Which kernel f16 products (mixed precision) run on here and why, and what they read.
fn tensor_core_status(gpu: &GpuBackend) -> String {
    let ops = gpu.runtime().caps().coop_ops;
    let kernel = match gpu.coop_check() {
        Some(c) if c.passed() => format!(
            "cooperative-matrix kernel, {:?} (self-test passed)",
            gpu.matmul_coop().expect("chosen")
        ),
        Some(c) => format!(
            "cooperative matrices chosen but OFF, the self-test failed at {}; the f32 kernel \
             rounds to f16 instead",
            c.worst
        ),
        None if ops.is_some() => format!(
            "the f32 kernel rounds to f16 ({ops:?} cooperative matrices offered, not used: \
             software adapter or COHORT_COOP=off; COHORT_COOP=on uses them)",
            ops = ops.expect("offered")
        ),
        None => "the f32 kernel rounds to f16 (no usable cooperative matrices here)".into(),
    };
    let storage = if gpu.f16_tensors() {
        "F16 weight copies, activations and inputs"
    } else {
        "f32 tensors rounded as loaded (no f16 shaders)"
    };
    format!("{kernel}; {storage}")
}

/// How the loss and accuracy kernels reduce a row's threads here, and why.
fn row_status(gpu: &GpuBackend) -> String {
    match gpu.row_check() {
        Some(c) if c.passed() => {
            "reduced in subgroups, self-test passed (COHORT_ROW_SUBGROUPS=0: through workgroup \
             memory)"
                .into()
        }
        Some(c) => format!(
            "reduced through workgroup memory: in subgroups they failed the self-test at {} {}",
            c.case, c.worst
        ),
        None => {
            "reduced through workgroup memory (no subgroups here, or COHORT_ROW_SUBGROUPS=0)".into()
        }
    }
}

/// Which kernel f32 products run on here.
fn f32_product_status(gpu: &GpuBackend) -> &'static str {
    match gpu.f32_matmul() {
        cohort::gpu::F32Matmul::SplitF16 => {
            "split into f16 parts on the cooperative-matrix kernel (COHORT_F32_MATMUL=split-f16, \
             self-test passed)"
        }
        cohort::gpu::F32Matmul::Plain => "the f32 kernel (COHORT_F32_MATMUL=split-f16 splits them)",
    }
}

/// How each product's plan (kernel variant, tile, K split) is chosen here.
fn plan_status(gpu: &GpuBackend) -> String {
    if !gpu.tunes_matmuls() {
        return "by shape (COHORT_MATMUL_TUNE=1 times each shape's candidates and keeps the \
                fastest)"
            .into();
    }
    let known = gpu.tuned_matmuls().len();
    format!("the fastest of each shape's candidates, timed once ({known} shapes known already)")
}

/// Lists the adapters, then what cohort would use by default and what it can do there.
pub(crate) fn devices() -> Result<()> {
    let list = cohort::gpu::list_adapters();
    if list.is_empty() {
        let options = cohort::gpu::GpuOptions::from_env()?;
        if options.adapter.is_some() {
            // One asked for by name is missing: an error here as in `train`, not the CPU.
            return GpuBackend::new(&options).map(drop);
        }
        println!("no Vulkan, Metal or DX12 adapter found; cohort will use the CPU backend");
        return Ok(());
    }
    for a in list {
        println!("{a}");
    }
    match GpuBackend::from_env() {
        Ok(g) => {
            let c = g.runtime().caps();
            println!("\nchosen: {}", g.describe());
            if g.is_software() {
                println!(
                    "  a software adapter: `--device auto` passes over it for the CPU backend, \
                     which is faster, unless COHORT_ADAPTER names it; `--device gpu` uses it"
                );
            }
            println!(
                "  subgroups {}, shader f16 {}, timestamp queries {}, cooperative matrix configs {}",
                c.subgroup,
                c.shader_f16,
                c.timestamp_query,
                c.cooperative_matrix.len()
            );
            println!(
                "  workgroup memory {} KiB, subgroup width {}",
                c.max_workgroup_storage / 1024,
                c.subgroup_size
                    .map_or_else(|| "varies".to_string(), |w| w.to_string())
            );
            for m in &c.cooperative_matrix {
                println!(
                    "    {}x{}x{} {:?} inputs -> {:?} (subgroups of {}..{})",
                    m.m_size,
                    m.n_size,
                    m.k_size,
                    m.ab_type,
                    m.cr_type,
                    g.runtime().info().subgroup_min_size,
                    g.runtime().info().subgroup_max_size
                );
            }
            println!(
                "  f16 products (mixed precision): {}",
                tensor_core_status(&g)
            );
            println!("  f32 products: {}", f32_product_status(&g));
            println!("  matmul plans: {}", plan_status(&g));
            println!(
                "  kernel parameters: {}",
                if g.runtime().params_in_storage() {
                    "in a storage buffer (COHORT_PARAMS_STORAGE=0: a uniform one)"
                } else {
                    "in a uniform buffer (COHORT_PARAMS_STORAGE=1: a storage one)"
                }
            );
            println!(
                "  f32 values rounded to f16: {}",
                if g.runtime().integer_f16_rounding() {
                    "in integer operations (COHORT_INTEGER_F16_ROUNDING=0: by WGSL's conversions, \
                     where the adapter allows them)"
                } else {
                    "by WGSL's packing conversions (COHORT_INTEGER_F16_ROUNDING=1: in integer \
                     operations)"
                }
            );
            println!(
                "  loss and accuracy rows: {}; threads per row: {} for 10 classes, {} for 1000",
                row_status(&g),
                g.row_threads(10),
                g.row_threads(1000)
            );
            println!("  largest tensor {} MiB", c.max_tensor_bytes() >> 20);
        }
        Err(e) if falls_back(&e) => {
            println!("\nno usable GPU ({e}); cohort will use the CPU backend")
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Runs every kernel on `gpu` against its CPU twin and prints each check; fails if any disagrees.
pub(crate) fn check(gpu: &GpuBackend) -> Result<()> {
    println!(
        "checking every kernel on {} against the CPU reference",
        gpu.describe()
    );
    println!(
        "f16 products (mixed precision): {}",
        tensor_core_status(gpu)
    );
    println!("f32 products: {}", f32_product_status(gpu));
    let mut failed = 0;
    let checks = cohort::validate::run_all(gpu)?;
    let width = checks.iter().map(|c| c.kernel.len()).max().unwrap_or(0);
    for c in checks {
        println!(
            "{:<width$} {:<60} max |gpu - cpu| {:.2e}, {:>5.1}% of tolerance  {}",
            c.kernel,
            c.case,
            c.max_abs_error,
            100.0 * c.worst_ratio,
            if c.passed() {
                "ok".to_string()
            } else {
                format!("FAILED at {}", c.worst)
            }
        );
        failed += usize::from(!c.passed());
    }
    if failed > 0 {
        return Err(CohortError::Gpu(format!("{failed} kernel checks failed")));
    }
    println!("all kernels agree with the CPU reference");
    Ok(())
}

/// Profiles `steps` training steps of the cohort `prepared` describes: their GPU time whole, then
/// kernel by kernel.
pub(crate) fn profile(
    gpu: &GpuBackend,
    steps: usize,
    driver_stats: bool,
    prepared: Prepared,
) -> Result<()> {
    let (split, _, config) = prepared;
    let rt = gpu.runtime();
    // Before the warm-up steps, so that a missing feature fails before any training work.
    rt.can_profile()?;
    if driver_stats {
        rt.can_read_driver_statistics()?;
    }
    let empty = rt.memory().in_use;
    let mut trainer = Trainer::new(gpu, config.clone())?;
    let model = rt.memory().in_use - empty;
    let data = trainer.upload(&split.train)?;
    let loaded = rt.memory().in_use;
    // As in training, a batch holds at most the whole training set.
    let n = split.train.rows;
    let batch = config.batch_size.min(n);
    // Step s trains on the s-th batch of the data, wrapping around.
    let rows = |s: usize| -> Vec<usize> {
        let start = (s % n) * batch % n;
        (0..batch).map(|r| (start + r) % n).collect()
    };
    for s in 0..3 {
        trainer.step(&data, &rows(s))?;
    }
    gpu.finish()?;
    // The fourth step gives the launches and memory of every later one (the first ones also
    // compile pipelines and, with COHORT_MATMUL_TUNE=1, time the products' plans).
    rt.reset_memory_peak();
    let before = rt.work_counts();
    trainer.step(&data, &rows(3))?;
    gpu.finish()?;
    let step_memory = rt.memory().peak_in_use - loaded;
    let counts = rt.work_counts();
    let mut whole = Vec::new();
    for s in 0..steps {
        let ((), time) = rt.time(|| trainer.step(&data, &rows(s)))?;
        whole.extend(time);
    }
    whole.sort();
    rt.start_profile()?;
    let profiled = (0..steps).try_for_each(|s| trainer.step(&data, &rows(s)));
    let profile = rt.stop_profile()?;
    profiled?;
    let models: Vec<String> = config.peers.iter().map(|p| p.name()).collect();
    println!(
        "GPU time per step over {} of {} (batch {batch}, {}):",
        count(steps as u64, "step"),
        models.join(", "),
        if config.mixed_precision {
            "mixed precision"
        } else {
            "f32"
        },
    );
    print!("{}", profile.table(steps));
    let median = whole.get(whole.len() / 2).copied().unwrap_or_default();
    println!(
        "whole step, unprofiled: {:.1} µs GPU (median of {}); {} dispatches in {} submission(s)",
        median.as_secs_f64() * 1e6,
        whole.len(),
        counts.dispatches - before.dispatches,
        counts.submissions - before.submissions
    );
    println!(
        "(profiled, each dispatch runs in a pass of its own: a little slower than in the step)"
    );
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "device memory: model {:.2} MiB (weights, gradients, optimizer state) + step {:.2} MiB \
         at its peak (activations, their gradients, scratch); the data set {:.2} MiB more",
        mib(model),
        mib(step_memory),
        mib(loaded - empty - model),
    );
    let tuned = gpu.tuned_matmuls();
    if !tuned.is_empty() {
        println!(
            "matmul plans tuned (COHORT_MATMUL_TUNE=1; [batch×]M×N×K, fastest of up to 3 runs):"
        );
        for t in &tuned {
            println!("  {t}");
        }
        let (own, best) = tuned
            .iter()
            .filter_map(|t| t.own_and_tuned_times())
            .fold((0.0, 0.0), |(own, best), (o, b)| {
                (own + o.as_secs_f64(), best + b.as_secs_f64())
            });
        if best > 0.0 {
            println!(
                "  each shape once, timed alone: {:.1} µs with the shapes' own plans, {:.1} µs \
                 tuned ({:.2}×)",
                own * 1e6,
                best * 1e6,
                own / best
            );
        }
    }
    if driver_stats {
        let stats = rt.driver_statistics()?;
        let failed = stats
            .pipelines
            .iter()
            .filter(|p| p.executables.is_err())
            .count();
        print_driver_statistics(&stats, failed);
        if failed > 0 {
            return Err(CohortError::Gpu(format!(
                "{failed} of the {} pipelines profiled could not be rebuilt for their statistics",
                stats.pipelines.len()
            )));
        }
    }
    Ok(())
}

/// The driver's statistics, one line per pipeline and stage (one line in all where the driver
/// keeps none), then what each statistic counts in the driver's words, and the `failed`
/// pipelines' errors.
fn print_driver_statistics(stats: &DriverStatistics, failed: usize) {
    print!("{}", driver_statistics_report(stats, failed));
}

/// [`print_driver_statistics`]'s text.
fn driver_statistics_report(stats: &DriverStatistics, failed: usize) -> String {
    let n = stats.pipelines.len();
    let mut out = match &stats.not_kept {
        Some(why) => format!(
            "driver statistics: none ({why}); the {n} pipelines profiled were rebuilt for them{}\n",
            if failed == 0 { " without error" } else { "" }
        ),
        None => format!(
            "driver statistics of the {n} pipelines profiled \
             (VK_KHR_pipeline_executable_properties; rebuilt from the same WGSL and constants):\n"
        ),
    };
    // Each statistic's description, once, in the order first met.
    let mut legend: Vec<(&str, &str)> = Vec::new();
    for p in &stats.pipelines {
        match &p.executables {
            Ok(_) if stats.not_kept.is_some() => {}
            Ok(executables) => {
                let marks = p.unroll_marks.map_or(String::new(), |(marked, loops)| {
                    format!(" ({marked} of its {loops} loops marked Unroll)")
                });
                out += &format!("  {}{marks}\n", p.label);
                for e in executables {
                    let values: Vec<String> = e
                        .statistics
                        .iter()
                        .map(|s| format!("{} {}", s.name, s.value))
                        .collect();
                    out += &format!(
                        "    {} (subgroups of {}): {}\n",
                        e.name,
                        e.subgroup_size,
                        values.join(", ")
                    );
                    for s in &e.statistics {
                        if !legend.iter().any(|(name, _)| *name == s.name) {
                            legend.push((&s.name, &s.description));
                        }
                    }
                }
            }
            Err(err) => out += &format!("  {}\n    {err}\n", p.label),
        }
    }
    if !legend.is_empty() {
        out += "what they count, as the driver describes them:\n";
        for (name, description) in legend {
            out += &format!("  {name}: {description}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort::gpu::driver_stats::{Executable, PipelineStatistics, Statistic};

    #[test]
    fn driver_statistics_are_listed_per_pipeline_with_each_description_once() {
        let stat = |name: &str, value: &str| Statistic {
            name: name.into(),
            description: format!("what {name} counts"),
            value: value.into(),
        };
        let pipeline = |label: &str, registers: &str| PipelineStatistics {
            label: label.into(),
            unroll_marks: None,
            executables: Ok(vec![Executable {
                name: "Compute Shader".into(),
                subgroup_size: 32,
                statistics: vec![stat("Register Count", registers), stat("Local Memory", "0")],
            }]),
        };
        let stats = DriverStatistics {
            not_kept: None,
            pipelines: vec![
                pipeline("matmul 64", "128"),
                pipeline("matmul_coop 4x2:2x4", "255"),
            ],
        };
        let report = driver_statistics_report(&stats, 0);
        assert!(report.contains("  matmul 64\n    Compute Shader (subgroups of 32): Register Count 128, Local Memory 0\n"), "{report}");
        assert!(report.contains("Register Count 255"), "{report}");
        assert!(report.ends_with("what they count, as the driver describes them:\n  Register Count: what Register Count counts\n  Local Memory: what Local Memory counts\n"), "{report}");
        // A driver that keeps none: one line, no legend.
        let none = DriverStatistics {
            not_kept: Some("no VK_KHR_pipeline_executable_properties".into()),
            pipelines: vec![pipeline("matmul 64", "128")],
        };
        let report = driver_statistics_report(&none, 0);
        assert_eq!(report.lines().count(), 1, "{report}");
        assert!(
            report.ends_with("rebuilt for them without error\n"),
            "{report}"
        );
    }
}
