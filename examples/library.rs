//! Linking cohort as a library: train a 2-peer cohort on the embedded digits by Deep Mutual
//! Learning, on a hardware GPU when there is one and on the CPU otherwise (as the CLI's
//! `--device auto`: a software adapter such as lavapipe trains slower than the CPU backend;
//! `COHORT_ADAPTER` may still name one), then save a checkpoint,
//! evaluate the reloaded cohort and ask it for predictions on a few rows.
//!
//! ```text
//! cargo run --release --example library
//! ```

use cohort::{
    checkpoint, parse_peers, Activation, Backend, CpuBackend, DataSource, GpuBackend, GpuOptions,
    Result, Standardizer, TrainConfig, Trainer,
};

fn run<B: Backend>(backend: &B) -> Result<()> {
    println!("backend: {}", backend.describe());
    // Data: the UCI digits compiled into the crate, standardised with training statistics.
    let mut split = DataSource::Digits.load()?;
    let standardizer = Standardizer::fit(&split.train)?;
    standardizer.apply(&mut split.train)?;
    standardizer.apply(&mut split.test)?;

    // Two different peers, mutual learning with α = 1 and T = 2.
    let peers = parse_peers("_-128-_,_-64-64-_", split.train.cols, 10, Activation::Relu)?;
    let mut config = TrainConfig::new(peers);
    config.alpha = 1.0;
    config.temperature = 2.0;
    config.epochs = 5;

    let mut trainer = Trainer::new(backend, config)?;
    trainer.fit(
        &split,
        |_, report| {
            let accs: Vec<String> = report
                .peers
                .iter()
                .map(|p| format!("{:.1}%", 100.0 * p.test_accuracy))
                .collect();
            println!(
                "epoch {}: peers {}  ensemble {:.1}%",
                report.epoch,
                accs.join(" "),
                100.0 * report.ensemble_accuracy
            );
            Ok(())
        },
        |_| {},
    )?;

    // Save, reload into a fresh trainer, and evaluate it.
    let path = std::env::temp_dir().join("cohort-example.safetensors");
    checkpoint::save(&trainer, Some(&standardizer), &path)?;
    let mut reloaded = checkpoint::load(&path)?.restore(backend, None)?;
    let test = reloaded.upload(&split.test)?;
    let eval = reloaded.evaluate(&test)?;
    let peers: Vec<String> = (eval.accuracy.iter())
        .map(|a| format!("{:.1}%", 100.0 * a))
        .collect();
    println!(
        "reloaded from {}: test accuracy {}, ensemble {:.1}%",
        path.display(),
        peers.join(" "),
        100.0 * eval.ensemble_accuracy
    );

    // Predictions for new rows (standardised as the training data was): the first three test
    // rows here, the ensemble's class with its probability and each peer's for that class.
    let rows = &split.test.features[..3 * split.test.cols];
    let predictions = reloaded.predict(rows)?;
    let classes = predictions.classes;
    for (row, &class) in predictions.ensemble_classes().iter().enumerate() {
        let p = predictions.ensemble[row * classes + class];
        let per_peer: Vec<String> = (0..predictions.peer_count())
            .filter_map(|peer| predictions.peer_probability(peer, row, class))
            .map(|p| format!("{p:.3}"))
            .collect();
        println!(
            "row {row}: class {class} (probability {p:.3}; peers {}), label {}",
            per_peer.join(", "),
            split.test.labels[row]
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut options = GpuOptions::from_env()?;
    options.hardware_only |= options.adapter.is_none();
    match GpuBackend::new(&options) {
        Ok(gpu) => run(&gpu),
        // No (hardware) adapter: the CPU backend. Anything else (an adapter named in COHORT_ADAPTER
        // that is not there, a COHORT_* value this device cannot honour) is an error to fix.
        Err(
            e @ cohort::CohortError::NoAdapter {
                requested: None, ..
            },
        ) => {
            eprintln!("{e}; using the CPU backend");
            run(&CpuBackend)
        }
        Err(e) => Err(e),
    }
}
