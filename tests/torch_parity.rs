//! cohort's training steps against PyTorch's, an oracle written by other people: a few steps of a
//! four-peer cohort (three architectures, one of them without hidden layers) under both
//! schedules, every activation, label smoothing and each optimizer, on the CPU backend and on
//! the GPU, written to JSON and replayed in float64 by `benches/reference/torch_parity.py`, which
//! compares the weights reached. Needs python3 with PyTorch (`.ci/run` installs it where it can):
//! without PyTorch the test says loudly that nothing was checked. The GPU machine has PyTorch,
//! so the staged tests check its GPU there.

mod common;

use cohort::config::{
    parse_peers, LrSchedule, OptimizerConfig, OptimizerKind, Schedule, TrainConfig,
};
use cohort::data::Dataset;
use cohort::ops::Activation;
use cohort::trainer::Trainer;
use cohort::{Backend, CpuBackend, Result};
use serde_json::{json, Map, Value};

const ROWS: usize = 48;
const COLS: usize = 12;
const CLASSES: usize = 5;

struct Case {
    name: &'static str,
    schedule: Schedule,
    activation: Activation,
    alpha: f32,
    temperature: f32,
    label_smoothing: f32,
    optimizer: OptimizerKind,
    lr: f32,
    weight_decay: f32,
}

fn cases() -> Vec<Case> {
    let sgd = |nesterov| OptimizerKind::Sgd {
        momentum: 0.9,
        nesterov,
    };
    let (beta1, beta2, eps) = (0.9, 0.999, 1e-8);
    let case = |name, schedule, activation, optimizer, weight_decay| Case {
        name,
        schedule,
        activation,
        alpha: 1.5,
        temperature: 2.0,
        label_smoothing: 0.0,
        optimizer,
        lr: 0.1,
        weight_decay,
    };
    use Activation::{Gelu, Relu, Tanh};
    use Schedule::{Alternating, Simultaneous};
    vec![
        case("simultaneous relu sgd", Simultaneous, Relu, sgd(false), 0.0),
        Case {
            label_smoothing: 0.1,
            ..case(
                "simultaneous gelu nesterov ls",
                Simultaneous,
                Gelu,
                sgd(true),
                1e-3,
            )
        },
        Case {
            alpha: 0.5,
            temperature: 1.0,
            lr: 0.05,
            ..case(
                "simultaneous tanh adam",
                Simultaneous,
                Tanh,
                OptimizerKind::Adam { beta1, beta2, eps },
                0.01,
            )
        },
        Case {
            label_smoothing: 0.05,
            lr: 0.05,
            ..case(
                "alternating relu adamw ls",
                Alternating,
                Relu,
                OptimizerKind::AdamW { beta1, beta2, eps },
                0.01,
            )
        },
        case(
            "alternating gelu nesterov",
            Alternating,
            Gelu,
            sgd(true),
            5e-4,
        ),
    ]
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Identity => "identity",
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
        Activation::Tanh => "tanh",
    }
}

/// The weights and biases of `trainer` by name.
fn parameters<B: Backend>(trainer: &Trainer<'_, B>) -> Result<Map<String, Value>> {
    Ok(trainer
        .named_tensors()?
        .into_iter()
        .filter(|(name, _)| name.ends_with(".weight") || name.ends_with(".bias"))
        .map(|(name, (shape, data))| (name, json!({"shape": shape, "data": data})))
        .collect())
}

/// Three steps of `case` on `backend` (batches of 16, 16 and 13 shuffled rows), as the script
/// reads them.
fn steps<B: Backend>(backend: &B, case: &Case) -> Result<Value> {
    let features = common::uniform(7, ROWS * COLS, -2.0, 2.0);
    let labels: Vec<u32> = (0..ROWS)
        .map(|i| ((i * 7 + i / 5) % CLASSES) as u32)
        .collect();
    let data = Dataset::new(features.clone(), labels.clone(), COLS, CLASSES)?;
    let order: Vec<usize> = (0..ROWS).map(|i| i * 29 % ROWS).collect();
    let batches = [&order[..16], &order[16..32], &order[32..45]];

    let peers = parse_peers("_-16-_,_-16-_,_-8-6-_,_-_", COLS, CLASSES, case.activation)?;
    let mut config = TrainConfig::new(peers);
    config.schedule = case.schedule;
    config.alpha = case.alpha;
    config.temperature = case.temperature;
    config.label_smoothing = case.label_smoothing;
    config.batch_size = 16;
    config.optimizer = OptimizerConfig {
        kind: case.optimizer,
        lr: case.lr,
        weight_decay: case.weight_decay,
        schedule: LrSchedule::Constant,
        warmup_steps: 0,
    };
    let mut trainer = Trainer::new(backend, config)?;
    let resident = trainer.upload(&data)?;
    let before = parameters(&trainer)?;
    for rows in batches {
        trainer.step(&resident, rows)?;
    }
    let after = parameters(&trainer)?;
    let (kind, momentum, nesterov, beta1, beta2, eps) = match case.optimizer {
        OptimizerKind::Sgd { momentum, nesterov } => ("sgd", momentum, nesterov, 0.0, 0.0, 0.0),
        OptimizerKind::Adam { beta1, beta2, eps } => ("adam", 0.0, false, beta1, beta2, eps),
        OptimizerKind::AdamW { beta1, beta2, eps } => ("adamw", 0.0, false, beta1, beta2, eps),
    };
    Ok(json!({
        "name": case.name,
        "schedule": match case.schedule {
            Schedule::Simultaneous => "simultaneous",
            Schedule::Alternating => "alternating",
        },
        "activation": activation_name(case.activation),
        "alpha": case.alpha,
        "temperature": case.temperature,
        "label_smoothing": case.label_smoothing,
        "optimizer": {"kind": kind, "lr": case.lr, "weight_decay": case.weight_decay,
            "momentum": momentum, "nesterov": nesterov, "beta1": beta1, "beta2": beta2, "eps": eps},
        "cols": COLS,
        "features": features,
        "labels": labels,
        "batches": batches,
        "before": before,
        "after": after,
    }))
}

/// Every case on `backend`, replayed by the script; false when PyTorch is missing (a loud skip).
fn check<B: Backend>(backend: &B) -> bool {
    let cases: Vec<Value> = cases()
        .iter()
        .map(|case| steps(backend, case).unwrap_or_else(|e| panic!("{}: {e}", case.name)))
        .collect();
    let path =
        std::env::temp_dir().join(format!("cohort-torch-parity-{}.json", std::process::id()));
    let file = json!({"backend": backend.describe(), "cases": cases});
    std::fs::write(&path, file.to_string()).unwrap();
    let out = common::python(
        "benches/reference/torch_parity.py",
        &[path.display().to_string()],
    );
    let _ = std::fs::remove_file(&path);
    let Some(out) = out else {
        return false;
    };
    let report = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => {
            common::loud(&format!("checked against PyTorch:\n{report}"));
            true
        }
        Some(2) => {
            common::skip(
                "torch",
                &format!(
                    "{}: the training steps were NOT compared with PyTorch",
                    report.trim()
                ),
            );
            false
        }
        _ => panic!(
            "cohort's steps differ from PyTorch's:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn training_steps_match_pytorch() {
    if !check(&CpuBackend) {
        return;
    }
    if let Some(gpu) = common::gpu() {
        check(gpu);
    }
}
