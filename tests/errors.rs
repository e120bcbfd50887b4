//! Bad input gets a typed error, never a panic: each error the library promises is provoked here.

mod common;

use cohort::gpu::GpuOptions;
use cohort::ops::{CrossEntropySpec, KlSpec, MatmulSpec, OptimizerStep, ReduceSpec};
use cohort::{Backend, CohortError, CpuBackend, DType, GpuBackend, TensorInfo};
use common::gpu;

fn shape_errors<B: Backend>(b: &B) {
    let x = b.zeros(&[4, 3], DType::F32).unwrap();
    let w = b.zeros(&[4, 3], DType::F32).unwrap();
    let mut y = b.zeros(&[4, 3], DType::F32).unwrap();
    let err = b
        .matmul(&x, &w, &mut y, &MatmulSpec::default())
        .unwrap_err();
    assert!(
        matches!(err, CohortError::ShapeMismatch { op: "matmul", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("[4, 3]"),
        "message names the shapes: {err}"
    );

    let bias = b.zeros(&[5], DType::F32).unwrap();
    let err = b
        .bias_act(&x, &bias, &mut y, Default::default())
        .unwrap_err();
    assert!(
        matches!(err, CohortError::ShapeMismatch { op: "bias_act", .. }),
        "{err}"
    );

    let wrong_labels = b.tensor_u32(&[3], &[0, 1, 2]).unwrap();
    let mut losses = b.zeros(&[4], DType::F32).unwrap();
    let mut dz = b.zeros(&[4, 3], DType::F32).unwrap();
    let spec = spec_ce();
    let err = b
        .softmax_ce(&x, &wrong_labels, &mut losses, &mut dz, &spec)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CohortError::ShapeMismatch {
                op: "softmax_ce",
                ..
            }
        ),
        "{err}"
    );
    let float_labels = b.zeros(&[4], DType::F32).unwrap();
    assert!(b
        .softmax_ce(&x, &float_labels, &mut losses, &mut dz, &spec)
        .is_err());

    let one_peer = b.zeros(&[1, 4, 3], DType::F32).unwrap();
    let mut kl_losses = b.zeros(&[1, 4], DType::F32).unwrap();
    let mut kl_grad = b.zeros(&[1, 4, 3], DType::F32).unwrap();
    let spec = KlSpec {
        temperature: 1.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..1,
    };
    assert!(matches!(
        b.kl_div(&one_peer, &mut kl_losses, &mut kl_grad, &spec),
        Err(CohortError::ShapeMismatch { op: "kl_div", .. })
    ));
    let two = b.zeros(&[2, 4, 3], DType::F32).unwrap();
    let mut l2 = b.zeros(&[2, 4], DType::F32).unwrap();
    let mut g2 = b.zeros(&[2, 4, 3], DType::F32).unwrap();
    let cold = KlSpec {
        temperature: 0.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..2,
    };
    assert!(matches!(
        b.kl_div(&two, &mut l2, &mut g2, &cold),
        Err(CohortError::InvalidConfig(_))
    ));

    // A sum into a result past the end of its output stack, and into an output that holds
    // no whole number of results.
    let rows = b.zeros(&[3, 4], DType::F32).unwrap();
    let mut stack = b.zeros(&[2, 3], DType::F32).unwrap();
    let past = ReduceSpec {
        out_row: 2,
        ..ReduceSpec::scaled(1.0)
    };
    let err = b.reduce_sum(&rows, 1, &mut stack, &past).unwrap_err();
    assert!(err.to_string().contains("result 2 of an output"), "{err}");
    let mut ragged = b.zeros(&[4], DType::F32).unwrap();
    assert!(matches!(
        b.reduce_sum(&rows, 1, &mut ragged, &ReduceSpec::scaled(1.0)),
        Err(CohortError::ShapeMismatch {
            op: "reduce_sum",
            ..
        })
    ));

    // An optimizer step with a gradient scale that is not finite and positive.
    let mut w = b.zeros(&[4], DType::F32).unwrap();
    let grad = b.zeros(&[4], DType::F32).unwrap();
    let mut velocity = vec![b.zeros(&[4], DType::F32).unwrap()];
    for grad_scale in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let step = OptimizerStep::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            grad_scale,
        };
        assert!(matches!(
            b.optimizer_step(&step, &mut w, &grad, &mut velocity),
            Err(CohortError::InvalidConfig(_))
        ));
    }

    assert!(matches!(
        b.tensor(&[2, 2], &[1.0; 3]),
        Err(CohortError::ShapeMismatch { .. })
    ));
    let mut t = b.zeros(&[2], DType::U32).unwrap();
    assert!(
        b.write(&mut t, &[1.0, 2.0]).is_err(),
        "dtype mismatch on write"
    );

    // F16 tensors: matmul operands and fused outputs only, copied in whole 4-byte words.
    let x16 = b.tensor_f16(&[4, 3], &[0.5; 12]).unwrap();
    let w16 = b.tensor_f16(&[3, 4], &[0.5; 12]).unwrap();
    let mut c16 = b.zeros(&[4, 4], DType::F16).unwrap();
    let err = b
        .matmul(&x16, &w16, &mut c16, &MatmulSpec::default())
        .unwrap_err();
    assert!(
        matches!(err, CohortError::ShapeMismatch { op: "matmul", .. })
            && err.to_string().contains("C must be F32"),
        "{err}"
    );
    let bias3 = b.zeros(&[3], DType::F32).unwrap();
    let mut y16 = b.zeros(&[4, 3], DType::F16).unwrap();
    assert!(matches!(
        b.bias_act(&x, &bias3, &mut y16, Default::default()),
        Err(CohortError::ShapeMismatch { op: "bias_act", .. })
    ));
    assert!(matches!(
        b.softmax_ce(&x16, &wrong_labels, &mut losses, &mut dz, &spec_ce()),
        Err(CohortError::ShapeMismatch { .. })
    ));
    let mut other16 = b.zeros(&[12], DType::F16).unwrap();
    for (from, to, len) in [(1, 0, 2), (0, 1, 2), (0, 0, 3)] {
        let err = b.copy(&x16, from, &mut other16, to, len).unwrap_err();
        assert!(err.to_string().contains("even offsets"), "{err}");
    }
    b.copy(&x16, 2, &mut other16, 4, 6).unwrap();
    // Ranges whose end overflows usize are out of range, not wrapped into it.
    for (from, to) in [(usize::MAX - 1, 0), (0, usize::MAX - 1)] {
        let err = b.copy(&x16, from, &mut other16, to, 2).unwrap_err();
        assert!(
            matches!(err, CohortError::ShapeMismatch { op: "copy", .. }),
            "{err}"
        );
    }
    let index = b.tensor_u32(&[2], &[0, 1]).unwrap();
    let labels = b.tensor_u32(&[4], &[0, 1, 2, 3]).unwrap();
    let mut y = b.zeros(&[2], DType::U32).unwrap();
    let mut rows16 = b.zeros(&[2, 3], DType::F16).unwrap();
    let err = b
        .gather_batch(&x16, &labels, &index, 0, &mut rows16, &mut y)
        .unwrap_err();
    assert!(err.to_string().contains("odd"), "{err}");
    // A batch past the end of the index, and labels for other rows than the features.
    let x3 = b.zeros(&[4, 3], DType::F32).unwrap();
    let mut rows = b.zeros(&[2, 3], DType::F32).unwrap();
    for (labels_rows, offset, expect) in [(4, 1, "of an index of 2"), (5, 0, "the same rows")] {
        let labels = b.zeros(&[labels_rows], DType::U32).unwrap();
        let err = b
            .gather_batch(&x3, &labels, &index, offset, &mut rows, &mut y)
            .unwrap_err();
        assert!(
            matches!(
                err,
                CohortError::ShapeMismatch {
                    op: "gather_batch",
                    ..
                }
            ) && err.to_string().contains(expect),
            "{err}"
        );
    }
}

fn spec_ce() -> CrossEntropySpec {
    CrossEntropySpec {
        label_smoothing: 0.0,
        grad_scale: 1.0,
    }
}

/// F16 tensors hold the nearest f16 of what is written, read back as f32, on either backend,
/// and copy like other tensors.
fn f16_round_trip<B: Backend>(b: &B) {
    let values = [
        1.0 + 2f32.powi(-12),
        1.0 / 3.0,
        -65504.0,
        70000.0,
        1e-8,
        0.0,
        2.5,
    ];
    let want: Vec<f32> = values
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(want[0], 1.0, "rounded to nearest");
    assert!(want[3].is_infinite(), "beyond the f16 range");
    let t = b.tensor_f16(&[7], &values).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(b.read(&t).unwrap(), want);
    let mut u = b.zeros(&[7], DType::F16).unwrap();
    b.copy(&t, 2, &mut u, 0, 4).unwrap();
    assert_eq!(b.read(&u).unwrap(), [&want[2..6], &[0.0; 3]].concat());
    b.write(&mut u, &values).unwrap();
    assert_eq!(b.read(&u).unwrap(), want);
    assert!(b.write(&mut u, &values[..6]).is_err(), "length mismatch");
}

#[test]
fn f16_tensors_round_trip_on_the_cpu() {
    f16_round_trip(&CpuBackend);
}

#[test]
fn f16_tensors_round_trip_on_the_gpu() {
    let Some(g) = gpu() else { return };
    f16_round_trip(g);
}

#[test]
fn cpu_backend_rejects_bad_shapes() {
    shape_errors(&CpuBackend);
}

#[test]
fn gpu_backend_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    shape_errors(g);
    // The kernel checks' own shape arguments (as `cohort check` and the tests pass them).
    let step = OptimizerStep::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
        grad_scale: 1.0,
    };
    for dpre in [&[5][..], &[2, 3, 4, 5]] {
        for err in [
            cohort::validate::bias_optimizer(g, &step, dpre, 1).err(),
            cohort::validate::layer_update(g, &step, dpre, 3, false, 1).err(),
        ] {
            assert!(
                matches!(err, Some(CohortError::ShapeMismatch { .. })),
                "{dpre:?}: {err:?}"
            );
        }
    }
    let err = cohort::validate::gather(g, 4, 3, &[0, 1], 3, false).err();
    assert!(
        matches!(err, Some(CohortError::ShapeMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn oversized_buffers_are_refused_not_aborted() {
    oversized(&CpuBackend);
    let Some(g) = gpu() else { return };
    oversized(g);
    let limit = g.runtime().caps().max_storage_binding;
    let err = g
        .zeros(&[(limit / 4 + 1) as usize], DType::F32)
        .unwrap_err();
    assert!(matches!(err, CohortError::BufferTooLarge { .. }), "{err}");
}

/// Tensors too large to allocate, and shapes whose element count overflows `usize` (which
/// wrapped to a small count on the GPU backend, giving a buffer smaller than its shape).
fn oversized<B: Backend>(b: &B) {
    for shape in [
        &[1 << 40, 1 << 30][..],
        &[1 << 62, 1 << 62],
        &[2, 64, 1 << 62],
    ] {
        for dtype in [DType::F32, DType::F16] {
            let err = b.zeros(shape, dtype).map(|_| "a tensor").unwrap_err();
            assert!(
                matches!(err, CohortError::BufferTooLarge { .. }),
                "{shape:?}: {err}"
            );
        }
    }
    let err = b
        .tensor(&[1 << 62, 1 << 62], &[])
        .map(|_| "a tensor")
        .unwrap_err();
    assert!(
        matches!(err, CohortError::ShapeMismatch { .. }) && err.to_string().contains("usize"),
        "{err}"
    );
}

#[test]
fn a_cohort_too_large_for_the_backend_is_refused_not_aborted() {
    use cohort::config::{parse_peers, TrainConfig};
    use cohort::ops::Activation;
    use cohort::trainer::Trainer;
    // Two peers of 64-2⁴⁰-10: each layer's weights take 2⁴⁰·64·2·4 bytes (512 TiB), more than
    // any host or device holds, though every shape is in range.
    let peers = parse_peers("2x1099511627776", 64, 10, Activation::Relu).unwrap();
    let config = TrainConfig::new(peers);
    let err = Trainer::new(&CpuBackend, config.clone()).err().unwrap();
    assert!(matches!(err, CohortError::HostMemory { .. }), "{err}");
    assert!(err.to_string().contains("[2, 64, 1099511627776]"), "{err}");
    let Some(g) = gpu() else { return };
    let err = Trainer::new(g, config).err().unwrap();
    assert!(matches!(err, CohortError::BufferTooLarge { .. }), "{err}");
}

#[test]
fn an_unknown_adapter_name_is_a_no_adapter_error() {
    let err = GpuBackend::new(&GpuOptions {
        adapter: Some("no-such-adapter-anywhere".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, CohortError::NoAdapter { requested: Some(name), .. } if name == "no-such-adapter-anywhere"),
        "{err}"
    );
}

#[test]
fn a_broken_user_shader_is_a_compile_error() {
    let Some(g) = gpu() else { return };
    let err = g
        .runtime()
        .compile_wgsl(
            "broken",
            "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
            "main",
        )
        .unwrap_err();
    assert!(matches!(err, CohortError::ShaderCompile { .. }), "{err}");
}

#[test]
fn a_lost_device_is_reported_as_device_lost() {
    // A device of its own, so the shared one stays usable for the other tests.
    if gpu().is_none() {
        return;
    }
    let g = GpuBackend::from_env().unwrap();
    let t = g.tensor(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(g.read(&t).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    g.runtime().device().destroy();
    let err = g.read(&t).unwrap_err();
    assert!(matches!(err, CohortError::DeviceLost(_)), "{err}");
}

#[test]
fn a_cooperative_matrix_layout_the_kernel_cannot_run_is_a_config_error() {
    for bad in ["4x2", "2x2:2", "ax2:2x2", ""] {
        let err = bad.parse::<cohort::gpu::CoopLayout>().unwrap_err();
        assert!(matches!(err, CohortError::InvalidConfig(_)), "{bad}: {err}");
    }
    let Some(g) = gpu() else { return };
    if !g.runtime().caps().shader_f16 {
        return; // emulation needs f16 shaders; the parse errors above ran anyway
    }
    // Fragments 5 down (at most 4), a tile that is not square, 64 staged elements per invocation
    // (at most 32), more than 64 subgroups each way.
    // Grids of subgroups so large that their products overflowed u32 (a wrapped product could
    // pass the checks that the unclamped kernel relies on).
    for layout in [
        "2x2:5x2",
        "2x2:2x1",
        "1x1:4x4",
        "268435458x2:1x1",
        "65x65:1x1",
    ] {
        let err = GpuBackend::new(&GpuOptions {
            coop: cohort::gpu::CoopChoice::Emulate,
            coop_layout: Some(layout.parse().unwrap()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, CohortError::InvalidConfig(_)),
            "{layout}: {err}"
        );
    }
}
