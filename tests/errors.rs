//! Bad input gets a typed error, never a panic: each error the library promises is provoked here.

mod common;

use cohort::gpu::GpuOptions;
use cohort::ops::{CrossEntropySpec, KlSpec, MatmulSpec, OptimizerStep, ReduceSpec};
use cohort::{Backend, CohortError, CpuBackend, DType, GpuBackend, TensorInfo};
use common::gpu;

/// SGD with momentum 0.9 at learning rate 0.1, its gradient scaled by `grad_scale`.
fn sgd(grad_scale: f32) -> OptimizerStep {
    OptimizerStep::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
        grad_scale,
    }
}

fn shape_errors<B: Backend>(b: &B) {
    let x = b.zeros(&[4, 3], DType::F32).unwrap();
    // Any backend's tensors print (generic code can report them).
    assert!(format!("{x:?}").contains("F32"), "{x:?}");
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

    // An optimizer step with a gradient scale that is not finite and positive, or another
    // number out of its range (a NaN learning rate and Adam's beta1 of 1 gave NaN weights).
    let mut w = b.zeros(&[4], DType::F32).unwrap();
    let grad = b.zeros(&[4], DType::F32).unwrap();
    let mut velocity = vec![b.zeros(&[4], DType::F32).unwrap()];
    let mut moments = vec![
        b.zeros(&[4], DType::F32).unwrap(),
        b.zeros(&[4], DType::F32).unwrap(),
    ];
    let adam_with = |beta1: f32, eps: f32| OptimizerStep::Adam {
        lr: 0.1,
        beta1,
        beta2: 0.999,
        eps,
        weight_decay: 0.0,
        decoupled: true,
        t: 1,
        grad_scale: 1.0,
    };
    let with_sgd = |f: fn(&mut OptimizerStep)| {
        let mut step = sgd(1.0);
        f(&mut step);
        step
    };
    let mut bad_steps: Vec<(OptimizerStep, &str)> = [0.0, -1.0, f32::NAN, f32::INFINITY]
        .into_iter()
        .map(|s| (sgd(s), "gradient scale"))
        .collect();
    bad_steps.extend([
        (
            with_sgd(|s| {
                if let OptimizerStep::Sgd { lr, .. } = s {
                    *lr = f32::NAN
                }
            }),
            "learning rate",
        ),
        (
            with_sgd(|s| {
                if let OptimizerStep::Sgd { momentum, .. } = s {
                    *momentum = 1.0
                }
            }),
            "momentum",
        ),
        (
            with_sgd(|s| {
                if let OptimizerStep::Sgd { weight_decay, .. } = s {
                    *weight_decay = -0.1
                }
            }),
            "weight decay",
        ),
        (adam_with(1.0, 1e-8), "betas"),
        (adam_with(0.9, 0.0), "epsilon"),
    ]);
    for (step, what) in bad_steps {
        let states = match step {
            OptimizerStep::Sgd { .. } => &mut velocity,
            OptimizerStep::Adam { .. } => &mut moments,
        };
        match b.optimizer_step(&step, &mut w, &grad, states) {
            Err(CohortError::InvalidConfig(why)) => assert!(why.contains(what), "{why}"),
            other => panic!("{step:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    // The same rule with its numbers in range runs.
    b.optimizer_step(&adam_with(0.9, 1e-8), &mut w, &grad, &mut moments)
        .unwrap();
    // States of the wrong type, count or size, and Adam's step 0 (its bias correction would
    // divide by zero).
    let adam = OptimizerStep::Adam {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
        t: 1,
        grad_scale: 1.0,
    };
    let state = |shape: &[usize], dtype| b.zeros(shape, dtype).unwrap();
    for (step, mut states, why) in [
        (
            sgd(1.0),
            vec![state(&[4], DType::F16)],
            "state must be F32, got F16",
        ),
        (
            sgd(1.0),
            vec![state(&[4], DType::U32)],
            "state must be F32, got U32",
        ),
        (sgd(1.0), vec![], "needs 1 state tensors, got 0"),
        (
            adam,
            vec![state(&[4], DType::F32)],
            "needs 2 state tensors, got 1",
        ),
        (
            adam,
            vec![state(&[4], DType::F32), state(&[5], DType::F32)],
            "state of 5 elements",
        ),
    ] {
        match b.optimizer_step(&step, &mut w, &grad, &mut states) {
            Err(CohortError::ShapeMismatch {
                op: "optimizer",
                detail,
            }) => assert!(detail.contains(why), "{detail}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    let mut moments = vec![state(&[4], DType::F32), state(&[4], DType::F32)];
    assert!(matches!(
        b.optimizer_step(&adam.at_step(0), &mut w, &grad, &mut moments),
        Err(CohortError::InvalidConfig(_))
    ));
    assert!(b
        .optimizer_step(&adam.at_step(1), &mut w, &grad, &mut moments)
        .is_ok());

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

/// Spec values out of their range and operands the loops would run past: typed errors (the
/// CPU twins index by these shapes, so each check also keeps them from panicking).
fn spec_and_operand_errors<B: Backend>(b: &B) {
    use cohort::ops::{Axpby, DmlLossSpec};
    let is_shape = |r: cohort::Result<()>, want: &str| match r {
        Err(CohortError::ShapeMismatch { op, .. }) if op == want => {}
        other => panic!("{want}: expected a ShapeMismatch, got {other:?}"),
    };
    let is_config = |r: cohort::Result<()>, what: &str| {
        assert!(
            matches!(r, Err(CohortError::InvalidConfig(_))),
            "{what}: {r:?}"
        )
    };
    let f32s = |shape: &[usize]| b.zeros(shape, DType::F32).unwrap();
    let u32s = |shape: &[usize]| b.zeros(shape, DType::U32).unwrap();
    // Label smoothing outside [0, 1), in the CE and the fused DML loss.
    let (logits, labels) = (f32s(&[2, 4, 3]), u32s(&[4]));
    let (mut ce_rows, mut dz) = (f32s(&[2, 4]), f32s(&[2, 4, 3]));
    let mut dml_rows = f32s(&[2, 2, 4]);
    let dml = DmlLossSpec {
        label_smoothing: 0.0,
        ce_scale: 0.25,
        temperature: 2.0,
        kl_scale: 0.25,
        peers: 0..2,
    };
    assert!(b
        .dml_loss(&logits, &labels, &mut dml_rows, &mut dz, &dml)
        .is_ok());
    for label_smoothing in [1.0, -0.1, f32::NAN] {
        let ce = CrossEntropySpec {
            label_smoothing,
            grad_scale: 1.0,
        };
        let r = b.softmax_ce(&logits, &labels, &mut ce_rows, &mut dz, &ce);
        is_config(r, "softmax_ce smoothing");
        let spec = DmlLossSpec {
            label_smoothing,
            ..dml.clone()
        };
        let r = b.dml_loss(&logits, &labels, &mut dml_rows, &mut dz, &spec);
        is_config(r, "dml_loss smoothing");
    }
    // Temperatures that are not positive, or so small that 1/T is infinite in f32 (the GPU
    // kernels' rows came out NaN) or T² is not a normal f32 (NaN KL rows: 0·inf), and peer
    // ranges empty or past the stack.
    for temperature in [0.0, -1.0, f32::INFINITY, 1e-40, 2e-38, 1e-20] {
        let spec = DmlLossSpec {
            temperature,
            ..dml.clone()
        };
        let r = b.dml_loss(&logits, &labels, &mut dml_rows, &mut dz, &spec);
        is_config(r, "dml_loss temperature");
        let spec = KlSpec {
            temperature,
            grad_scale: 1.0,
            accumulate: false,
            peers: 0..2,
        };
        let r = b.kl_div(&logits, &mut ce_rows, &mut dz, &spec);
        is_config(r, "kl_div temperature");
    }
    // Gradient factors that are not finite (every gradient came out NaN, without an error).
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let ce = CrossEntropySpec {
            label_smoothing: 0.0,
            grad_scale: scale,
        };
        let r = b.softmax_ce(&logits, &labels, &mut ce_rows, &mut dz, &ce);
        is_config(r, "softmax_ce grad_scale");
        let kl = KlSpec {
            temperature: 1.0,
            grad_scale: scale,
            accumulate: false,
            peers: 0..2,
        };
        is_config(
            b.kl_div(&logits, &mut ce_rows, &mut dz, &kl),
            "kl_div grad_scale",
        );
        for spec in [
            DmlLossSpec {
                ce_scale: scale,
                ..dml.clone()
            },
            DmlLossSpec {
                kl_scale: scale,
                ..dml.clone()
            },
        ] {
            let r = b.dml_loss(&logits, &labels, &mut dml_rows, &mut dz, &spec);
            is_config(r, "dml_loss scales");
        }
    }
    for peers in [1..3, 1..1, 2..2] {
        let spec = DmlLossSpec {
            peers: peers.clone(),
            ..dml.clone()
        };
        let r = b.dml_loss(&logits, &labels, &mut dml_rows, &mut dz, &spec);
        is_shape(r, "dml_loss");
        let spec = KlSpec {
            temperature: 1.0,
            grad_scale: 1.0,
            accumulate: false,
            peers,
        };
        is_shape(b.kl_div(&logits, &mut ce_rows, &mut dz, &spec), "kl_div");
    }
    // Products whose batches disagree, or batched operands into an unbatched C.
    let spec = MatmulSpec::default();
    let r = b.matmul(
        &f32s(&[2, 4, 3]),
        &f32s(&[3, 3, 5]),
        &mut f32s(&[2, 4, 5]),
        &spec,
    );
    is_shape(r, "matmul");
    let r = b.matmul(&f32s(&[2, 4, 3]), &f32s(&[3, 5]), &mut f32s(&[4, 5]), &spec);
    is_shape(r, "matmul");
    // A sum over an axis the tensor does not have.
    let r = b.reduce_sum(&f32s(&[3, 4]), 2, &mut f32s(&[1]), &ReduceSpec::scaled(1.0));
    is_shape(r, "reduce_sum");
    // Conversions between the same type, or of different sizes.
    is_shape(b.convert(&f32s(&[4]), &mut f32s(&[4])), "convert");
    let r = b.convert(&f32s(&[4]), &mut b.zeros(&[6], DType::F16).unwrap());
    is_shape(r, "convert");
    // axpby over tensors of different sizes.
    let k = Axpby {
        a: 1.0,
        b: 1.0,
        c: 0.0,
    };
    is_shape(b.axpby(Some(&f32s(&[3])), &mut f32s(&[4]), &k), "axpby");
    // Accuracy counts without the ensemble's slot.
    let r = b.count_correct(&logits, &labels, &mut u32s(&[2]));
    is_shape(r, "count_correct");
}

#[test]
fn cpu_backend_rejects_bad_shapes() {
    shape_errors(&CpuBackend);
    spec_and_operand_errors(&CpuBackend);
}

#[test]
fn gpu_backend_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    shape_errors(g);
    spec_and_operand_errors(g);
    // More peers than one GPU dispatch holds (the configuration caps a cohort there too).
    let peers = cohort::gpu::MAX_PEERS + 1;
    let logits = g.zeros(&[peers, 1, 2], DType::F32).unwrap();
    let labels = g.zeros(&[1], DType::U32).unwrap();
    let mut counts = g.zeros(&[peers + 1], DType::U32).unwrap();
    let mut rows = g.zeros(&[peers, 1], DType::F32).unwrap();
    let mut dz = g.zeros(&[peers, 1, 2], DType::F32).unwrap();
    let kl = KlSpec {
        temperature: 1.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..peers,
    };
    for r in [
        g.count_correct(&logits, &labels, &mut counts),
        g.kl_div(&logits, &mut rows, &mut dz, &kl),
    ] {
        assert!(
            matches!(&r, Err(CohortError::ShapeMismatch { detail, .. })
                if detail.contains(&format!("at most {}", cohort::gpu::MAX_PEERS))),
            "{r:?}"
        );
    }
    // The kernel checks' own shape arguments (as `cohort check` and the tests pass them).
    let step = sgd(1.0);
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
    // 2⁶² on a 64-bit host, 2³⁰ on a 32-bit one: two or three of them overflow both; two
    // usize::MAX overflow u64's bytes on either.
    let huge = 1usize << (usize::BITS - 2);
    for shape in [
        &[usize::MAX, usize::MAX][..],
        &[huge, huge, huge],
        &[2, 64, huge, huge],
    ] {
        for dtype in [DType::F32, DType::F16] {
            let err = b.zeros(shape, dtype).map(|_| "a tensor").unwrap_err();
            assert!(
                matches!(err, CohortError::BufferTooLarge { .. }),
                "{shape:?}: {err}"
            );
            // Each of these sizes is past u64's: said to be so, not printed as u64::MAX bytes.
            assert!(
                err.to_string().contains("more than 2^64 bytes"),
                "{shape:?}: {err}"
            );
        }
    }
    // One within u64 is given in bytes (on a 32-bit host too, where it overflows usize).
    let err = b
        .zeros(&[1 << 30, 1 << 31], DType::F32)
        .map(|_| "a tensor")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("buffer of 9223372036854775808 bytes"),
        "{err}"
    );
    let err = b
        .tensor(&[huge, huge], &[])
        .map(|_| "a tensor")
        .unwrap_err();
    assert!(
        matches!(err, CohortError::ShapeMismatch { .. }) && err.to_string().contains("usize"),
        "{err}"
    );
}

#[test]
fn a_product_with_more_workgroups_than_the_device_allows_is_refused() {
    let Some(g) = gpu() else { return };
    // One workgroup per product of a batch: one more than a grid dimension holds.
    let batch = g.runtime().caps().max_workgroups_per_dim as usize + 1;
    let a = g.zeros(&[batch, 1, 1], DType::F32).unwrap();
    let b = g.zeros(&[batch, 1, 1], DType::F32).unwrap();
    let mut c = g.zeros(&[batch, 1, 1], DType::F32).unwrap();
    let err = g
        .matmul(&a, &b, &mut c, &MatmulSpec::default())
        .unwrap_err();
    assert!(matches!(err, CohortError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("allows at most"), "{err}");
    // The backend goes on working.
    let t = g.tensor(&[2], &[1.0, 2.0]).unwrap();
    assert_eq!(g.read(&t).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn a_cohort_too_large_for_the_backend_is_refused_not_aborted() {
    use cohort::config::{parse_peers, TrainConfig};
    use cohort::ops::Activation;
    use cohort::trainer::Trainer;
    // Two peers of 64-2⁴⁰-10: each layer's weights take 2⁴⁰·64·2·4 bytes (512 TiB), more than
    // any host or device holds, though every shape is in range. On a 32-bit host 64-2²⁴-10:
    // 8 GiB, past what one allocation there holds (isize::MAX), so refused before it is tried.
    let width: u64 = if usize::BITS >= 64 { 1 << 40 } else { 1 << 24 };
    let peers = parse_peers(&format!("2x{width}"), 64, 10, Activation::Relu).unwrap();
    let config = TrainConfig::new(peers);
    let err = Trainer::new(&CpuBackend, config.clone()).err().unwrap();
    match usize::BITS {
        64 => assert!(matches!(err, CohortError::HostMemory { .. }), "{err}"),
        _ => assert!(matches!(err, CohortError::BufferTooLarge { .. }), "{err}"),
    }
    assert!(
        err.to_string().contains(&format!("[2, 64, {width}]")),
        "{err}"
    );
    let Some(g) = gpu() else { return };
    let err = Trainer::new(g, config).err().unwrap();
    assert!(matches!(err, CohortError::BufferTooLarge { .. }), "{err}");
}

#[test]
fn features_beyond_f16s_range_are_refused_under_mixed_precision() {
    use cohort::{parse_peers, Activation, Dataset, TrainConfig, Trainer};
    let peers = parse_peers("2x8", 3, 2, Activation::Relu).unwrap();
    let mut config = TrainConfig::new(peers);
    let mut features = vec![0.5; 12];
    features[7] = 70000.0; // row 2, column 1
    let data = Dataset::new(features, vec![0, 1, 0, 1], 3, 2).unwrap();
    fn check<B: Backend>(b: &B, config: &TrainConfig, data: &Dataset) {
        let trainer = Trainer::new(b, config.clone()).unwrap();
        match trainer.upload(data) {
            Ok(_) => assert!(!config.mixed_precision, "70000 was uploaded as f16"),
            Err(err) => {
                assert!(config.mixed_precision, "{err}");
                assert!(matches!(err, CohortError::NonFinite { .. }), "{err}");
                assert!(
                    err.to_string()
                        .contains("row 2, column 1 of the data set as given")
                        && err.to_string().contains("holds 70000"),
                    "{err}"
                );
            }
        }
        // Predictions read their rows through the same upload.
        let mut trainer = Trainer::new(b, config.clone()).unwrap();
        assert_eq!(
            trainer.predict(&data.features).is_err(),
            config.mixed_precision
        );
    }
    for mixed in [false, true] {
        config.mixed_precision = mixed;
        check(&CpuBackend, &config, &data);
        if let Some(g) = gpu() {
            check(g, &config, &data);
        }
    }
    // The edge: f16 rounds 65519 to its largest value, 65504, and -65520 to an infinity.
    let trainer = Trainer::new(&CpuBackend, config).unwrap();
    for (value, accepted) in [(65519.0, true), (-65520.0, false)] {
        assert_eq!(half::f16::from_f32(value).is_finite(), accepted);
        let mut edge = data.clone();
        edge.features[7] = value;
        assert_eq!(trainer.upload(&edge).is_ok(), accepted, "{value}");
    }
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
fn tensors_of_another_gpu_backend_are_refused() {
    // Each GPU backend owns its device. Bound beside this device's buffers, another's tensor
    // gave wrong numbers without an error (a product of ones read [-0.63, 0.49, ...]), and a
    // write into one went nowhere; now every way a tensor reaches the device refuses it.
    let Some(g) = gpu() else { return };
    let other = GpuBackend::from_env().unwrap();
    let ones = [1.0f32; 4];
    let a = g.tensor(&[2, 2], &ones).unwrap();
    let mut foreign = other.tensor(&[2, 2], &ones).unwrap();
    let mut c = g.zeros(&[2, 2], DType::F32).unwrap();
    let refused = |what: &str, r: cohort::Result<()>| match r {
        Err(CohortError::InvalidConfig(why)) => {
            assert!(why.contains("another GPU backend"), "{what}: {why}")
        }
        r => panic!("{what}: expected InvalidConfig, got {r:?}"),
    };
    let spec = MatmulSpec::default();
    refused("matmul", g.matmul(&a, &foreign, &mut c, &spec));
    refused("matmul into", g.matmul(&a, &a, &mut foreign, &spec));
    refused("read", g.read(&foreign).map(|_| ()));
    refused("write", g.write(&mut foreign, &ones));
    refused("copy", g.copy(&foreign, 0, &mut c, 0, 4));
    refused(
        "axpby",
        g.axpby(
            Some(&foreign),
            &mut c,
            &cohort::ops::Axpby {
                a: 1.0,
                b: 0.0,
                c: 0.0,
            },
        ),
    );
    refused(
        "optimizer",
        g.optimizer_step(
            &sgd(1.0),
            &mut c,
            &foreign,
            &mut [g.zeros(&[2, 2], DType::F32).unwrap()],
        ),
    );
    // The backend's own tensors still work, and the other backend's with it.
    g.matmul(&a, &a, &mut c, &spec).unwrap();
    assert_eq!(g.read(&c).unwrap(), [2.0; 4]);
    assert_eq!(other.read(&foreign).unwrap(), ones);
}

#[test]
fn a_lost_device_is_reported_as_device_lost() {
    // A device of its own, so the shared one stays usable for the other tests.
    if gpu().is_none() {
        return;
    }
    let g = GpuBackend::from_env().unwrap();
    let mut t = g.tensor(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(g.read(&t).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    g.runtime().device().destroy();
    let err = g.read(&t).unwrap_err();
    assert!(matches!(err, CohortError::DeviceLost(_)), "{err}");
    // Uploads too (a staging buffer a lost device cannot make panicked in wgpu's helper), and
    // whatever else is asked of the backend: errors, not panics.
    let err = g.tensor(&[4], &[1.0; 4]).unwrap_err();
    assert!(matches!(err, CohortError::DeviceLost(_)), "{err}");
    let err = g.write(&mut t, &[5.0; 4]).unwrap_err();
    assert!(matches!(err, CohortError::DeviceLost(_)), "{err}");
    let err = g
        .zeros(&[4], DType::F32)
        .and_then(|z| g.read(&z))
        .unwrap_err();
    assert!(matches!(err, CohortError::DeviceLost(_)), "{err}");
    // Lost with work recorded and not yet sent (an upload), or asked for an upload first: the
    // first error already says so (they were reported as the invalid buffers wgpu complained
    // of, CohortError::Gpu, until a later call found the device lost).
    type Loss = fn(&GpuBackend, &cohort::GpuTensor) -> cohort::Result<()>;
    let losses: [(&str, Loss); 2] = [
        ("a read", |g, t| g.read(t).map(drop)),
        ("an upload", |g, _| g.tensor(&[4], &[1.0; 4]).map(drop)),
    ];
    for (first, after_loss) in losses {
        let g = GpuBackend::from_env().unwrap();
        let t = g.tensor(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        g.runtime().device().destroy();
        let err = after_loss(&g, &t).unwrap_err();
        assert!(matches!(err, CohortError::DeviceLost(_)), "{first}: {err}");
    }
}

#[test]
fn a_cooperative_matrix_layout_the_kernel_cannot_run_is_a_config_error() {
    // Fragments 5 down (at most 4), a tile that is not square, more than 64 subgroups each
    // way, grids of subgroups so large that their products overflowed u32 (a wrapped product
    // could pass the checks that the unclamped kernel relies on): refused as written, where
    // the kernel would never run too (they were taken until it did).
    let shapes = [
        ("2x2:5x2", "1 to 4 fragments"),
        (
            "2x2:2x1",
            "the tile must be square (4 fragments down, 2 across)",
        ),
        ("268435458x2:1x1", "1 to 64 subgroups"),
        ("65x65:1x1", "1 to 64 subgroups"),
    ];
    let forms = ["4x2", "2x2:2", "ax2:2x2", ""].map(|bad| (bad, "write SG_ROWSxSG_COLS:FRxFC"));
    for (bad, says) in forms.into_iter().chain(shapes) {
        let err = bad.parse::<cohort::gpu::CoopLayout>().unwrap_err();
        assert!(
            matches!(err, CohortError::InvalidConfig(_)) && err.to_string().contains(says),
            "{bad}: {err}"
        );
    }
    let Some(g) = gpu() else { return };
    if !g.runtime().caps().shader_f16 {
        // The parse errors above ran anyway.
        common::skip(
            "f16",
            "the layout checks need f16 shaders (the emulated kernel), which this adapter lacks",
        );
        return;
    }
    // The same shapes built field by field (the parser never makes them) are refused by the
    // backend too, and so is 64 staged elements per invocation (at most 32), which depends on
    // the device's subgroup size.
    let layout = |[sg_rows, sg_cols, fr, fc]: [u32; 4]| cohort::gpu::CoopLayout {
        sg_rows,
        sg_cols,
        fr,
        fc,
    };
    for layout in [
        layout([2, 2, 5, 2]),
        layout([2, 2, 2, 1]),
        "1x1:4x4".parse().unwrap(),
        layout([268435458, 2, 1, 1]),
        layout([65, 65, 1, 1]),
    ] {
        let err = GpuBackend::new(&GpuOptions {
            coop: cohort::gpu::CoopChoice::Emulate,
            coop_layout: Some(layout),
            ..GpuOptions::from_env().unwrap()
        })
        .unwrap_err();
        assert!(
            matches!(err, CohortError::InvalidConfig(_)),
            "{layout}: {err}"
        );
    }
}

/// Runs `f` on one damaged file, failing the test with `what` where it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| panic!("{what}: panicked instead of returning an error"))
}

/// The file lengths a sweep truncates a file of `len` bytes to: about a hundred, the last byte
/// included.
fn truncations(len: usize) -> impl Iterator<Item = usize> {
    (0..len).step_by((len / 97).max(1)).chain([len - 1])
}

#[test]
fn damaged_checkpoints_are_errors_or_load_never_panics() {
    use cohort::data::synthetic::blobs;
    use cohort::rng::Rng;
    use cohort::{checkpoint, parse_peers, Activation, Standardizer, TrainConfig, Trainer};
    let dir = std::env::temp_dir().join(format!("cohort-damaged-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut split = blobs(40, 3, 4, 1).unwrap().split(0.25, 0).unwrap();
    let standardizer = Standardizer::fit(&split.train).unwrap();
    standardizer.apply(&mut split.train).unwrap();
    standardizer.apply(&mut split.test).unwrap();
    let peers = parse_peers("_-8-_,_-6-6-_", 4, 3, Activation::Relu).unwrap();
    let mut config = TrainConfig::new(peers);
    config.epochs = 1;
    let mut trainer = Trainer::new(&CpuBackend, config).unwrap();
    trainer.fit(&split, |_, _| Ok(()), |_| {}).unwrap();
    let path = dir.join("good.safetensors");
    checkpoint::save(&trainer, Some(&standardizer), &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let rows = &split.test.features[..2 * split.test.cols];
    // Load, restore and predict as far as the damaged file allows; whether each got that far.
    let damaged = dir.join("damaged.safetensors");
    let try_file = |bytes: &[u8], what: &str| {
        std::fs::write(&damaged, bytes).unwrap();
        no_panic(what, || {
            let ckpt = checkpoint::load(&damaged)?;
            ckpt.restore(&CpuBackend, None)?.predict(rows).map(|_| ())
        })
    };
    assert!(try_file(&good, "the undamaged file").is_ok());
    // Some other file: said to be no checkpoint (the library's own words were "header too
    // large").
    let other = try_file(b"seed,run,alpha\n0,0,0\n", "a CSV file").unwrap_err();
    assert!(
        matches!(other, CohortError::CorruptFile { .. })
            && other.to_string().contains("not a safetensors checkpoint"),
        "{other}"
    );
    // The standardisation: half of it, a deviation of 0 or below, lengths that differ, or
    // fewer features than the cohort's inputs.
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let rewritten = |edit: &dyn Fn(&str, &mut Vec<f32>) -> bool| {
        let owned: Vec<(String, Vec<usize>, Vec<f32>)> = st
            .tensors()
            .into_iter()
            .filter_map(|(n, v)| {
                let mut data: Vec<f32> = bytemuck::pod_collect_to_vec(v.data());
                let kept = edit(&n, &mut data);
                let shape = match n.starts_with("data.") {
                    true => vec![data.len()],
                    false => v.shape().to_vec(),
                };
                kept.then_some((n, shape, data))
            })
            .collect();
        let views = owned.iter().map(|(n, shape, data)| {
            let shape = shape.clone();
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape,
                bytemuck::cast_slice(data),
            );
            (n.clone(), view.unwrap())
        });
        safetensors::serialize(views, header.metadata().clone()).unwrap()
    };
    for (what, edit, expect) in [
        (
            "no data.std",
            &(|n: &str, _: &mut Vec<f32>| n != "data.std") as &dyn Fn(&str, &mut Vec<f32>) -> bool,
            "data.mean without data.std",
        ),
        (
            "a deviation of -1",
            &|n: &str, d: &mut Vec<f32>| {
                if n == "data.std" {
                    d[1] = -1.0;
                }
                true
            },
            "data.std, element 1: -1 is no standard deviation",
        ),
        (
            "a subnormal deviation (fit puts 1 there: dividing by it overflows)",
            &|n: &str, d: &mut Vec<f32>| {
                if n == "data.std" {
                    d[2] = 1e-45;
                }
                true
            },
            "data.std, element 2: 1e-45 is no standard deviation",
        ),
        (
            "a deviation short",
            &|n: &str, d: &mut Vec<f32>| {
                if n == "data.std" {
                    d.pop();
                }
                true
            },
            "4 means but 3 deviations",
        ),
        (
            "one feature short of the cohort's inputs, both",
            &|n: &str, d: &mut Vec<f32>| {
                if n.starts_with("data.") {
                    d.pop();
                }
                true
            },
            "data.mean and data.std standardise 3 features; the cohort takes 4 inputs",
        ),
    ] {
        std::fs::write(&damaged, rewritten(edit)).unwrap();
        match checkpoint::load(&damaged) {
            Err(err @ CohortError::CorruptFile { .. }) => {
                assert!(err.to_string().contains(expect), "{what}: {err}")
            }
            other => panic!("{what}: {:?}", other.map(|_| "a checkpoint")),
        }
    }
    // A peer's tensor missing, of another shape, or one besides those its configuration makes:
    // refused as the file's when it loads (found when a trainer was built on a device, the
    // file unnamed, and an extra tensor was ignored).
    let owned: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                v.shape().to_vec(),
                bytemuck::pod_collect_to_vec(v.data()),
            )
        })
        .collect();
    let with = |tensors: &[(String, Vec<usize>, Vec<f32>)]| {
        let views = tensors.iter().map(|(n, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            );
            (n.clone(), view.unwrap())
        });
        std::fs::write(
            &damaged,
            safetensors::serialize(views, header.metadata().clone()).unwrap(),
        )
        .unwrap();
        checkpoint::load(&damaged)
    };
    let missing: Vec<_> = owned
        .iter()
        .filter(|(n, ..)| n != "peer1.layer1.weight")
        .cloned()
        .collect();
    let mut reshaped = owned.clone();
    let bias = reshaped
        .iter_mut()
        .find(|(n, ..)| n == "peer0.layer0.bias")
        .unwrap();
    bias.1 = vec![1, bias.2.len()];
    let mut extra = owned.clone();
    extra.push(("peer2.layer0.bias".into(), vec![8], vec![0.0; 8]));
    for (what, tensors, expect) in [
        ("missing", missing, "tensor peer1.layer1.weight is missing"),
        (
            "reshaped",
            reshaped,
            "tensor peer0.layer0.bias has shape [1, 8]; its configuration makes it [8]",
        ),
        (
            "extra",
            extra,
            "tensor peer2.layer0.bias belongs to no peer and layer of its configuration",
        ),
    ] {
        match with(&tensors) {
            Err(err @ CohortError::CorruptFile { .. }) => {
                assert!(err.to_string().contains(expect), "{what}: {err}")
            }
            other => panic!("{what}: {:?}", other.map(|_| "a checkpoint")),
        }
    }
    assert!(with(&owned).is_ok(), "rewritten as it was");
    // A configuration that parses but could not train (a layer 0 wide) is refused as the
    // file's, when it loads (it was found when a trainer was built, the file unnamed).
    let mut metadata = header.metadata().clone().unwrap();
    let config = metadata.get_mut("config").unwrap();
    assert!(config.contains("[4,8,3]"), "{config}");
    *config = config.replace("[4,8,3]", "[4,0,3]");
    let views = st.tensors();
    std::fs::write(
        &damaged,
        safetensors::serialize(views, Some(metadata)).unwrap(),
    )
    .unwrap();
    match checkpoint::load(&damaged) {
        Err(err @ CohortError::CorruptFile { .. }) => assert!(
            err.to_string()
                .contains("its configuration: invalid configuration: peer 4-0-3"),
            "{err}"
        ),
        other => panic!("a layer 0 wide: {:?}", other.map(|_| "a checkpoint")),
    }
    for len in truncations(good.len()) {
        let err = try_file(&good[..len], &format!("truncated to {len} bytes")).unwrap_err();
        assert!(
            matches!(err, CohortError::CorruptFile { .. }),
            "truncated to {len} bytes: {err}"
        );
        // Said so, once the length field is whole (8 bytes) and within the header's.
        if len >= 8 {
            assert!(err.to_string().contains("truncated"), "{len} bytes: {err}");
        }
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"tail");
    let err = try_file(&longer, "4 bytes added").unwrap_err();
    assert!(err.to_string().contains("bytes added after them"), "{err}");
    // Bytes overwritten: half in the header (JSON: names, shapes, offsets, the configuration),
    // half anywhere. Each either loads (a weight changed) or is refused with an error.
    let mut rng = Rng::new(7);
    let (mut refused, mut loaded) = (0, 0);
    for i in 0..1000 {
        let mut bytes = good.clone();
        let at = match i % 2 {
            0 => rng.below(header_end),
            _ => rng.below(good.len()),
        };
        let value = rng.below(256) as u8;
        bytes[at] = value;
        match try_file(&bytes, &format!("byte {at} set to {value:#04x}")) {
            Ok(()) => loaded += 1,
            Err(_) => refused += 1,
        }
    }
    eprintln!("1000 damaged checkpoints: {refused} refused, {loaded} loaded and predicted");
    assert!(refused > 0 && loaded > 0, "the sweep reached both outcomes");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_that_are_no_regular_file_or_too_large_are_refused_before_reading() {
    // A device would be read forever (/dev/zero until memory ran out), a FIFO would wait for a
    // writer, and a file larger than memory allows would be read whole: each is refused from
    // its metadata. (The large one is sparse: a terabyte that takes no disk.)
    let dir = std::env::temp_dir().join(format!("cohort-odd-checkpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut refused = vec![(dir.clone(), "a folder")];
    #[cfg(unix)]
    refused.push((std::path::PathBuf::from("/dev/zero"), "not a regular file"));
    match made {
        Ok(status) if status.success() => refused.push((fifo, "not a regular file")),
        _ => common::loud("SKIPPED: no mkfifo here, so the FIFO case did NOT run"),
    }
    for (path, expect) in refused {
        let err = cohort::checkpoint::load(&path).unwrap_err();
        assert!(
            matches!(err, CohortError::InvalidConfig(_)) && err.to_string().contains(expect),
            "{}: {err}",
            path.display()
        );
    }
    let huge = dir.join("huge.safetensors");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let err = cohort::checkpoint::load(&huge).unwrap_err();
    assert!(
        matches!(err, CohortError::HostMemory { bytes, .. } if bytes == 1 << 40),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_idx_and_csv_files_are_errors_never_panics() {
    use cohort::data::{csv, idx};
    use cohort::rng::Rng;
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("cohort-damaged-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(11);
    // IDX images and labels, plain and gzipped: every truncation is an error; a file with an
    // overwritten byte is refused or read (a pixel, a label or a size changed), never a panic,
    // and each kind of file reaches both outcomes.
    let (images, labels) = (dir.join("images.idx"), dir.join("labels.idx"));
    let pixels: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 37 % 256) as u8).collect();
    idx::write_images(&images, &pixels, 5, 4, 3).unwrap();
    idx::write_labels(&labels, &[0, 1, 2, 1, 0]).unwrap();
    let damaged = dir.join("damaged");
    for (file, is_images) in [(&images, true), (&labels, false)] {
        let plain = std::fs::read(file).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gzipped = gz.finish().unwrap();
        let read = |bytes: &[u8], what: &str| {
            std::fs::write(&damaged, bytes).unwrap();
            no_panic(what, || match is_images {
                true => idx::read_images(&damaged).map(|_| ()),
                false => idx::read_labels(&damaged).map(|_| ()),
            })
        };
        for (bytes, kind) in [(&plain, "plain"), (&gzipped, "gzipped")] {
            assert!(read(bytes, kind).is_ok(), "{kind} {}", file.display());
            for len in truncations(bytes.len()) {
                let what = format!("{kind} {} truncated to {len}", file.display());
                assert!(read(&bytes[..len], &what).is_err(), "{what}");
            }
            let (mut refused, mut read_back) = (0, 0);
            for _ in 0..200 {
                let mut bytes = bytes.clone();
                let at = rng.below(bytes.len());
                bytes[at] = rng.below(256) as u8;
                match read(&bytes, &format!("{kind} {}: byte {at}", file.display())) {
                    Ok(()) => read_back += 1,
                    Err(_) => refused += 1,
                }
            }
            assert!(
                refused > 0 && read_back > 0,
                "{kind} {}: {refused} refused, {read_back} read",
                file.display()
            );
        }
    }
    // CSV text with characters replaced by others that matter to the reader (separators, line
    // ends, quotes, comments, signs, exponents, letters, characters of several bytes).
    let good = "# a comment\nlabel,a,b,c\n0,1.5,-2,3e1\n1,\"4\",5,6\r\n2,7,8,9\n\n1,0.5,0.25,1\n";
    let (parsed, _) = csv::parse(good, &Default::default(), std::path::Path::new("t.csv")).unwrap();
    assert_eq!(parsed.labels, [0, 1, 2, 1]);
    assert_eq!(parsed.features[..4], [1.5, -2.0, 30.0, 4.0]);
    let (mut refused, mut read_back) = (0, 0);
    let swaps = [
        ',', '\n', '\r', '"', '#', '-', '+', 'e', '.', '0', '9', 'x', ' ', 'é', '€', '🦀',
    ];
    let chars: Vec<char> = good.chars().collect();
    for _ in 0..2000 {
        let mut text = chars.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(text.len());
            text[at] = swaps[rng.below(swaps.len())];
        }
        let text: String = text.into_iter().collect();
        for label_column in [csv::LabelColumn::Auto, csv::LabelColumn::None] {
            let options = csv::CsvOptions {
                label_column,
                ..Default::default()
            };
            let results = no_panic(&format!("csv {text:?}"), || {
                let origin = std::path::Path::new("t.csv");
                [
                    csv::parse_rows(&text, &options, origin).is_ok(),
                    csv::parse(&text, &options, origin).is_ok(),
                ]
            });
            for ok in results {
                if ok {
                    read_back += 1;
                } else {
                    refused += 1;
                }
            }
        }
    }
    // Damage must be told apart from harmless changes: both outcomes occur.
    assert!(
        refused > 100 && read_back > 100,
        "csv: {refused} refused, {read_back} read"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The names of the files in `dir`.
fn file_names(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

#[test]
fn atomic_writes_keep_permissions_refuse_read_only_files_and_clear_stale_temporaries() {
    use cohort::checkpoint::write_atomic;
    let dir = std::env::temp_dir().join(format!("cohort-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.csv");
    std::fs::write(&path, "old").unwrap();
    // The new file takes the old one's permissions (a private checkpoint stays private).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    write_atomic(&path, b"new").unwrap();
    // A read-only file is left alone, with an error that says why.
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&path, permissions.clone()).unwrap();
    let err = write_atomic(&path, b"newer").unwrap_err();
    assert!(matches!(err, CohortError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("out.csv is read-only"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&path, permissions).unwrap();
    // A temporary file a killed process of this PID namespace left
    // (`.NAME.PID-NAMESPACE-N.cohort-tmp`; no PID reaches 2²² + 1) is removed by the next write
    // once a minute old; a fresh one, a live process's, another namespace's (a container's,
    // whose PIDs say nothing here) or another file's stays.
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok().and_then(|l| {
        let l = l.to_str()?.to_string();
        l.strip_prefix("pid:[")?
            .strip_suffix(']')?
            .parse::<u64>()
            .ok()
    });
    if let Some(ns) = namespace {
        let minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(300);
        let temporary = |name: String, old: bool| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).unwrap();
            if old {
                file.set_modified(minutes_ago).unwrap();
            }
            path
        };
        let stale = temporary(format!(".out.csv.4194305-{ns:x}-0.cohort-tmp"), true);
        let kept = [
            temporary(format!(".out.csv.4194305-{ns:x}-1.cohort-tmp"), false),
            temporary(
                format!(".out.csv.{}-{ns:x}-f.cohort-tmp", std::process::id()),
                true,
            ),
            temporary(format!(".out.csv.4194305-{:x}-0.cohort-tmp", ns + 1), true),
            temporary(format!(".other.csv.4194305-{ns:x}-0.cohort-tmp"), true),
            // The temporary of a file named `out.csv.2-x`, not of out.csv.
            temporary(format!(".out.csv.2-x.4194305-{ns:x}-0.cohort-tmp"), true),
        ];
        write_atomic(&path, b"newest").unwrap();
        assert!(!stale.exists(), "a dead process's old temporary stays");
        for p in kept {
            assert!(p.exists(), "{} was removed", p.display());
            std::fs::remove_file(p).unwrap();
        }
    } else {
        write_atomic(&path, b"newest").unwrap();
        common::loud(
            "SKIPPED: no /proc/self/ns/pid here, so stale temporary files are not looked for",
        );
    }
    // A name as long as most file systems take (255 bytes) is written too: the temporary's name
    // is then a hash.
    let long = dir.join("l".repeat(251) + ".csv");
    write_atomic(&long, b"long").unwrap();
    assert_eq!(std::fs::read(&long).unwrap(), b"long");
    std::fs::remove_file(&long).unwrap();
    // Nothing else left in the folder.
    assert_eq!(file_names(&dir), ["out.csv"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "newest");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn atomic_writes_from_several_threads_to_one_file_all_land_whole() {
    // Threads of one process writing one file (a matmul plan file written by tests in parallel,
    // say): when they shared a temporary file's name, one truncated another's half-written file
    // or renamed it away. Each write must succeed and leave a whole file.
    use cohort::checkpoint::write_atomic;
    let dir = std::env::temp_dir().join(format!("cohort-atomic-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plans.json");
    let contents: Vec<Vec<u8>> = (0..8u8).map(|t| vec![b'a' + t; 200_000]).collect();
    std::thread::scope(|s| {
        for bytes in &contents {
            let path = &path;
            s.spawn(move || {
                for _ in 0..20 {
                    write_atomic(path, bytes).unwrap();
                }
            });
        }
    });
    let last = std::fs::read(&path).unwrap();
    assert!(
        contents.contains(&last),
        "a torn file of {} bytes",
        last.len()
    );
    let names = file_names(&dir);
    assert_eq!(names, ["plans.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_tensor_work_without_f16_tensors_is_unsupported() {
    // A GPU backend that offers no F16 tensors (declined here; an adapter without f16 shaders
    // alike) refuses the work that needs them with an Unsupported error, and goes on working.
    let Some(g) = gpu() else { return };
    let plain = GpuBackend::new(&GpuOptions {
        adapter: Some(g.runtime().info().name.clone()),
        no_f16_tensors: true,
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    assert!(!plain.f16_tensors());
    let unsupported = |r: cohort::Result<()>, what: &str| match r {
        Err(CohortError::Unsupported(why)) => assert!(why.contains("F16 tensors"), "{why}"),
        other => panic!("{what}: expected Unsupported, got {other:?}"),
    };
    let f32s = |shape: &[usize]| plain.tensor(shape, &vec![0.5; shape.iter().product()]);
    let (a, b) = (f32s(&[4, 3]).unwrap(), f32s(&[3, 2]).unwrap());
    let mut half = plain.zeros(&[4, 2], DType::F16).unwrap();
    let mut c = f32s(&[4, 2]).unwrap();
    let a16 = plain.tensor_f16(&[4, 3], &[0.5; 12]).unwrap();
    let r = plain.matmul(&a16, &b, &mut c, &MatmulSpec::default());
    unsupported(r, "a product of F16 operands");
    unsupported(plain.convert(&c, &mut half), "convert");
    let step = sgd(1.0);
    let grad = f32s(&[4, 2]).unwrap();
    let mut velocity = [f32s(&[4, 2]).unwrap()];
    let r = plain.optimizer_step_f16_copy(&step, &mut c, &grad, &mut velocity, &mut half);
    unsupported(r, "an update with an F16 copy");
    plain
        .matmul(&a, &b, &mut c, &MatmulSpec::default())
        .unwrap();
    assert_eq!(plain.read(&c).unwrap(), vec![0.75; 8]);
}

#[test]
fn public_helpers_take_degenerate_and_huge_inputs_without_panicking() {
    // Found by writing programs against the library: each of these panicked (a division by
    // zero, chunks of zero, a multiplication that overflowed).
    assert_eq!(
        cohort::gpu::row_lanes(10, 0, 64),
        16,
        "0 classes per lane taken as 1"
    );
    assert_eq!(
        cohort::gpu::row_lanes(10, 1, 0),
        1,
        "at most 0 lanes taken as 1"
    );
    let huge = cohort::PeerSpec {
        layers: vec![usize::MAX, usize::MAX, 2],
        activation: cohort::ops::Activation::Relu,
    };
    assert_eq!(no_panic("parameters", || huge.parameters()), usize::MAX);
    let none = cohort::trainer::Predictions {
        rows: 1,
        classes: 0,
        peers: vec![],
        ensemble: vec![],
        ensemble_class: vec![],
    };
    assert!(no_panic("ensemble_classes", || none.ensemble_classes()).is_empty());
    assert_eq!(
        no_panic("peer_classes", || none.peer_classes(0)),
        Some(vec![])
    );
    let two = cohort::trainer::Predictions {
        rows: 1,
        classes: 2,
        peers: vec![0.25, 0.75],
        ensemble: vec![0.25, 0.75],
        ensemble_class: vec![1],
    };
    assert_eq!(two.peer_classes(0), Some(vec![1]));
    assert_eq!((two.peer_count(), none.peer_count()), (1, 0));
    assert_eq!(two.peer_probability(0, 0, 1), Some(0.75));
    for (peer, row, class) in [(1, 0, 0), (0, 1, 0), (0, 0, 2), (usize::MAX, 0, 0)] {
        assert_eq!(
            two.peer_probability(peer, row, class),
            None,
            "{peer} {row} {class}"
        );
    }
    assert_eq!(
        no_panic("a far peer", || two.peer_classes(usize::MAX)),
        None
    );
    // Kernel checks of shapes past what a usize counts are errors.
    let Some(g) = gpu() else { return };
    let spec = KlSpec {
        temperature: 1.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..2,
    };
    let err = no_panic("kl_div", || {
        cohort::validate::kl_div(g, &[usize::MAX, 2, 2], &spec, 1)
    });
    assert!(
        matches!(err, Err(CohortError::ShapeMismatch { .. })),
        "{err:?}"
    );
    let spec = MatmulSpec::default();
    let dims = (usize::MAX / 2, 4, 3);
    let err = no_panic("matmul", || {
        cohort::validate::matmul(g, cohort::validate::Batching::None, dims, &spec, 1)
    });
    assert!(err.is_err(), "{err:?}");
}
