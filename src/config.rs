//! Training configuration: the cohort's peers, the mutual-learning weights, the schedule, the
//! optimizer and its learning-rate schedule. Serialisable, so checkpoints carry it.

use serde::{Deserialize, Serialize};

use crate::error::{CohortError, Result};
use crate::ops::{Activation, OptimizerStep};

/// The highest softmax temperature accepted (see [`TrainConfig::validate`]).
pub const MAX_TEMPERATURE: f32 = 1000.0;

/// One peer network: an MLP given by its layer widths, input first and classes last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// Layer widths `[inputs, hidden…, classes]`, at least two entries.
    pub layers: Vec<usize>,
    /// Hidden-layer activation (the output layer has none).
    pub activation: Activation,
}

impl PeerSpec {
    /// Number of parameters (weights and biases), `usize::MAX` where there are more.
    pub fn parameters(&self) -> usize {
        (self.layers.windows(2))
            .map(|w| w[0].saturating_mul(w[1]).saturating_add(w[1]))
            .fold(0, usize::saturating_add)
    }

    /// `784-512-10` style name.
    pub fn name(&self) -> String {
        self.layers
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// Parses a cohort description against the data's input and class counts.
///
/// Comma-separated peers, each optionally prefixed by `Nx` to repeat it:
/// - `784-512-10`: full widths, checked against the data;
/// - `512` or `256-256` preceded by `_`: `_-256-256-_` fills inputs and classes from the data;
/// - a single number `512`: one hidden layer of that width.
///
/// So `2x512` is two peers with one hidden layer of 512, and `784-512-10,784-256-256-10` two
/// different peers. A peer whose ends do not match the data is an error.
pub fn parse_peers(
    text: &str,
    inputs: usize,
    classes: usize,
    activation: Activation,
) -> Result<Vec<PeerSpec>> {
    let bad = |why: String| CohortError::InvalidConfig(format!("peer spec '{text}': {why}"));
    let mut peers = Vec::new();
    for entry in text.split(',').map(str::trim) {
        let (count, body) = match entry.split_once(['x', 'X', '×']) {
            Some((n, body)) => match n.trim().parse::<usize>() {
                Ok(count) => (count, body.trim()),
                // Past usize: more peers than a cohort holds, as the check below says.
                Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                    (usize::MAX, body.trim())
                }
                Err(_) => return Err(bad(format!("'{n}' is not a repeat count"))),
            },
            None => (1, entry),
        };
        if count == 0 {
            return Err(bad("a repeat count of 0".into()));
        }
        let most = crate::gpu::MAX_PEERS;
        // (peers.len() ≤ most here, so the subtraction cannot wrap; an addition could.)
        if count > most - peers.len() {
            return Err(bad(format!("more than {most} peers")));
        }
        let parts: Vec<&str> = body.split('-').map(str::trim).collect();
        // Alone, `_` is neither end: it would have been read as the inputs, as a hidden width.
        if parts == ["_"] {
            return Err(bad(
                "'_' stands for the inputs or the classes at an end of a peer (e.g. _-256-_); \
                 a peer of one hidden layer is its width (e.g. 2x256)"
                    .into(),
            ));
        }
        let mut layers = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let width = if *p == "_" && (i == 0 || i + 1 == parts.len()) {
                if i == 0 {
                    inputs
                } else {
                    classes
                }
            } else {
                p.parse::<usize>().map_err(|e| match e.kind() {
                    std::num::IntErrorKind::PosOverflow => bad(format!(
                        "a layer of width {p} is past what a {}-bit host addresses",
                        usize::BITS
                    )),
                    // `2x-16`, `64--10`, `64-`: a width left out (a negative one reads so).
                    std::num::IntErrorKind::Empty if parts.len() == 1 => {
                        bad("a peer without widths (e.g. 2x256 or 784-256-10)".into())
                    }
                    std::num::IntErrorKind::Empty => bad(
                        "a layer width is missing (widths are joined by '-', e.g. 784-256-10; \
                         no width is negative)"
                            .into(),
                    ),
                    _ => bad(format!("'{p}' is not a layer width")),
                })?
            };
            if width == 0 {
                return Err(bad("a layer of width 0".into()));
            }
            layers.push(width);
        }
        if layers.len() == 1 {
            layers = vec![inputs, layers[0], classes];
        }
        if layers[0] != inputs {
            return Err(bad(format!(
                "peer {body} takes {} inputs but the data has {inputs} features",
                layers[0]
            )));
        }
        if *layers.last().unwrap_or(&0) != classes {
            return Err(bad(format!(
                "peer {body} has {} outputs but the data has {classes} classes",
                layers.last().unwrap_or(&0)
            )));
        }
        for _ in 0..count {
            peers.push(PeerSpec {
                layers: layers.clone(),
                activation,
            });
        }
    }
    Ok(peers)
}

/// How the peers take turns within a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// One forward pass of every peer, then all losses, backward passes and updates. Same-shape
    /// peers share every dispatch.
    #[default]
    Simultaneous,
    /// The paper's Algorithm 1: update peer 1 against the others' current predictions, recompute
    /// its predictions, then update peer 2 against those, and so on.
    Alternating,
}

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum OptimizerKind {
    /// SGD with optional (Nesterov) momentum.
    Sgd {
        /// Momentum μ.
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam (L2 weight decay in the gradient).
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
    },
    /// AdamW (decoupled weight decay).
    AdamW {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
    },
}

/// Learning rate over the run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f32,
    },
    /// Cosine decay from the base rate to 0 over the run (after warm-up).
    Cosine,
}

/// Optimizer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f32,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    pub weight_decay: f32,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Linear warm-up from 0 over this many steps.
    pub warmup_steps: usize,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            lr: 0.05,
            weight_decay: 5e-4,
            schedule: LrSchedule::Cosine,
            warmup_steps: 0,
        }
    }
}

impl OptimizerConfig {
    /// Checks every hyperparameter: a finite learning rate > 0, and the rule's numbers as
    /// [`OptimizerStep::validate`] checks them (weight decay ≥ 0, momentum and Adam's decays in
    /// [0, 1), ε > 0), and a step schedule that decays every ≥ 1 epochs by a finite factor > 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(CohortError::InvalidConfig(s));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "learning rate must be > 0, got {}",
                short_number(self.lr)
            ));
        }
        if let LrSchedule::Step { every, gamma } = self.schedule {
            if every == 0 || !(gamma.is_finite() && gamma > 0.0) {
                return bad(format!(
                    "a step schedule decays every ≥ 1 epochs by a factor > 0, got every {every}, factor {}",
                    short_number(gamma)
                ));
            }
        }
        self.step(self.lr, 1.0, 1).validate()
    }

    /// The rule's update at step `t` (1-based, for Adam's bias correction) with learning rate
    /// `lr`, on gradients scaled by `grad_scale` (mixed precision's loss scale undone).
    pub fn step(&self, lr: f32, grad_scale: f32, t: u32) -> OptimizerStep {
        match self.kind {
            OptimizerKind::Sgd { momentum, nesterov } => OptimizerStep::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay: self.weight_decay,
                grad_scale,
            },
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => OptimizerStep::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay: self.weight_decay,
                decoupled: matches!(self.kind, OptimizerKind::AdamW { .. }),
                t,
                grad_scale,
            },
        }
    }

    /// The learning rate at `step` (0-based, counting all steps) of a run of `total_steps`,
    /// where an epoch has `steps_per_epoch` steps.
    pub fn lr_at(&self, step: usize, total_steps: usize, steps_per_epoch: usize) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Step { every, gamma } => {
                let epoch = step / steps_per_epoch.max(1);
                // The exponent stops at i32::MAX (powi's argument), where γ^n is long 0 or 1.
                let decays = (epoch / every.max(1)).min(i32::MAX as usize) as i32;
                self.lr * gamma.powi(decays)
            }
            LrSchedule::Cosine => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                // Past the last step (a loop that runs on) it stays at the end, not wrapping.
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The peers of the cohort (K ≥ 2, or 1 for a plain baseline with `alpha` 0).
    pub peers: Vec<PeerSpec>,
    /// Weight α of the mean KL term; 0 is independent training.
    pub alpha: f32,
    /// Ramp α linearly from 0 over this many steps (0: the full α from the first step), so
    /// untrained peers do not pull each other towards noise.
    #[serde(default)]
    pub alpha_warmup_steps: usize,
    /// Softmax temperature T of the KL term (the loss is scaled by T²), at most
    /// [`MAX_TEMPERATURE`].
    pub temperature: f32,
    /// Label smoothing of the cross-entropy term.
    pub label_smoothing: f32,
    /// Order of peer updates within a step.
    pub schedule: Schedule,
    /// Optimizer and learning-rate schedule.
    pub optimizer: OptimizerConfig,
    /// Epochs to train.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed of the initial weights and the data order.
    pub seed: u64,
    /// Mixed precision: matmul inputs in f16 (tensor cores where available), f32 accumulation
    /// and f32 master weights, optimizer state and losses. Where the backend has F16 tensors
    /// the matmuls read f16 copies of the weights (written by every update), and the hidden
    /// activations and the inputs are stored as F16; elsewhere f32 operands are rounded as they
    /// are loaded.
    #[serde(default)]
    pub mixed_precision: bool,
}

impl TrainConfig {
    /// A configuration with cohort's defaults for the given peers: α 1, T 1, simultaneous
    /// updates, [`OptimizerConfig::default`], batch 64, seed 0, f32, and 10 epochs (the CLI's
    /// `train` asks for 20 unless told otherwise).
    pub fn new(peers: Vec<PeerSpec>) -> Self {
        TrainConfig {
            peers,
            alpha: 1.0,
            alpha_warmup_steps: 0,
            temperature: 1.0,
            label_smoothing: 0.0,
            schedule: Schedule::Simultaneous,
            optimizer: OptimizerConfig::default(),
            epochs: 10,
            batch_size: 64,
            seed: 0,
            mixed_precision: false,
        }
    }

    /// Checks that the configuration makes sense before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(CohortError::InvalidConfig(s));
        if self.peers.is_empty() {
            return bad("a cohort needs at least one peer".into());
        }
        if self.peers.len() > crate::gpu::MAX_PEERS {
            return bad(format!("at most {} peers", crate::gpu::MAX_PEERS));
        }
        if self.alpha > 0.0 && self.peers.len() < 2 {
            return bad(
                "mutual learning (alpha > 0) needs at least two peers (NxSPEC gives N of one \
                 spec, e.g. 2x256; alpha 0 trains a peer alone)"
                    .into(),
            );
        }
        let first = &self.peers[0].layers;
        for p in &self.peers {
            if p.layers.len() < 2 || p.layers.contains(&0) {
                return bad(format!(
                    "peer {} needs at least input and output widths",
                    p.name()
                ));
            }
            if p.layers[0] != first[0] || p.layers.last() != first.last() {
                return bad(format!(
                    "peer {} differs from {} in inputs or classes",
                    p.name(),
                    self.peers[0].name()
                ));
            }
        }
        // As a data set has (Dataset::new): one output would be a softmax of 1 and no gradient.
        if self.classes() < 2 {
            return bad(format!(
                "peers with {} output: a classifier needs at least 2 classes",
                self.classes()
            ));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad(format!(
                "alpha must be ≥ 0, got {}",
                short_number(self.alpha)
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "temperature must be > 0, got {}",
                short_number(self.temperature)
            ));
        }
        // The KL term is scaled by T²: below f32's range it would be zero (no mutual learning,
        // silently). Above 1000 the softened distributions differ by less than f32 resolves
        // near 1/C: the KL rows, summed as terms of order r² since 2026-12-06, stay within 1e-4
        // (plus 1e-6) of the f64 reference at T = 1000, but the gradient's p_i − p_j keeps each
        // probability's rounding, ~1e-3 of itself there and growing with T (before the rows'
        // change, T²·KL itself was 0.2% off at T = 1000 on lavapipe, 17% at 10⁴).
        if !(self.temperature * self.temperature).is_normal() || self.temperature > MAX_TEMPERATURE
        {
            return bad(format!(
                "temperature {} is outside what f32 computes the KL term for (about 1.1e-19 to \
                 {MAX_TEMPERATURE})",
                short_number(self.temperature)
            ));
        }
        if let Some(why) = outside_unit_interval("label smoothing", &[self.label_smoothing]) {
            return bad(why);
        }
        self.optimizer.validate()?;
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch size must be ≥ 1".into());
        }
        Ok(())
    }

    /// The KL weight at optimizer step `step` (0-based), after the warm-up ramp.
    pub fn alpha_at(&self, step: usize) -> f32 {
        if step >= self.alpha_warmup_steps {
            self.alpha
        } else {
            self.alpha * (step + 1) as f32 / self.alpha_warmup_steps as f32
        }
    }

    /// Input features of every peer (0 for a cohort without peers).
    pub fn inputs(&self) -> usize {
        self.peers
            .first()
            .and_then(|p| p.layers.first())
            .copied()
            .unwrap_or(0)
    }

    /// Classes of every peer (0 for a cohort without peers).
    pub fn classes(&self) -> usize {
        self.peers
            .first()
            .and_then(|p| p.layers.last())
            .copied()
            .unwrap_or(0)
    }
}

/// A number (f32 or f64) as a person would write it in a setting or a message: the shortest
/// digits that read back as it (`0.05`), or scientific notation where plain digits would run
/// long (`1e30`, not 31 digits; `1e-7`, not `0.0000001`).
pub fn short_number<T>(v: T) -> String
where
    T: Copy + Into<f64> + std::fmt::Display + std::fmt::LowerExp,
{
    // From f32's 1e-4 (just under f64's), so that an f32 0.0001 is not written 1e-4.
    let x: f64 = v.into();
    match x == 0.0 || (f64::from(1e-4f32)..1e5).contains(&x.abs()) {
        true => v.to_string(),
        false => format!("{v:e}"),
    }
}

/// Why `values` (named `what`) are refused where one is outside [0, 1): "… must be in [0, 1),
/// got …", and where one is exactly 1, that a number typed nearer 1 than f32 holds (e.g.
/// 0.999999999) was read as 1. `None` where all are inside.
pub(crate) fn outside_unit_interval(what: &str, values: &[f32]) -> Option<String> {
    if values.iter().all(|v| (0.0..1.0).contains(v)) {
        return None;
    }
    let got: Vec<String> = values.iter().map(|&v| short_number(v)).collect();
    let hint = match values.contains(&1.0) {
        true => " (f32's largest number below 1 is 0.99999994: one nearer 1 reads as 1)",
        false => "",
    };
    Some(format!(
        "{what} must be in [0, 1), got {}{hint}",
        got.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn optimizer(schedule: LrSchedule, warmup_steps: usize) -> OptimizerConfig {
        OptimizerConfig {
            lr: 0.1,
            schedule,
            warmup_steps,
            ..Default::default()
        }
    }

    #[test]
    fn short_numbers_read_as_written() {
        let cases = [
            (0.05, "0.05"),
            (0.0, "0"),
            (-2.5, "-2.5"),
            (0.0001, "0.0001"),
            (99999.0, "99999"),
            (1e5, "1e5"),
            (1e30, "1e30"),
            (3e38, "3e38"),
            (-1e-7, "-1e-7"),
            (f32::MAX, "3.4028235e38"),
        ];
        for (v, want) in cases {
            assert_eq!(short_number(v), want, "{v}");
            assert_eq!(
                short_number(v).parse::<f32>().unwrap(),
                v,
                "{want} reads back"
            );
        }
        // f64s alike, in their own shortest digits (a test fraction of 1e-300 was printed as
        // 300 digits).
        for (v, want) in [
            (0.2, "0.2"),
            (1e-300, "1e-300"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(short_number(v), want, "{v}");
        }
        // A temperature under its range names it so, not as twenty digits.
        let mut config = TrainConfig::new(parse_peers("2x8", 4, 3, Activation::Relu).unwrap());
        config.temperature = 1e-19;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("temperature 1e-19 is outside"), "{err}");
    }

    #[test]
    fn learning_rate_schedules() {
        let constant = optimizer(LrSchedule::Constant, 0);
        assert_eq!(constant.lr_at(0, 100, 10), 0.1);
        assert_eq!(constant.lr_at(99, 100, 10), 0.1);
        let step = optimizer(
            LrSchedule::Step {
                every: 2,
                gamma: 0.5,
            },
            0,
        );
        assert_eq!(step.lr_at(19, 100, 10), 0.1); // epoch 1
        assert_eq!(step.lr_at(20, 100, 10), 0.05); // epoch 2
        assert!((step.lr_at(45, 100, 10) - 0.025).abs() < 1e-9); // epoch 4

        // usize::MAX / 2 decays (2³¹ - 1 on 32-bit hosts, 2⁶³ - 1 on 64-bit): the exponent
        // stops at i32::MAX (cast as it was, it wrapped to none).
        assert_eq!(step.lr_at(usize::MAX, usize::MAX, 1), 0.0);
        let cosine = optimizer(LrSchedule::Cosine, 0);
        assert_eq!(cosine.lr_at(0, 100, 10), 0.1);
        assert!((cosine.lr_at(50, 100, 10) - 0.05).abs() < 1e-6);
        assert!(cosine.lr_at(99, 100, 10) < 1e-3);
        let warm = optimizer(LrSchedule::Cosine, 10);
        assert!((warm.lr_at(0, 110, 10) - 0.01).abs() < 1e-7);
        assert!((warm.lr_at(9, 110, 10) - 0.1).abs() < 1e-7);
        assert_eq!(
            warm.lr_at(10, 110, 10),
            0.1,
            "cosine starts after the warm-up"
        );
    }

    #[test]
    fn optimizer_hyperparameters_are_checked() {
        let ok = OptimizerConfig::default();
        assert!(ok.validate().is_ok());
        let adam = |beta1, beta2, eps| OptimizerConfig {
            kind: OptimizerKind::Adam { beta1, beta2, eps },
            ..Default::default()
        };
        assert!(adam(0.9, 0.999, 1e-8).validate().is_ok());
        let sgd = |momentum| OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum,
                nesterov: false,
            },
            ..Default::default()
        };
        assert!(sgd(0.0).validate().is_ok());
        let step = |every, gamma| OptimizerConfig {
            schedule: LrSchedule::Step { every, gamma },
            ..Default::default()
        };
        assert!(step(1, 0.5).validate().is_ok());
        let bad = [
            OptimizerConfig {
                lr: f32::NAN,
                ..Default::default()
            },
            OptimizerConfig {
                weight_decay: -1e-4,
                ..Default::default()
            },
            OptimizerConfig {
                weight_decay: f32::INFINITY,
                ..Default::default()
            },
            sgd(1.0),
            sgd(-0.1),
            sgd(f32::NAN),
            adam(1.0, 0.999, 1e-8),
            adam(0.9, -0.5, 1e-8),
            adam(0.9, 0.999, 0.0),
            step(0, 0.5),
            step(1, 0.0),
            step(1, f32::INFINITY),
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(CohortError::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn a_configuration_gives_its_rule_at_each_step() {
        let adamw = OptimizerConfig {
            kind: OptimizerKind::AdamW {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
            },
            weight_decay: 0.01,
            ..Default::default()
        };
        assert_eq!(
            adamw.step(0.002, 0.5, 7),
            OptimizerStep::Adam {
                lr: 0.002,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.01,
                decoupled: true,
                t: 7,
                grad_scale: 0.5,
            }
        );
        let adam = OptimizerConfig {
            kind: OptimizerKind::Adam {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
            },
            ..adamw.clone()
        };
        assert!(matches!(
            adam.step(0.002, 1.0, 1),
            OptimizerStep::Adam {
                decoupled: false,
                ..
            }
        ));
        assert_eq!(
            OptimizerConfig::default().step(0.1, 1.0, 3),
            OptimizerStep::Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
                grad_scale: 1.0,
            }
        );
        // A configuration's rule is refused with the step's own reason.
        let bad = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 1.0,
                nesterov: false,
            },
            ..Default::default()
        };
        let (from_config, from_step) = (bad.validate(), bad.step(bad.lr, 1.0, 1).validate());
        assert_eq!(format!("{from_config:?}"), format!("{from_step:?}"));
        assert!(format!("{from_config:?}").contains("momentum must be in [0, 1)"));
    }

    #[test]
    fn a_cohort_tells_at_least_two_classes_apart() {
        let peers = |classes| {
            let peer = PeerSpec {
                layers: vec![4, 8, classes],
                activation: Activation::Relu,
            };
            TrainConfig::new(vec![peer.clone(), peer])
        };
        let one = peers(1).validate().unwrap_err();
        assert!(one.to_string().contains("at least 2 classes"), "{one}");
        assert!(peers(2).validate().is_ok());
    }

    #[test]
    fn alpha_ramps_up_over_its_warm_up() {
        let mut c = TrainConfig::new(Vec::new());
        c.alpha = 2.0;
        assert_eq!(c.alpha_at(0), 2.0);
        c.alpha_warmup_steps = 4;
        assert_eq!(
            [c.alpha_at(0), c.alpha_at(1), c.alpha_at(3), c.alpha_at(100)],
            [0.5, 1.0, 2.0, 2.0]
        );
    }

    #[test]
    fn peer_specs_expand_and_check_the_data() {
        let relu = Activation::Relu;
        let peers = parse_peers("2x512,_-64-32-_,784-10", 784, 10, relu).unwrap();
        let layers: Vec<_> = peers.iter().map(|p| p.layers.clone()).collect();
        assert_eq!(
            layers,
            vec![
                vec![784, 512, 10],
                vec![784, 512, 10],
                vec![784, 64, 32, 10],
                vec![784, 10]
            ]
        );
        assert_eq!(peers[3].parameters(), 7850);
        // The repeat's x as users type it.
        for spelling in ["2X512", "2×512", "2 x 512"] {
            let peers = parse_peers(spelling, 784, 10, relu).unwrap();
            assert_eq!(peers.len(), 2, "{spelling}");
            assert_eq!(peers[1].layers, [784, 512, 10], "{spelling}");
        }
        for bad in [
            "0x5", "2x", "5-x-10", "784-0-10", "783-10", "784-9", "", "2x_", "_",
        ] {
            assert!(
                matches!(
                    parse_peers(bad, 784, 10, relu),
                    Err(CohortError::InvalidConfig(_))
                ),
                "{bad}"
            );
        }
        // A width left out is named so (it was "'' is not a layer width").
        for (bad, says) in [
            ("2x-16", "a layer width is missing"),
            ("784--10", "a layer width is missing"),
            ("2x", "a peer without widths"),
            ("2x256,", "a peer without widths"),
            ("2xabc", "'abc' is not a layer width"),
        ] {
            let err = parse_peers(bad, 784, 10, relu).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
