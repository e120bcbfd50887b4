//! Device memory accounting (`Runtime::memory`): tensors in use, the pool of idle buffers, the
//! peaks, and what a trainer holds. Each test opens a device of its own, so that no other test's
//! tensors move the counters.

mod common;

use cohort::config::{parse_peers, OptimizerConfig, OptimizerKind, TrainConfig};
use cohort::data::synthetic::blobs;
use cohort::ops::Activation;
use cohort::trainer::Trainer;
use cohort::{Backend, DType, GpuBackend};

/// A device of this test's own, or `None` (a loud skip; a failure under `CI=true`).
fn own_gpu() -> Option<GpuBackend> {
    common::gpu()?;
    Some(GpuBackend::from_env().expect("a second device on the adapter the tests use"))
}

/// Bytes a buffer for `bytes` bytes takes: the runtime rounds sizes up to 256.
fn allocated(bytes: usize) -> u64 {
    (bytes.max(16) as u64).next_multiple_of(256)
}

#[test]
fn tensors_count_in_use_then_pooled_until_trimmed() {
    let Some(gpu) = own_gpu() else { return };
    let rt = gpu.runtime();
    rt.trim_pool();
    rt.reset_memory_peak();
    let start = rt.memory();
    assert_eq!(start.pooled, 0);
    let size = allocated(12_345 * 4);

    let a = gpu.zeros(&[12_345], DType::F32).unwrap();
    let b = gpu.zeros(&[12_345], DType::F32).unwrap();
    let m = rt.memory();
    assert_eq!(m.in_use, start.in_use + 2 * size);
    assert_eq!(m.peak_in_use, m.in_use);
    assert_eq!(m.held(), start.held() + 2 * size);

    // Dropped tensors stay on the device, idle in the pool, and the peak remembers them.
    drop(a);
    drop(b);
    let m = rt.memory();
    assert_eq!((m.in_use, m.pooled), (start.in_use, 2 * size));
    assert_eq!(m.peak_in_use, start.in_use + 2 * size);
    assert_eq!(m.peak_held, start.held() + 2 * size);

    // A tensor of the same size takes a pooled buffer: no more memory held.
    let c = gpu.zeros(&[12_300], DType::F32).unwrap();
    let m = rt.memory();
    assert_eq!((m.in_use, m.pooled), (start.in_use + size, size));
    assert_eq!(m.held(), start.held() + 2 * size);

    // Trimming frees the idle buffer; resetting the peak starts it from what is in use now.
    rt.trim_pool();
    rt.reset_memory_peak();
    let m = rt.memory();
    assert_eq!((m.pooled, m.in_use), (0, start.in_use + size));
    assert_eq!((m.peak_in_use, m.peak_held), (m.in_use, m.in_use));
    drop(c);
    assert_eq!(rt.memory().in_use, start.in_use);
}

/// Two peers of 20-32-3 on blobs, with `optimizer`.
fn config(optimizer: OptimizerKind) -> TrainConfig {
    let peers = parse_peers("2x_-32-_", 20, 3, Activation::Relu).unwrap();
    let mut c = TrainConfig::new(peers);
    c.batch_size = 16;
    c.optimizer = OptimizerConfig {
        kind: optimizer,
        ..c.optimizer
    };
    c
}

#[test]
fn a_trainer_holds_its_model_and_gives_every_buffer_back() {
    let Some(gpu) = own_gpu() else { return };
    let rt = gpu.runtime();
    let data = blobs(64, 3, 20, 7).unwrap();
    let momentum = OptimizerKind::Sgd {
        momentum: 0.9,
        nesterov: false,
    };
    let adam = OptimizerKind::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    // Per layer, for the two peers side by side: weights, their gradient and the optimizer's
    // state of them (one tensor for SGD with momentum, two for Adam), and the bias and its
    // state; then one accuracy counter per peer and the ensemble.
    for (optimizer, states) in [(momentum, 1), (adam, 2)] {
        let start = rt.memory().in_use;
        let mut trainer = Trainer::new(&gpu, config(optimizer)).unwrap();
        let layer = |fan_in: usize, fan_out: usize| {
            (2 + states) * allocated(2 * fan_in * fan_out * 4)
                + (1 + states) * allocated(2 * fan_out * 4)
        };
        let model = layer(20, 32) + layer(32, 3) + allocated(3 * 4);
        assert_eq!(rt.memory().in_use - start, model, "{optimizer:?}");

        // A step takes more (the batch's workspace and scratch); all of it comes back when the
        // trainer and its data go.
        let resident = trainer.upload(&data).unwrap();
        let loaded = rt.memory().in_use;
        rt.reset_memory_peak();
        trainer
            .step(&resident, &(0..16).collect::<Vec<_>>())
            .unwrap();
        gpu.finish().unwrap();
        assert!(rt.memory().peak_in_use > loaded, "{optimizer:?}");
        drop(resident);
        drop(trainer);
        assert_eq!(rt.memory().in_use, start, "{optimizer:?}");
    }
}
