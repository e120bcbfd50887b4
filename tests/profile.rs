//! The per-kernel GPU profile (`Runtime::start_profile`): every dispatch in it is timed and counted
//! under its kernel, entry point and (for matmuls) shape and FLOPs; results are unchanged by it;
//! nothing is counted outside it.

mod common;

use cohort::ops::{Activation, MatmulSpec};
use cohort::{Backend, CohortError, DType, GpuBackend, GpuOptions};
use common::{gpu, loud, uniform};

#[test]
fn profile_counts_every_dispatch_under_its_kernel_and_shape() {
    let Some(default) = gpu() else { return };
    if !default.runtime().caps().timestamp_query {
        let err = default.runtime().start_profile().unwrap_err();
        assert!(matches!(err, CohortError::Unsupported(_)), "{err}");
        common::skip(
            "timestamp",
            "this adapter has no timestamp queries, so no profile was taken",
        );
        return;
    }
    // K split in two, so each product is two dispatches: the partial products, then their sum.
    let g = GpuBackend::new(&GpuOptions {
        k_splits: Some(2),
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    let rt = g.runtime();
    let (m, n, k) = (33, 20, 160);
    let a = g.tensor(&[m, k], &uniform(1, m * k, -1.0, 1.0)).unwrap();
    let b = g.tensor(&[k, n], &uniform(2, k * n, -1.0, 1.0)).unwrap();
    let bias = g.tensor(&[n], &uniform(3, n, -1.0, 1.0)).unwrap();
    let spec = MatmulSpec::new(false, false);
    let mut unprofiled = g.zeros(&[m, n], DType::F32).unwrap();
    g.matmul(&a, &b, &mut unprofiled, &spec).unwrap();
    let expected = g.read(&unprofiled).unwrap();

    rt.start_profile().unwrap();
    let mut c = g.zeros(&[m, n], DType::F32).unwrap();
    for _ in 0..3 {
        g.matmul(&a, &b, &mut c, &spec).unwrap();
    }
    // More dispatches than one submission can time (2048): the runtime submits early.
    let mut y = g.zeros(&[m, n], DType::F32).unwrap();
    for _ in 0..2100 {
        g.bias_act(&c, &bias, &mut y, Activation::Relu).unwrap();
    }
    let profile = rt.stop_profile().unwrap();
    assert_eq!(g.read(&c).unwrap(), expected, "profiling changed a product");

    let row = |kernel: &str, entry: &str| {
        profile
            .kernels
            .iter()
            .find(|r| r.kernel == kernel && r.entry == entry)
            .unwrap_or_else(|| panic!("no {kernel} {entry} row in {profile:#?}"))
    };
    let product = row("matmul.wgsl", "main");
    assert_eq!(
        (product.calls, product.detail.as_str()),
        (3, "33×20×160 NN")
    );
    assert_eq!(product.flops, 3.0 * 2.0 * (m * n * k) as f64);
    // The reduction is counted under the same shape, its FLOPs not again.
    let sum = row("matmul.wgsl", "reduce_splits");
    assert_eq!(
        (sum.calls, sum.detail.as_str(), sum.flops),
        (3, "33×20×160 NN", 0.0)
    );
    assert!(profile
        .kernels
        .iter()
        .any(|r| r.kernel == "bias_act.wgsl" && r.calls == 2100 && r.detail.is_empty()));
    assert_eq!(profile.kernels.len(), 3, "{profile:#?}");
    assert_eq!(profile.calls(), 2106);
    assert!(profile.total() > std::time::Duration::ZERO, "{profile:#?}");
    assert!(
        profile.kernels.windows(2).all(|w| w[0].time >= w[1].time),
        "not sorted by time: {profile:#?}"
    );
    let table = profile.table(3);
    assert!(
        table.contains("33×20×160 NN") && table.contains("700"),
        "{table}"
    );

    // Outside a profile nothing is counted, and a new profile starts from nothing.
    g.matmul(&a, &b, &mut c, &spec).unwrap();
    assert!(rt.stop_profile().unwrap().kernels.is_empty());
    rt.start_profile().unwrap();
    g.matmul(&a, &b, &mut c, &spec).unwrap();
    assert_eq!(rt.stop_profile().unwrap().calls(), 2);
}

/// The GPU under test where it has timestamp queries; else it says loudly that the test skips.
fn timed_gpu() -> Option<&'static GpuBackend> {
    let g = gpu()?;
    if !g.runtime().caps().timestamp_query {
        common::skip(
            "timestamp",
            "this adapter has no timestamp queries, so no profile was taken",
        );
        return None;
    }
    Some(g)
}

#[test]
fn a_profile_times_no_tuning() {
    // With COHORT_MATMUL_TUNE=1, a shape first met inside a profile runs its plan by shape
    // untuned (the tuner's launches would be counted as the profiled work's); after the profile
    // the same shape is tuned as usual.
    if timed_gpu().is_none() {
        return;
    }
    let g = GpuBackend::new(&GpuOptions {
        tune_matmuls: true,
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    let (m, n, k) = (40, 24, 70);
    let a = g.tensor(&[m, k], &uniform(4, m * k, -1.0, 1.0)).unwrap();
    let b = g.tensor(&[k, n], &uniform(5, k * n, -1.0, 1.0)).unwrap();
    let mut c = g.zeros(&[m, n], DType::F32).unwrap();
    let spec = MatmulSpec::new(false, false);
    g.runtime().start_profile().unwrap();
    g.matmul(&a, &b, &mut c, &spec).unwrap();
    let profile = g.runtime().stop_profile().unwrap();
    assert_eq!(profile.calls(), 1, "{profile:#?}");
    assert!(g.tuned_matmuls().is_empty());
    g.matmul(&a, &b, &mut c, &spec).unwrap();
    assert_eq!(g.tuned_matmuls().len(), 1);
}

/// Profiles one training step of two 64-32-10 peers on `g` and rebuilds every pipeline it ran
/// for the driver's statistics: each is rebuilt without error, and where the driver keeps
/// statistics each has some. Returns (pipelines, pipelines with statistics).
fn rebuilt_for_driver_statistics(g: &GpuBackend, mixed: bool) -> (usize, usize) {
    use cohort::config::{parse_peers, TrainConfig};
    use cohort::data::DataSource;
    use cohort::trainer::Trainer;
    let split = DataSource::Digits.load().unwrap();
    let mut config = TrainConfig::new(parse_peers("2x32", 64, 10, Activation::Relu).unwrap());
    config.mixed_precision = mixed;
    let mut trainer = Trainer::new(g, config).unwrap();
    let data = trainer.upload(&split.train).unwrap();
    let rows: Vec<usize> = (0..64).collect();
    let rt = g.runtime();
    rt.start_profile().unwrap();
    trainer.step(&data, &rows).unwrap();
    rt.stop_profile().unwrap();
    let sources = rt.profiled_pipelines();
    assert!(
        sources.iter().any(|s| s.label.starts_with("matmul"))
            && sources
                .iter()
                .any(|s| s.label.starts_with("optimizer.wgsl")),
        "{sources:#?}"
    );
    let stats = rt.driver_statistics().unwrap();
    assert_eq!(stats.pipelines.len(), sources.len());
    if let Some(why) = &stats.not_kept {
        assert!(why.contains("keeps no pipeline statistics"), "{why}");
    }
    // Built with unrolling hints, each pipeline says how many of its loops were marked.
    let hinted = sources.iter().any(|s| s.unroll_hints);
    let mut marked_loops = 0;
    let mut reported = 0;
    for p in &stats.pipelines {
        match p.unroll_marks {
            Some((marked, loops)) => {
                assert!(
                    hinted && marked <= loops,
                    "{}: {marked} of {loops}",
                    p.label
                );
                marked_loops += marked;
            }
            None => assert!(!hinted, "{}: no unrolling marks", p.label),
        }
        match &p.executables {
            Ok(executables) if stats.not_kept.is_some() => {
                assert!(executables.is_empty(), "{}: {executables:?}", p.label)
            }
            Ok(executables) => {
                assert!(!executables.is_empty(), "{}: no executables", p.label);
                for e in executables {
                    assert!(
                        e.statistics
                            .iter()
                            .any(|s| !s.name.is_empty() && !s.value.is_empty()),
                        "{}: {e:?}",
                        p.label
                    );
                }
                reported += 1;
            }
            Err(e) => panic!("{} was not rebuilt: {e}", p.label),
        }
    }
    assert!(
        !hinted || marked_loops > 0,
        "no loop marked in any pipeline"
    );
    (stats.pipelines.len(), reported)
}

#[test]
fn every_pipeline_a_step_ran_is_rebuilt_for_the_driver_statistics() {
    let Some(default) = gpu() else { return };
    let rt = default.runtime();
    if !rt.caps().timestamp_query || rt.info().backend != wgpu::Backend::Vulkan {
        common::skip(
            "vulkan,timestamp",
            &format!(
                "driver statistics need a Vulkan adapter with timestamp queries; {:?} has {}",
                rt.info().backend,
                if rt.caps().timestamp_query {
                    "them"
                } else {
                    "none"
                }
            ),
        );
        return;
    }
    let mut runs = vec![("f32", rebuilt_for_driver_statistics(default, false))];
    if rt.caps().shader_f16 {
        runs.push(("mixed", rebuilt_for_driver_statistics(default, true)));
        // The tensor-core kernel's build, wherever f16 shaders exist.
        let emulated = GpuBackend::new(&GpuOptions {
            coop: cohort::gpu::CoopChoice::Emulate,
            ..GpuOptions::from_env().unwrap()
        })
        .unwrap();
        runs.push((
            "mixed, emulated tensor cores",
            rebuilt_for_driver_statistics(&emulated, true),
        ));
    }
    if let Some(hinted) = common::hinted_gpu(default) {
        runs.push((
            "f32, unrolling hints",
            rebuilt_for_driver_statistics(&hinted, false),
        ));
    }
    for (name, (pipelines, reported)) in runs {
        match reported {
            0 => loud(&format!(
                "{name}: {pipelines} pipelines rebuilt; {} keeps no pipeline statistics",
                rt.info().name
            )),
            _ => eprintln!("{name}: {pipelines} pipelines rebuilt, statistics for {reported}"),
        }
    }
}

#[test]
fn a_profile_goes_on_after_an_error_in_one_of_its_submissions() {
    if timed_gpu().is_none() {
        return;
    }
    // A device of its own: the error below is reported to this one only.
    let g = GpuBackend::from_env().unwrap();
    let rt = g.runtime();
    let x = g.tensor(&[4, 8], &uniform(1, 32, -1.0, 1.0)).unwrap();
    let bias = g.tensor(&[8], &uniform(2, 8, -1.0, 1.0)).unwrap();
    let mut y = g.zeros(&[4, 8], DType::F32).unwrap();
    rt.start_profile().unwrap();
    g.bias_act(&x, &bias, &mut y, Activation::Relu).unwrap();
    // A validation error from elsewhere (a buffer both mappable for reading and writing, which
    // needs a feature not requested): the flush that reads the timestamps reports it.
    let _bad = rt.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid on purpose"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
        mapped_at_creation: false,
    });
    let err = rt.finish().unwrap_err();
    assert!(matches!(err, CohortError::Gpu(_)), "{err}");
    // The profile's readback buffer is free again: later submissions are timed and read.
    for _ in 0..2 {
        g.bias_act(&x, &bias, &mut y, Activation::Tanh).unwrap();
        rt.finish().unwrap();
    }
    let profile = rt.stop_profile().unwrap();
    assert_eq!(profile.calls(), 2, "{profile:#?}");
}
