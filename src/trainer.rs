//! The cohort scheduler: builds the peers on a backend and runs the mutual-learning step.
//!
//! Same-shape peers form a *group* whose weights are stacked `[G, in, out]`, so each layer of the
//! whole group is one batched matmul. Every step, on the device and without readback:
//! 1. gather the mini-batch from the resident data set by an index buffer;
//! 2. forward every group (matmul, then bias + activation);
//! 3. fused softmax cross-entropy and KL over the stacked logits `[P, B, C]`, which give each
//!    peer's total logit gradient `(softmax − target)/B + α·T·(p_i − mean_j p_j)/B`;
//! 4. backward (matmuls with transposes, the activation backward fused into dX) and the
//!    optimizer (the bias gradients, column sums, formed inside the bias updates);
//! 5. per-step losses land in a GPU history buffer that is read once per logging interval.
//!
//! With [`Schedule::Alternating`] every peer is its own group, updated in turn against the others'
//! fresh predictions (Algorithm 1 of the paper).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::backend::{Backend, LayerUpdate};
use crate::config::{OptimizerKind, PeerSpec, Schedule, TrainConfig};
use crate::data::{batches, epoch_order, Dataset, Split};
use crate::error::{host_vec, CohortError, Result};
use crate::ops::{
    Activation, CrossEntropySpec, DmlLossSpec, MatmulSpec, OptimizerStep, ReduceSpec,
};
use crate::rng::Rng;
use crate::tensor::{DType, TensorInfo};

struct Layer<T> {
    w: T,
    /// The weights rounded to f16, written by every update, for mixed precision where the
    /// backend has F16 tensors: the matmuls then read half the bytes.
    w16: Option<T>,
    b: T,
    dw: T,
    w_state: Vec<T>,
    b_state: Vec<T>,
}

/// The names of the tensors a checkpoint holds for a layer whose optimizer keeps `states`
/// tensors per parameter, in [`Layer::saved`]'s order: `weight`, `bias`, `weight.state{s}`,
/// `bias.state{s}`.
fn layer_tensor_names(states: usize) -> Vec<String> {
    let mut names = vec!["weight".to_string(), "bias".to_string()];
    names.extend((0..states).map(|s| format!("weight.state{s}")));
    names.extend((0..states).map(|s| format!("bias.state{s}")));
    names
}

/// Optimizer state tensors per parameter tensor: SGD's momentum, Adam's two moments.
fn optimizer_states(kind: &OptimizerKind) -> usize {
    match kind {
        OptimizerKind::Sgd { .. } => 1,
        _ => 2,
    }
}

/// Every tensor a checkpoint of a cohort configured as `config` holds for its peers
/// ([`Trainer::named_tensors`]), by name, with its shape: `peer{p}.layer{l}.weight`
/// `[fan_in, fan_out]`, `.bias` `[fan_out]`, and the optimizer's states of each.
pub fn saved_tensor_shapes(
    config: &TrainConfig,
) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
    let names = layer_tensor_names(optimizer_states(&config.optimizer.kind));
    config.peers.iter().enumerate().flat_map(move |(p, spec)| {
        let names = names.clone();
        spec.layers
            .windows(2)
            .enumerate()
            .flat_map(move |(l, fans)| {
                let (fan_in, fan_out) = (fans[0], fans[1]);
                names.clone().into_iter().map(move |name| {
                    let shape = match name.starts_with("weight") {
                        true => vec![fan_in, fan_out],
                        false => vec![fan_out],
                    };
                    (format!("peer{p}.layer{l}.{name}"), shape)
                })
            })
    })
}

/// What keeps `tensors` from restoring a cohort configured as `config`: one of its
/// [`saved_tensor_shapes`] missing, or held in another shape or with another count of values,
/// or an optimizer state past those `config`'s optimizer keeps (Adam's second moment offered
/// to SGD, which would take Adam's first moment as its velocity); `None` where every one is
/// there as it should be (other tensors are not looked at). Time and memory go with the
/// count of `tensors`, however many layers `config` (a checkpoint's, perhaps hostile) names.
pub fn saved_tensors_mismatch(config: &TrainConfig, tensors: &NamedTensors) -> Option<String> {
    // Stops at the first tensor missing: at most one past as many as `tensors` holds.
    let mismatch = saved_tensor_shapes(config).find_map(|(name, shape)| match tensors.get(&name) {
        None => Some(format!("tensor {name} is missing")),
        Some((saved, _)) if *saved != shape => Some(format!(
            "tensor {name} has shape {saved:?}; its configuration makes it {shape:?}"
        )),
        Some((_, values)) if values.len() != shape.iter().product::<usize>() => Some(format!(
            "tensor {name} holds {} values for its shape {shape:?}",
            values.len()
        )),
        Some(_) => None,
    });
    if mismatch.is_some() {
        return mismatch;
    }
    let states = optimizer_states(&config.optimizer.kind);
    let foreign_state = saved_tensor_shapes(config)
        .filter(|(name, _)| name.ends_with("weight") || name.ends_with("bias"))
        .map(|(param, _)| format!("{param}.state{states}"))
        .find(|name| tensors.contains_key(name));
    let name = foreign_state?;
    let keeps = match states {
        1 => "SGD keeps one a parameter, its velocity",
        _ => "Adam and AdamW keep two a parameter, its moments",
    };
    Some(format!(
        "tensor {name} is an optimizer state this configuration does not keep ({keeps}): the \
         tensors come from another optimizer"
    ))
}

impl<T> Layer<T> {
    /// The names of the tensors a checkpoint holds for this layer, in [`Self::saved`]'s order.
    fn saved_names(&self) -> Vec<String> {
        layer_tensor_names(self.w_state.len())
    }

    /// The tensors a checkpoint holds for this layer: weights, bias, their optimizer states.
    fn saved(&self) -> impl Iterator<Item = &T> {
        [&self.w, &self.b]
            .into_iter()
            .chain(&self.w_state)
            .chain(&self.b_state)
    }

    /// [`Self::saved`], to overwrite.
    fn saved_mut(&mut self) -> impl Iterator<Item = &mut T> {
        [&mut self.w, &mut self.b]
            .into_iter()
            .chain(&mut self.w_state)
            .chain(&mut self.b_state)
    }
}

struct Group<T> {
    /// Cohort indices of the peers in this group, in stacking order.
    peers: Vec<usize>,
    spec: PeerSpec,
    layers: Vec<Layer<T>>,
}

/// Activations of one group for one batch size.
struct GroupBuffers<T> {
    pre: Vec<T>,
    /// The hidden layers' outputs: F16 with F16 weights (mixed precision), else F32.
    act: Vec<T>,
    /// Gradients of the hidden layers' pre-activations.
    dpre: Vec<T>,
    /// The group's logits and their gradient; `None` when the group is the whole cohort and
    /// writes the stacked buffers directly.
    logits: Option<(T, T)>,
}

/// What a forward or backward pass needs to know about the batch.
#[derive(Clone, Copy)]
struct StepDims {
    rows: usize,
    classes: usize,
    /// Matmul inputs in f16 (mixed precision).
    f16: bool,
}

/// Device buffers for one batch size.
struct Workspace<T> {
    /// The last batch given by [`Trainer::step`] as an index on the device, and its rows (a
    /// batch that repeats them is not uploaded again).
    index: T,
    index_rows: Vec<usize>,
    x: T,
    labels: T,
    groups: Vec<GroupBuffers<T>>,
    logits: T,
    dlogits: T,
    /// Per-row CE and KL of each peer, `[2, P, B]`, and their batch means `[2, P]` (when the
    /// step is not part of an epoch, whose means go to its loss history).
    losses: T,
    step_losses: T,
    /// Per-row test CE of each peer, `[P, B]` (evaluation).
    ce_rows: T,
}

/// A data set prepared for training: uploaded to the device once so batches are gathered there,
/// or, when it does not fit in one device buffer, kept on the host and uploaded batch by batch.
pub struct DeviceData<T> {
    store: Store<T>,
    rows: usize,
    cols: usize,
    /// Classes of the data set uploaded (its labels are below).
    classes: usize,
    /// How the features are held on the device (as the uploading trainer reads them).
    dtype: DType,
    /// [`Dataset::fingerprint`] of the rows.
    fingerprint: u64,
    /// The [`Backend::instance`] that holds its tensors.
    instance: u64,
}

enum Store<T> {
    Device { features: T, labels: T },
    Host(Dataset),
}

impl<T> DeviceData<T> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// [`Dataset::fingerprint`] of the data set uploaded.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether the rows live on the device (batches gathered there) rather than on the host.
    pub fn is_resident(&self) -> bool {
        matches!(self.store, Store::Device { .. })
    }

    /// `order` as an index on `b`'s device, for gathering batches as slices of it; none when
    /// the rows live on the host.
    fn order_index<B: Backend<Tensor = T>>(&self, b: &B, order: &[usize]) -> Result<Option<T>> {
        if !self.is_resident() {
            return Ok(None);
        }
        let mut index = crate::error::host_capacity(order.len(), || {
            format!("the device index of {} rows", order.len())
        })?;
        index.extend(order.iter().map(|&r| r as u32));
        b.tensor_u32(&[index.len()], &index).map(Some)
    }
}

/// Per-peer numbers of one epoch. (In JSON, where serde_json writes a NaN or infinity as
/// `null`, a `null` reads back as NaN: a test loss that overflowed does not make a checkpoint
/// unreadable.)
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerReport {
    /// Mean training cross-entropy, against the targets trained on: smoothed where label
    /// smoothing is on (then at least their entropy, so not comparable with `test_loss`,
    /// taken against the labels).
    #[serde(deserialize_with = "f32_or_nan")]
    pub train_ce: f32,
    /// Mean training KL term (T²-scaled, averaged over the other peers); measured even when
    /// α = 0, where it shows how far independent peers disagree.
    #[serde(deserialize_with = "f32_or_nan")]
    pub train_kl: f32,
    /// Training accuracy (on the batches as seen, before each update).
    #[serde(deserialize_with = "f32_or_nan")]
    pub train_accuracy: f32,
    /// Test cross-entropy.
    #[serde(deserialize_with = "f32_or_nan")]
    pub test_loss: f32,
    /// Test accuracy.
    #[serde(deserialize_with = "f32_or_nan")]
    pub test_accuracy: f32,
}

/// An f32 that JSON may hold as `null` (NaN or an infinity, as serde_json writes them).
fn f32_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

/// Results of evaluating the cohort on a data set.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy per peer.
    pub loss: Vec<f32>,
    /// Accuracy per peer.
    pub accuracy: Vec<f32>,
    /// Accuracy of the ensemble (argmax of the mean peer probabilities).
    pub ensemble_accuracy: f32,
}

/// Rows per batch of evaluation and prediction, at least (the training batch where larger).
const EVAL_BATCH: usize = 256;

/// Class probabilities for rows, from [`Trainer::predict`].
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    /// Rows predicted.
    pub rows: usize,
    /// Classes.
    pub classes: usize,
    /// Each peer's probabilities, `[peers, rows, classes]`: the softmax of its logits (T = 1).
    pub peers: Vec<f32>,
    /// The ensemble's probabilities, the mean of the peers', `[rows, classes]`.
    pub ensemble: Vec<f32>,
    /// The ensemble's class of each row, from the peers' logits as the accuracy counts take
    /// it ([`crate::cpu::count_correct::ensemble_class`]): where confident peers disagree,
    /// probabilities within f32's spacing of 1 are told apart, which `ensemble`'s rounded
    /// means may not be.
    pub ensemble_class: Vec<usize>,
}

/// The most likely class of each row of `classes` probabilities in `probabilities` (none where
/// `classes` is 0).
fn most_likely(probabilities: &[f32], classes: usize) -> Vec<usize> {
    match classes {
        0 => Vec::new(),
        _ => probabilities.chunks_exact(classes).map(argmax).collect(),
    }
}

impl Predictions {
    /// The ensemble's most likely class of each row ([`Self::ensemble_class`]; the lowest of
    /// ties).
    pub fn ensemble_classes(&self) -> Vec<usize> {
        self.ensemble_class.clone()
    }

    /// How many peers' probabilities `peers` holds (0 where there are no rows or classes).
    pub fn peer_count(&self) -> usize {
        match self.rows.checked_mul(self.classes) {
            Some(span) if span > 0 => self.peers.len() / span,
            _ => 0,
        }
    }

    /// Peer `peer`'s probability of class `class` for row `row` (none past the cohort's peers,
    /// rows or classes).
    pub fn peer_probability(&self, peer: usize, row: usize, class: usize) -> Option<f32> {
        if row >= self.rows || class >= self.classes {
            return None;
        }
        let at = peer.checked_mul(self.rows)?.checked_add(row)?;
        self.peers
            .get(at.checked_mul(self.classes)?.checked_add(class)?)
            .copied()
    }

    /// Peer `peer`'s most likely class of each row (none for a peer the cohort lacks).
    pub fn peer_classes(&self, peer: usize) -> Option<Vec<usize>> {
        let span = self.rows.checked_mul(self.classes)?;
        let block = self.peers.get(peer.checked_mul(span)?..)?.get(..span)?;
        Some(most_likely(block, self.classes))
    }
}

/// The index of the largest value (the first of ties).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// `out` = softmax(`logits`), computed in f64 from the largest logit.
fn softmax_into(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = ((v as f64 - max).exp() / sum) as f32;
    }
}

/// One epoch's report.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Per-peer numbers.
    pub peers: Vec<PeerReport>,
    /// Test accuracy of the ensemble.
    #[serde(deserialize_with = "f32_or_nan")]
    pub ensemble_accuracy: f32,
    /// Learning rate at the end of the epoch.
    pub lr: f32,
    /// Wall time of the training part of the epoch, in seconds.
    pub seconds: f64,
}

impl EpochReport {
    /// The peers whose mean training cross-entropy this epoch was more than twice a uniform
    /// guess's over `classes` (2·ln C): worse than knowing nothing, a sign that the steps are too
    /// large and training diverges. (The loss can grow huge and stay finite, while the accuracy
    /// still looks fine; NaN and infinities are errors already.)
    pub fn diverging_peers(&self, classes: usize) -> Vec<usize> {
        let uniform = (classes.max(2) as f32).ln();
        let peers = self.peers.iter().enumerate();
        peers
            .filter(|(_, p)| p.train_ce > 2.0 * uniform)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Progress inside an epoch, for progress bars: reported once per logging interval.
#[derive(Clone, Debug)]
pub struct StepProgress {
    /// Steps done in this epoch.
    pub step: usize,
    /// Steps in this epoch.
    pub steps: usize,
    /// Mean training loss (CE + α·KL) per peer so far this epoch.
    pub loss: Vec<f32>,
    /// Training accuracy per peer so far this epoch (before each update).
    pub accuracy: Vec<f32>,
}

/// Host copies of tensors by name, in name order: `name → (shape, data)`.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// How a [`Trainer`] holds its backend: borrowed (`Trainer::new(&backend, …)`, the trainer
/// lives within the backend's scope) or shared (`Trainer::new(Arc::new(backend), …)`, a
/// `Trainer<'static, _>` that can be stored or moved anywhere, beside other trainers on the same
/// device).
pub enum BackendRef<'b, B> {
    /// A borrowed backend.
    Borrowed(&'b B),
    /// A backend shared by reference counting.
    Shared(Arc<B>),
}

impl<B> Clone for BackendRef<'_, B> {
    fn clone(&self) -> Self {
        match self {
            BackendRef::Borrowed(b) => BackendRef::Borrowed(b),
            BackendRef::Shared(b) => BackendRef::Shared(Arc::clone(b)),
        }
    }
}

impl<B> std::ops::Deref for BackendRef<'_, B> {
    type Target = B;
    fn deref(&self) -> &B {
        match self {
            BackendRef::Borrowed(b) => b,
            BackendRef::Shared(b) => b,
        }
    }
}

impl<'b, B> From<&'b B> for BackendRef<'b, B> {
    fn from(backend: &'b B) -> Self {
        BackendRef::Borrowed(backend)
    }
}

impl<B> From<Arc<B>> for BackendRef<'static, B> {
    fn from(backend: Arc<B>) -> Self {
        BackendRef::Shared(backend)
    }
}

/// The most steps (and epochs) [`Trainer::restore`] takes as done: 2⁵³, more than any run
/// takes (at a microsecond a step, 285 years) and still exact as an f64, so that a count from
/// a damaged checkpoint cannot wrap as training goes on (half of `usize::MAX` on 32-bit targets).
pub const MAX_RESTORED_STEPS: usize = if usize::BITS >= 64 {
    (1u64 << 53) as usize
} else {
    usize::MAX / 2
};

/// Trains a cohort on one backend. See the module documentation for the step.
///
/// ```
/// use cohort::{parse_peers, Activation, CpuBackend, DataSource, Standardizer, TrainConfig, Trainer};
///
/// let mut split = DataSource::Digits.load()?;
/// // Standardised with the training rows' statistics, as the CLI does by default (the raw
/// // 0..16 pixels train far worse).
/// let standardizer = Standardizer::fit(&split.train)?;
/// standardizer.apply(&mut split.train)?;
/// standardizer.apply(&mut split.test)?;
/// let mut config = TrainConfig::new(parse_peers("2x128", 64, 10, Activation::Relu)?);
/// config.alpha = 1.0;
/// config.epochs = 2;
/// let backend = CpuBackend; // or cohort::GpuBackend::from_env()?
/// let mut trainer = Trainer::new(&backend, config)?;
/// let history = trainer.fit(
///     &split,
///     |_, report| {
///         println!("{report:?}");
///         Ok(())
///     },
///     |_| {},
/// )?;
/// assert!(history[1].ensemble_accuracy > 0.9);
/// // Class probabilities of new rows (standardised alike), per peer and for the ensemble.
/// let predictions = trainer.predict(&split.test.features)?;
/// # Ok::<(), cohort::CohortError>(())
/// ```
pub struct Trainer<'b, B: Backend> {
    backend: BackendRef<'b, B>,
    config: TrainConfig,
    groups: Vec<Group<B::Tensor>>,
    workspaces: HashMap<usize, Workspace<B::Tensor>>,
    counts: B::Tensor,
    /// Each step's mean CE and KL per peer this epoch, `[steps, 2, P]`.
    history: Option<B::Tensor>,
    steps_done: usize,
    epochs_done: usize,
    /// Every epoch's report, those restored from a checkpoint included.
    reports: Vec<EpochReport>,
    /// The fingerprint of the rows the latest step trained on.
    trained_on: Option<u64>,
    /// Steps between metric reads (progress and divergence checks; 0 counts as 1).
    pub log_every: usize,
}

fn init_weights(spec: &PeerSpec, layer: usize, rng: &mut Rng, out: &mut [f32]) {
    let (fan_in, fan_out) = (spec.layers[layer], spec.layers[layer + 1]);
    let hidden_relu = matches!(spec.activation, Activation::Relu | Activation::Gelu);
    // He-uniform for ReLU-like layers, Xavier-uniform otherwise.
    let bound = if hidden_relu {
        (6.0 / fan_in as f64).sqrt()
    } else {
        (6.0 / (fan_in + fan_out) as f64).sqrt()
    } as f32;
    rng.fill_uniform(out, -bound, bound);
}

/// The seed of peer `peer`'s initial weights: peers differ, and a peer's weights do not depend
/// on how peers are grouped.
fn peer_seed(seed: u64, peer: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (peer as u64 + 1).wrapping_mul(0x9E37_79B9)
}

impl<'b, B: Backend> Trainer<'b, B> {
    /// Builds the cohort on `backend` (`&backend` or an `Arc` of it: see [`BackendRef`]) with
    /// freshly initialised weights.
    pub fn new(backend: impl Into<BackendRef<'b, B>>, config: TrainConfig) -> Result<Self> {
        let backend = backend.into();
        config.validate()?;
        let p = config.peers.len();
        // Group same-shape peers (simultaneous), or keep every peer alone (alternating).
        let mut members: Vec<(PeerSpec, Vec<usize>)> = Vec::new();
        for (i, spec) in config.peers.iter().enumerate() {
            match members
                .iter_mut()
                .find(|(s, _)| s == spec && config.schedule == Schedule::Simultaneous)
            {
                Some((_, v)) => v.push(i),
                None => members.push((spec.clone(), vec![i])),
            }
        }
        let state_count = optimizer_states(&config.optimizer.kind);
        let mut groups = Vec::new();
        let mut rngs: Vec<Rng> = (0..p)
            .map(|i| Rng::new(peer_seed(config.seed, i)))
            .collect();
        for (spec, peers) in members {
            let g = peers.len();
            let mut layers = Vec::new();
            for l in 0..spec.layers.len() - 1 {
                let (fan_in, fan_out) = (spec.layers[l], spec.layers[l + 1]);
                let zeros = |shape: &[usize]| backend.zeros(shape, DType::F32);
                let states = |shape: &[usize]| {
                    (0..state_count)
                        .map(|_| zeros(shape))
                        .collect::<Result<Vec<_>>>()
                };
                let shape = [g, fan_in, fan_out];
                // The gradient first: a layer too large for the backend fails here, with its
                // typed error, before the host builds the initial weights.
                let dw = zeros(&shape)?;
                let mut w = host_vec(g * fan_in * fan_out, || {
                    format!(
                        "the initial weights of layer {} ({g}×{fan_in}×{fan_out})",
                        l + 1
                    )
                })?;
                for (chunk, &peer) in w.chunks_exact_mut(fan_in * fan_out).zip(&peers) {
                    init_weights(&spec, l, &mut rngs[peer], chunk);
                }
                let w16 = match config.mixed_precision && backend.f16_tensors() {
                    true => Some(backend.tensor_f16(&shape, &w)?),
                    false => None,
                };
                layers.push(Layer {
                    w: backend.tensor(&shape, &w)?,
                    w16,
                    b: zeros(&[g, fan_out])?,
                    dw,
                    w_state: states(&[g, fan_in, fan_out])?,
                    b_state: states(&[g, fan_out])?,
                });
            }
            groups.push(Group {
                peers,
                spec,
                layers,
            });
        }
        Ok(Trainer {
            counts: backend.zeros(&[p + 1], DType::U32)?,
            backend,
            config,
            groups,
            workspaces: HashMap::new(),
            history: None,
            steps_done: 0,
            epochs_done: 0,
            reports: Vec::new(),
            trained_on: None,
            log_every: 25,
        })
    }

    /// Whether the matmuls read f16 copies of the weights and write the hidden activations as
    /// F16, and inputs are held as F16 where their width is even (mixed precision on a backend
    /// with F16 tensors); otherwise mixed precision rounds f32 operands as the kernels load them.
    pub fn f16_weights(&self) -> bool {
        self.groups
            .first()
            .is_some_and(|g| g.layers.iter().all(|l| l.w16.is_some()))
    }

    /// How the inputs are held on the device: F16 with f16 weights (the first layer's matmuls
    /// then read half the bytes, and a resident data set takes half the memory) where the rows
    /// have an even width (gathers move pairs of f16), else F32.
    fn input_dtype(&self) -> DType {
        if self.f16_weights() && self.config.inputs().is_multiple_of(2) {
            DType::F16
        } else {
            DType::F32
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Epochs completed (including those restored from a checkpoint).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Sets the run's length to `epochs` (at least 1 and at least [`Self::epochs_done`]), to
    /// train on after [`Self::fit`] has finished or to stop sooner. The learning-rate schedule
    /// spans the new total from here on, as when a checkpoint is resumed with more epochs (a
    /// cosine schedule rises again from where the old one ended).
    pub fn set_epochs(&mut self, epochs: usize) -> Result<()> {
        if epochs == 0 {
            return Err(CohortError::InvalidConfig(
                "a run of 0 epochs: at least 1".into(),
            ));
        }
        if epochs < self.epochs_done {
            return Err(CohortError::InvalidConfig(format!(
                "a run of {epochs} epochs: {} are done already",
                self.epochs_done
            )));
        }
        self.config.epochs = epochs;
        Ok(())
    }

    /// The report of every epoch [`Trainer::run_epoch`] (and so [`Trainer::fit`]) trained so
    /// far, oldest first: after a resume, those of the run that saved the checkpoint too (epochs
    /// trained with [`Trainer::train_epoch`] alone have no report).
    pub fn reports(&self) -> &[EpochReport] {
        &self.reports
    }

    /// [`Dataset::fingerprint`] of the data the latest step trained on (restored from a
    /// checkpoint, where it kept one): to tell whether a resumed run trains on the same rows.
    pub fn trained_on(&self) -> Option<u64> {
        self.trained_on
    }

    /// Sets what [`Self::trained_on`] says, from a checkpoint.
    pub(crate) fn restore_trained_on(&mut self, fingerprint: Option<u64>) {
        self.trained_on = fingerprint;
    }

    /// Sets the reports of the epochs a checkpoint restored.
    pub(crate) fn restore_reports(&mut self, reports: Vec<EpochReport>) {
        self.reports = reports;
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Data of `cols` features fits the peers' inputs.
    fn check_width(&self, cols: usize) -> Result<()> {
        if cols != self.config.inputs() {
            return Err(CohortError::InvalidConfig(format!(
                "the peers take {} inputs but the data has {cols} features",
                self.config.inputs(),
            )));
        }
        Ok(())
    }

    fn check_data(&self, data: &Dataset) -> Result<()> {
        // Its fields are public: a data set built by hand gets the checks of Dataset::new.
        data.validate()?;
        rows_fit_u32(data.rows)?;
        self.check_width(data.cols)?;
        if data.classes > self.config.classes() {
            return Err(CohortError::InvalidConfig(format!(
                "the peers have {} outputs but the data has {} classes",
                self.config.classes(),
                data.classes
            )));
        }
        if self.config.mixed_precision {
            // Mixed precision rounds the features to f16: a value past its range would become
            // an infinity, and the cohort a NaN loss that looks like a learning rate too high.
            // From 65520, halfway to 2¹⁶, f16 rounds to infinity (finite: validated above).
            if let Some(i) = data.features.iter().position(|&v| v.abs() >= 65520.0) {
                return Err(CohortError::NonFinite {
                    what: format!(
                        "the features as f16 (mixed precision): row {}, column {} of the data \
                         set as given (after any split, shuffle or standardisation) holds {}, \
                         beyond f16's largest value 65504; scale the features down (standardised \
                         ones that large mean rows scaled otherwise than the training rows) or \
                         train in f32",
                        i / data.cols,
                        i % data.cols,
                        data.features[i]
                    ),
                });
            }
        }
        Ok(())
    }

    /// Uploads a data set to the device once; batches are then gathered there. A data set too
    /// large for one device buffer stays on the host instead, as with [`Self::upload_streamed`].
    pub fn upload(&self, data: &Dataset) -> Result<DeviceData<B::Tensor>> {
        self.check_data(data)?;
        let b: &B = &self.backend;
        let shape = [data.rows, data.cols];
        let dtype = self.input_dtype();
        let features = match dtype {
            DType::F16 => b.tensor_f16(&shape, &data.features),
            _ => b.tensor(&shape, &data.features),
        };
        let store = match features {
            Ok(features) => Store::Device {
                features,
                labels: b.tensor_u32(&[data.rows], &data.labels)?,
            },
            Err(CohortError::BufferTooLarge { .. }) => Store::Host(data.clone()),
            Err(e) => return Err(e),
        };
        Ok(DeviceData {
            store,
            rows: data.rows,
            cols: data.cols,
            classes: data.classes,
            dtype,
            fingerprint: data.fingerprint(),
            instance: self.backend.instance(),
        })
    }

    /// Keeps a data set on the host and uploads each batch as it is used (less device memory,
    /// one more copy per step).
    pub fn upload_streamed(&self, data: &Dataset) -> Result<DeviceData<B::Tensor>> {
        self.check_data(data)?;
        Ok(DeviceData {
            store: Store::Host(data.clone()),
            rows: data.rows,
            cols: data.cols,
            classes: data.classes,
            dtype: DType::F32,
            fingerprint: data.fingerprint(),
            instance: self.backend.instance(),
        })
    }

    fn workspace(&mut self, rows: usize) -> Result<&mut Workspace<B::Tensor>> {
        if !self.workspaces.contains_key(&rows) {
            let ws = self.new_workspace(rows)?;
            self.workspaces.insert(rows, ws);
        }
        Ok(self.workspaces.get_mut(&rows).expect("inserted above"))
    }

    fn new_workspace(&self, rows: usize) -> Result<Workspace<B::Tensor>> {
        let b: &B = &self.backend;
        let f32z = |shape: &[usize]| b.zeros(shape, DType::F32);
        let act_dtype = if self.f16_weights() {
            DType::F16
        } else {
            DType::F32
        };
        let p = self.config.peers.len();
        let c = self.config.classes();
        let single = self.groups.len() == 1;
        let mut groups = Vec::new();
        for g in &self.groups {
            let n = g.peers.len();
            let widths = &g.spec.layers[1..];
            let hidden = &widths[..widths.len() - 1];
            groups.push(GroupBuffers {
                pre: widths
                    .iter()
                    .map(|&w| f32z(&[n, rows, w]))
                    .collect::<Result<_>>()?,
                act: hidden
                    .iter()
                    .map(|&w| b.zeros(&[n, rows, w], act_dtype))
                    .collect::<Result<_>>()?,
                dpre: hidden
                    .iter()
                    .map(|&w| f32z(&[n, rows, w]))
                    .collect::<Result<_>>()?,
                logits: if single {
                    None
                } else {
                    Some((f32z(&[n, rows, c])?, f32z(&[n, rows, c])?))
                },
            });
        }
        Ok(Workspace {
            index: b.zeros(&[rows], DType::U32)?,
            index_rows: Vec::new(),
            x: b.zeros(&[rows, self.config.inputs()], self.input_dtype())?,
            labels: b.zeros(&[rows], DType::U32)?,
            groups,
            logits: f32z(&[p, rows, c])?,
            dlogits: f32z(&[p, rows, c])?,
            losses: f32z(&[2, p, rows])?,
            step_losses: f32z(&[2, p])?,
            ce_rows: f32z(&[p, rows])?,
        })
    }

    /// A handle to the backend of its own (a borrow or an `Arc` clone), for methods that borrow
    /// `self` mutably while they dispatch.
    fn backend_handle(&self) -> BackendRef<'b, B> {
        self.backend.clone()
    }

    /// Records the gather of `rows` into the workspace of that batch size. `listed` is an index
    /// already on the device that lists them from an offset (an epoch's order); without one
    /// they are written to the workspace's index first.
    fn load_batch(
        &mut self,
        data: &DeviceData<B::Tensor>,
        rows: &[usize],
        listed: Option<(&B::Tensor, usize)>,
    ) -> Result<()> {
        let backend = self.backend_handle();
        let b: &B = &backend;
        // Data uploaded by another trainer: rows kept on the host go to any backend, a device's
        // tensors only to their own and as this trainer reads them; and the rows must fit the
        // peers.
        let elsewhere = |why: String| {
            CohortError::InvalidConfig(format!(
                "the data was uploaded {why}: upload it with this trainer"
            ))
        };
        if data.is_resident() && data.instance != b.instance() {
            return Err(elsewhere(
                "through another backend than this trainer's".into(),
            ));
        }
        if data.is_resident() && data.dtype != self.input_dtype() {
            return Err(elsewhere(format!(
                "with {:?} features for a trainer that reads {:?} ones (mixed precision holds \
                 them as F16)",
                data.dtype,
                self.input_dtype()
            )));
        }
        self.check_width(data.cols)?;
        if data.classes > self.config.classes() {
            return Err(elsewhere(format!(
                "with {} classes for peers with {} outputs",
                data.classes,
                self.config.classes()
            )));
        }
        let ws = self.workspace(rows.len())?;
        match &data.store {
            Store::Device { features, labels } => {
                let (index, offset) = match listed {
                    Some(listed) => listed,
                    None => {
                        // Uploaded unless the index holds these rows already (a loop that
                        // repeats its batch, as the step benchmark does, uploads nothing).
                        if ws.index_rows != rows {
                            let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                            b.write_u32(&mut ws.index, &index)?;
                            ws.index_rows = rows.to_vec();
                        }
                        (&ws.index, 0)
                    }
                };
                b.gather_batch(features, labels, index, offset, &mut ws.x, &mut ws.labels)?;
            }
            Store::Host(host) => {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                host.gather_batch(rows, &mut x, &mut y);
                b.write(&mut ws.x, &x)?;
                b.write_u32(&mut ws.labels, &y)?;
            }
        }
        Ok(())
    }

    /// Forward pass of one group; its logits land in the stacked buffer.
    fn forward(
        b: &B,
        group: &Group<B::Tensor>,
        gb: &mut GroupBuffers<B::Tensor>,
        x: &B::Tensor,
        stacked: &mut B::Tensor,
        dims: StepDims,
    ) -> Result<()> {
        let matmul = MatmulSpec::default().f16(dims.f16);
        let last = group.layers.len() - 1;
        for (l, layer) in group.layers.iter().enumerate() {
            let split = l.min(gb.act.len());
            let (done, rest) = gb.act.split_at_mut(split);
            let input = if l == 0 { x } else { &done[l - 1] };
            let (out, act) = if l < last {
                (&mut rest[0], group.spec.activation)
            } else {
                let logits = match &mut gb.logits {
                    Some((logits, _)) => logits,
                    None => &mut *stacked,
                };
                (logits, Activation::Identity)
            };
            let w = layer.w16.as_ref().unwrap_or(&layer.w);
            b.matmul_bias_act(input, w, &layer.b, &mut gb.pre[l], out, &matmul, act)?;
        }
        if let Some((logits, _)) = &gb.logits {
            let span = dims.rows * dims.classes;
            for (k, &peer) in group.peers.iter().enumerate() {
                b.copy(logits, k * span, stacked, peer * span, span)?;
            }
        }
        Ok(())
    }

    /// Copies the stacked logit gradient's rows of each group's peers into the group's own
    /// buffer, where it has one (the cohort is more than one group).
    fn copy_logit_grads(
        b: &B,
        groups: &[Group<B::Tensor>],
        buffers: &mut [GroupBuffers<B::Tensor>],
        dstacked: &B::Tensor,
        dims: StepDims,
    ) -> Result<()> {
        let span = dims.rows * dims.classes;
        for (group, gb) in groups.iter().zip(buffers.iter_mut()) {
            if let Some((_, dlogits)) = &mut gb.logits {
                for (k, &peer) in group.peers.iter().enumerate() {
                    b.copy(dstacked, peer * span, dlogits, k * span, span)?;
                }
            }
        }
        Ok(())
    }

    /// Backward pass and optimizer update of `groups`, from the stacked logit gradient (each
    /// group's own copy of it, [`Trainer::copy_logit_grads`], where it has one), in batches of
    /// kernels that may run side by side ([`Backend::next_batch`]): batch k holds each group's
    /// weight gradient of its layer k below the top, the update of the layer above that, whose
    /// gradient the batch before wrote, and the input gradient of layer k below the top (a
    /// layer's update must wait for its input gradient, which reads its weights); the last
    /// batch updates the first layers, and the kernels recorded after this join it. A step of
    /// three layers runs its backward in 4 batches, where a barrier before each dispatch that
    /// needed one (an update after its gradient, an input gradient after the one above) made 6.
    /// The input gradients come last in their batch: where one is split along K, its partial
    /// products' reduction waits for all the batch's work before it, and so only it does.
    fn backward_update(
        b: &B,
        groups: &mut [Group<B::Tensor>],
        buffers: &mut [GroupBuffers<B::Tensor>],
        x: &B::Tensor,
        dstacked: &B::Tensor,
        dims: StepDims,
        step: &OptimizerStep,
    ) -> Result<()> {
        let depth = groups.iter().map(|g| g.layers.len()).max().unwrap_or(0);
        for batch in 0..=depth {
            b.next_batch()?;
            for (group, gb) in groups.iter_mut().zip(buffers.iter()) {
                let layers = group.layers.len();
                if batch < layers {
                    Self::weight_gradient(b, group, gb, x, dstacked, dims, layers - 1 - batch)?;
                }
                if (1..=layers).contains(&batch) {
                    Self::update_layer(b, group, gb, dstacked, step, layers - batch)?;
                }
            }
            for (group, gb) in groups.iter().zip(buffers.iter_mut()) {
                let layers = group.layers.len();
                if batch + 1 < layers {
                    Self::input_gradient(b, group, gb, dstacked, dims, layers - 1 - batch)?;
                }
            }
        }
        Ok(())
    }

    /// A layer's pre-activation gradient: `hidden`, a hidden layer's (from
    /// `GroupBuffers::dpre`), else the last layer's: the group's own copy of the logits'
    /// gradient, or the stacked one.
    fn pre_activation_grad<'a>(
        hidden: Option<&'a B::Tensor>,
        logits: &'a Option<(B::Tensor, B::Tensor)>,
        dstacked: &'a B::Tensor,
    ) -> &'a B::Tensor {
        match (hidden, logits) {
            (Some(d), _) | (None, Some((_, d))) => d,
            (None, None) => dstacked,
        }
    }

    /// Layer `l`'s weight gradient dW = inputᵀ·dpre.
    fn weight_gradient(
        b: &B,
        group: &mut Group<B::Tensor>,
        gb: &GroupBuffers<B::Tensor>,
        x: &B::Tensor,
        dstacked: &B::Tensor,
        dims: StepDims,
        l: usize,
    ) -> Result<()> {
        let dpre = Self::pre_activation_grad(gb.dpre.get(l), &gb.logits, dstacked);
        let input = if l == 0 { x } else { &gb.act[l - 1] };
        b.matmul(
            input,
            dpre,
            &mut group.layers[l].dw,
            &MatmulSpec::new(true, false).f16(dims.f16),
        )
    }

    /// Layer `l`'s input gradient dX = dpre·Wᵀ (l > 0), through the activation of layer l − 1
    /// in the same pass, into that layer's pre-activation gradient (before its bias is
    /// updated).
    fn input_gradient(
        b: &B,
        group: &Group<B::Tensor>,
        gb: &mut GroupBuffers<B::Tensor>,
        dstacked: &B::Tensor,
        dims: StepDims,
        l: usize,
    ) -> Result<()> {
        let layer = &group.layers[l];
        let (below, from_l) = gb.dpre.split_at_mut(l);
        let dpre = Self::pre_activation_grad(from_l.first(), &gb.logits, dstacked);
        b.matmul_act_grad(
            dpre,
            layer.w16.as_ref().unwrap_or(&layer.w),
            &gb.pre[l - 1],
            &group.layers[l - 1].b,
            &mut below[l - 1],
            &MatmulSpec::new(false, true).f16(dims.f16),
            group.spec.activation,
        )
    }

    /// Layer `l`'s weights and bias in one update; the bias gradient is its pre-activation
    /// gradient's column sum, formed inside it.
    fn update_layer(
        b: &B,
        group: &mut Group<B::Tensor>,
        gb: &GroupBuffers<B::Tensor>,
        dstacked: &B::Tensor,
        step: &OptimizerStep,
        l: usize,
    ) -> Result<()> {
        let dpre = Self::pre_activation_grad(gb.dpre.get(l), &gb.logits, dstacked);
        let layer = &mut group.layers[l];
        let update = LayerUpdate {
            weight: &mut layer.w,
            weight_grad: &layer.dw,
            weight_states: &mut layer.w_state,
            weight_f16: layer.w16.as_mut(),
            bias: &mut layer.b,
            dpre,
            bias_states: &mut layer.b_state,
        };
        b.update_layer(step, update)
    }

    /// The update of this step, on gradients scaled by `grad_scale`.
    fn optimizer_step(&self, lr: f32, grad_scale: f32) -> OptimizerStep {
        // Adam's bias corrections are 1 long before 2³² steps: a count past that stays at its
        // largest (`ops::adam_bias_correction`).
        let t = u32::try_from(self.steps_done + 1).unwrap_or(u32::MAX);
        self.config.optimizer.step(lr, grad_scale, t)
    }

    /// Records one training step on the batch already in the workspace of `rows` rows, and the
    /// step's mean CE and KL per peer into row `history_row` of the loss history (or into the
    /// workspace's `step_losses`).
    fn record_step(&mut self, rows: usize, lr: f32, history_row: Option<usize>) -> Result<()> {
        let b: &B = &self.backend;
        // Mixed precision scales the loss by the batch size: the gradients are those of the
        // summed, not the mean, loss, so the logit gradients (|p − q| ≤ 1) and those below them
        // keep f16's precision when the matmuls round them, instead of sinking below its normal
        // range as training fits (tests/train.rs measures it); the update divides again. So do
        // f32 products split into f16 parts, whose hi parts have f16's range.
        let loss_scale = match self.config.mixed_precision || b.splits_f32_products() {
            true => rows as f32,
            false => 1.0,
        };
        let step = self.optimizer_step(lr, 1.0 / loss_scale);
        let p = self.config.peers.len();
        let loss = |peers| DmlLossSpec {
            label_smoothing: self.config.label_smoothing,
            ce_scale: loss_scale / rows as f32,
            temperature: self.config.temperature,
            kl_scale: self.config.alpha_at(self.steps_done) * loss_scale / rows as f32,
            peers,
        };
        let dims = StepDims {
            rows,
            classes: self.config.classes(),
            f16: self.config.mixed_precision,
        };
        let ws = self.workspaces.get_mut(&rows).expect("batch loaded first");
        for (group, gb) in self.groups.iter().zip(ws.groups.iter_mut()) {
            Self::forward(b, group, gb, &ws.x, &mut ws.logits, dims)?;
        }
        b.count_correct(&ws.logits, &ws.labels, &mut self.counts)?;
        let (out, out_row) = match (history_row, &mut self.history) {
            (Some(s), Some(history)) => (history, s),
            _ => (&mut ws.step_losses, 0),
        };
        let mean = ReduceSpec {
            out_row,
            ..ReduceSpec::scaled(1.0 / rows as f32)
        };
        if self.config.schedule == Schedule::Simultaneous {
            let losses = &mut ws.losses;
            b.dml_loss(&ws.logits, &ws.labels, losses, &mut ws.dlogits, &loss(0..p))?;
            Self::copy_logit_grads(b, &self.groups, &mut ws.groups, &ws.dlogits, dims)?;
            let (x, dlogits) = (&ws.x, &ws.dlogits);
            Self::backward_update(b, &mut self.groups, &mut ws.groups, x, dlogits, dims, &step)?;
            // The loss means join the backward's last batch (the first layer's update).
            b.reduce_sum(&ws.losses, 2, out, &mean)?;
        } else {
            // Algorithm 1: each peer in turn (every peer is its own group), against the others'
            // current predictions; its losses are the ones it was updated with.
            for (gi, (group, gb)) in self.groups.iter_mut().zip(ws.groups.iter_mut()).enumerate() {
                let peer = group.peers[0];
                b.dml_loss(
                    &ws.logits,
                    &ws.labels,
                    &mut ws.losses,
                    &mut ws.dlogits,
                    &loss(peer..peer + 1),
                )?;
                let (group, gb) = (std::slice::from_mut(group), std::slice::from_mut(gb));
                Self::copy_logit_grads(b, group, gb, &ws.dlogits, dims)?;
                Self::backward_update(b, group, gb, &ws.x, &ws.dlogits, dims, &step)?;
                if gi + 1 < p {
                    Self::forward(b, &group[0], &mut gb[0], &ws.x, &mut ws.logits, dims)?;
                }
            }
            b.reduce_sum(&ws.losses, 2, out, &mean)?;
        }
        self.steps_done += 1;
        Ok(())
    }

    /// Records one training step on the given rows of `data`, at the learning rate the schedule
    /// gives this step, without reading anything back (for benchmarks and custom loops; call
    /// [`Backend::finish`] to wait for it). Epoch metrics are not updated. Past the run's last
    /// step the schedule stays at its end (a cosine's learning rate 0: the step changes only
    /// what weight decay and momentum do): [`Trainer::set_epochs`] lengthens the run.
    pub fn step(&mut self, data: &DeviceData<B::Tensor>, rows: &[usize]) -> Result<()> {
        if rows.is_empty() {
            return Err(CohortError::EmptyData(
                "a step needs at least one row".into(),
            ));
        }
        if let Some(&row) = rows.iter().find(|&&r| r >= data.rows) {
            return Err(CohortError::shape(
                "Trainer::step",
                format!("row {row} is out of range: the data has {} rows", data.rows),
            ));
        }
        let steps_per_epoch = data.rows.div_ceil(self.config.batch_size);
        let lr = self.config.optimizer.lr_at(
            self.steps_done,
            steps_per_epoch.saturating_mul(self.config.epochs),
            steps_per_epoch,
        );
        self.load_batch(data, rows, None)?;
        self.trained_on = Some(data.fingerprint);
        self.record_step(rows.len(), lr, None)
    }

    /// Trains one epoch on `data` (uploaded with [`Trainer::upload`]). `progress` is called once
    /// per logging interval and at the end. Fails with [`CohortError::Diverged`] at the first
    /// non-finite loss the metric reads find (every [`Trainer::log_every`] steps: the steps up
    /// to the read have run, and the weights are then past use: restore a checkpoint). The
    /// reports' test fields are NaN here ([`Trainer::run_epoch`] fills them). Past the
    /// configuration's epochs, an [`CohortError::InvalidConfig`] ([`Trainer::set_epochs`]).
    pub fn train_epoch(
        &mut self,
        data: &DeviceData<B::Tensor>,
        mut progress: impl FnMut(&StepProgress),
    ) -> Result<Vec<PeerReport>> {
        self.check_width(data.cols)?;
        if self.epochs_done >= self.config.epochs {
            // The schedule has ended (a cosine at learning rate 0): an epoch would change little
            // or nothing, silently.
            return Err(CohortError::InvalidConfig(format!(
                "all {} epochs of the run are done: Trainer::set_epochs extends it",
                self.config.epochs
            )));
        }
        let backend = self.backend_handle();
        let b: &B = &backend;
        let p = self.config.peers.len();
        let epoch = self.epochs_done + 1;
        let order = epoch_order(data.rows, self.config.seed, epoch)?;
        let sizes: Vec<usize> = batches(&order, self.config.batch_size)
            .map(|s| s.len())
            .collect();
        let steps = sizes.len();
        let total_steps = steps.saturating_mul(self.config.epochs);
        if self
            .history
            .as_ref()
            .is_none_or(|h| h.shape().numel() != steps * 2 * p)
        {
            self.history = Some(b.zeros(&[steps, 2, p], DType::F32)?);
        }
        b.write_u32(&mut self.counts, &vec![0; p + 1])?;
        // The epoch's order goes to the device once; each batch gathers its slice of it.
        let listed = data.order_index(b, &order)?;
        self.trained_on = Some(data.fingerprint);
        let mut checked = 0;
        for (s, rows) in batches(&order, self.config.batch_size).enumerate() {
            let lr = self
                .config
                .optimizer
                .lr_at(self.steps_done, total_steps, steps);
            let at = s * self.config.batch_size;
            self.load_batch(data, rows, listed.as_ref().map(|index| (index, at)))?;
            // The step's mean losses go straight into row s of the history. Each step goes to
            // the device once recorded, so it runs while the host records the next.
            self.record_step(rows.len(), lr, Some(s))?;
            b.submit()?;
            if (s + 1) % self.log_every.max(1) == 0 || s + 1 == steps {
                let loss = self.check_history(epoch, checked, s + 1, &sizes)?;
                checked = s + 1;
                let seen: usize = sizes[..s + 1].iter().sum();
                let counts = b.read_u32(&self.counts)?;
                let accuracy = counts[..p]
                    .iter()
                    .map(|&c| c as f32 / seen as f32)
                    .collect();
                progress(&StepProgress {
                    step: s + 1,
                    steps,
                    loss,
                    accuracy,
                });
            }
        }
        let (ce, kl) = self.read_history()?;
        let counts = b.read_u32(&self.counts)?;
        self.epochs_done = epoch;
        let n = data.rows as f64;
        Ok((0..p)
            .map(|i| {
                let mean = |h: &[f32]| {
                    (0..steps)
                        .map(|s| h[s * p + i] as f64 * sizes[s] as f64)
                        .sum::<f64>()
                        / n
                };
                PeerReport {
                    train_ce: mean(&ce) as f32,
                    train_kl: mean(&kl) as f32,
                    train_accuracy: (counts[i] as f64 / n) as f32,
                    test_loss: f32::NAN,
                    test_accuracy: f32::NAN,
                }
            })
            .collect())
    }

    /// The loss history as each step's mean CE and KL, `[steps, P]` each.
    fn read_history(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let history = self.backend.read(self.history.as_ref().expect("set"))?;
        let p = self.config.peers.len();
        let (mut ce, mut kl) = (Vec::new(), Vec::new());
        for step in history.chunks(2 * p) {
            ce.extend_from_slice(&step[..p]);
            kl.extend_from_slice(&step[p..]);
        }
        Ok((ce, kl))
    }

    /// Reads the loss history up to step `upto` of this epoch, fails at the first non-finite
    /// loss after `from`, and returns the mean total loss (CE + α·KL, at each step's α) per peer
    /// so far.
    fn check_history(
        &self,
        epoch: usize,
        from: usize,
        upto: usize,
        sizes: &[usize],
    ) -> Result<Vec<f32>> {
        let p = self.config.peers.len();
        let (ce, kl) = self.read_history()?;
        // Each step's α (it ramps during the warm-up); steps 0..upto of this epoch are the last
        // `upto` taken.
        let first = self.steps_done.saturating_sub(upto);
        let alpha = |s: usize| self.config.alpha_at(first + s);
        for s in from..upto {
            for i in 0..p {
                let v = ce[s * p + i] + alpha(s) * kl[s * p + i];
                if !v.is_finite() {
                    return Err(CohortError::Diverged {
                        epoch,
                        step: s + 1,
                        peer: i,
                        value: v,
                    });
                }
            }
        }
        let rows: usize = sizes[..upto].iter().sum();
        Ok((0..p)
            .map(|i| {
                let sum: f64 = (0..upto)
                    .map(|s| (ce[s * p + i] + alpha(s) * kl[s * p + i]) as f64 * sizes[s] as f64)
                    .sum();
                (sum / rows as f64) as f32
            })
            .collect())
    }

    /// Every peer's forward pass over the rows of `data` in batches (no training): after each
    /// batch, `visit` sees the batch's workspace (its logits `[P, n, C]` and labels) and `n`.
    fn each_forward(
        &mut self,
        data: &DeviceData<B::Tensor>,
        mut visit: impl FnMut(&B, &mut Workspace<B::Tensor>, usize) -> Result<()>,
    ) -> Result<()> {
        let backend = self.backend_handle();
        let b: &B = &backend;
        let (classes, f16) = (self.config.classes(), self.config.mixed_precision);
        let dims = |rows| StepDims { rows, classes, f16 };
        let order: Vec<usize> = (0..data.rows).collect();
        let listed = data.order_index(b, &order)?;
        let batch = self.config.batch_size.max(EVAL_BATCH);
        for (s, rows) in batches(&order, batch).enumerate() {
            self.load_batch(data, rows, listed.as_ref().map(|index| (index, s * batch)))?;
            let n = rows.len();
            let ws = self.workspaces.get_mut(&n).expect("loaded");
            for (group, gb) in self.groups.iter().zip(ws.groups.iter_mut()) {
                Self::forward(b, group, gb, &ws.x, &mut ws.logits, dims(n))?;
            }
            visit(b, ws, n)?;
        }
        Ok(())
    }

    /// Test loss and accuracy of every peer and of the ensemble on `data`.
    pub fn evaluate(&mut self, data: &DeviceData<B::Tensor>) -> Result<Evaluation> {
        let backend = self.backend_handle();
        let b: &B = &backend;
        let p = self.config.peers.len();
        let mut loss_sum = b.zeros(&[p], DType::F32)?;
        let mut counts = b.zeros(&[p + 1], DType::U32)?;
        let spec = CrossEntropySpec {
            label_smoothing: 0.0,
            grad_scale: 0.0,
        };
        let sum = ReduceSpec {
            accumulate: true,
            ..ReduceSpec::scaled(1.0)
        };
        self.each_forward(data, |b, ws, _| {
            b.softmax_ce(
                &ws.logits,
                &ws.labels,
                &mut ws.ce_rows,
                &mut ws.dlogits,
                &spec,
            )?;
            b.reduce_sum(&ws.ce_rows, 1, &mut loss_sum, &sum)?;
            b.count_correct(&ws.logits, &ws.labels, &mut counts)?;
            b.submit()
        })?;
        let loss = b.read(&loss_sum)?;
        let counts = b.read_u32(&counts)?;
        let n = data.rows as f32;
        Ok(Evaluation {
            loss: loss.iter().map(|l| l / n).collect(),
            accuracy: counts[..p].iter().map(|&c| c as f32 / n).collect(),
            ensemble_accuracy: counts[p] as f32 / n,
        })
    }

    /// Class probabilities for new rows: `features` holds them one after another, each as
    /// wide as the peers' inputs (and standardised as the training data was:
    /// [`crate::data::Standardizer::apply_rows`]). Every peer's
    /// softmax (T = 1) and the ensemble's mean of them; nothing is trained.
    pub fn predict(&mut self, features: &[f32]) -> Result<Predictions> {
        let (cols, classes) = (self.config.inputs(), self.config.classes());
        if features.is_empty() || !features.len().is_multiple_of(cols) {
            return Err(CohortError::shape(
                "Trainer::predict",
                format!(
                    "{} values are not whole rows of the peers' {cols} inputs (at least one)",
                    features.len()
                ),
            ));
        }
        let rows = features.len() / cols;
        // The rows as a data set whose labels nobody reads.
        let data = Dataset::new(features.to_vec(), vec![0; rows], cols, classes)?;
        let uploaded = self.upload(&data)?;
        let p = self.config.peers.len();
        let mut peers = host_vec::<f32>(p * rows * classes, || "predictions".into())?;
        let mut ensemble_class = host_vec::<usize>(rows, || "predictions".into())?;
        let mut done = 0;
        // The workspace of a last, partial batch is this call's own: not kept.
        let kept: Vec<usize> = self.workspaces.keys().copied().collect();
        let result = self.each_forward(&uploaded, |b, ws, n| {
            let logits = b.read(&ws.logits)?;
            if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
                return Err(CohortError::NonFinite {
                    what: format!(
                        "peer {}'s logits for row {} (a diverged cohort?)",
                        i / (n * classes),
                        done + i % (n * classes) / classes
                    ),
                });
            }
            for (peer, block) in logits.chunks_exact(n * classes).enumerate() {
                let out = &mut peers[(peer * rows + done) * classes..][..n * classes];
                for (row, probs) in block
                    .chunks_exact(classes)
                    .zip(out.chunks_exact_mut(classes))
                {
                    softmax_into(row, probs);
                }
            }
            for (row, class) in ensemble_class[done..done + n].iter_mut().enumerate() {
                let rows: Vec<&[f32]> = (0..p)
                    .map(|peer| &logits[(peer * n + row) * classes..][..classes])
                    .collect();
                *class = crate::cpu::count_correct::ensemble_class(&rows);
            }
            done += n;
            Ok(())
        });
        let full_batch = self.config.batch_size.max(EVAL_BATCH);
        self.workspaces
            .retain(|n, _| kept.contains(n) || *n == full_batch);
        result?;
        let mut ensemble = host_vec::<f32>(rows * classes, || "predictions".into())?;
        for block in peers.chunks_exact(rows * classes) {
            for (e, v) in ensemble.iter_mut().zip(block) {
                *e += v / p as f32;
            }
        }
        Ok(Predictions {
            rows,
            classes,
            peers,
            ensemble,
            ensemble_class,
        })
    }

    /// Trains one epoch on `train` and evaluates on `test` (both uploaded with
    /// [`Trainer::upload`]).
    pub fn run_epoch(
        &mut self,
        train: &DeviceData<B::Tensor>,
        test: &DeviceData<B::Tensor>,
        progress: impl FnMut(&StepProgress),
    ) -> Result<EpochReport> {
        let start = std::time::Instant::now();
        let mut peers = self.train_epoch(train, progress)?;
        let seconds = start.elapsed().as_secs_f64();
        let eval = self.evaluate(test)?;
        for (i, pr) in peers.iter_mut().enumerate() {
            pr.test_loss = eval.loss[i];
            pr.test_accuracy = eval.accuracy[i];
        }
        let steps_per_epoch = train.rows.div_ceil(self.config.batch_size);
        let report = EpochReport {
            epoch: self.epochs_done,
            peers,
            ensemble_accuracy: eval.ensemble_accuracy,
            lr: self.config.optimizer.lr_at(
                self.steps_done.saturating_sub(1),
                steps_per_epoch.saturating_mul(self.config.epochs),
                steps_per_epoch,
            ),
            seconds,
        };
        self.reports.push(report.clone());
        Ok(report)
    }

    /// Trains the remaining epochs on `split`, evaluating on its test part after each epoch
    /// (none once all are done: [`Trainer::set_epochs`] extends the run).
    /// `on_epoch` sees the trainer (mutable: to save checkpoints, or evaluate other data) and
    /// each report as it is made; [`CohortError::Stopped`] from it ends the run there (early
    /// stopping: `fit` returns the reports so far), any other error it returns stops training
    /// and is returned. `progress` sees in-epoch progress.
    pub fn fit(
        &mut self,
        split: &Split,
        mut on_epoch: impl FnMut(&mut Self, &EpochReport) -> Result<()>,
        mut progress: impl FnMut(&StepProgress),
    ) -> Result<Vec<EpochReport>> {
        self.check_data(&split.test)?;
        let train = self.upload(&split.train)?;
        let test = self.upload(&split.test)?;
        let mut reports = Vec::new();
        while self.epochs_done < self.config.epochs {
            let report = self.run_epoch(&train, &test, &mut progress)?;
            let next = on_epoch(self, &report);
            reports.push(report);
            match next {
                Ok(()) => {}
                Err(CohortError::Stopped) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(reports)
    }

    /// Every parameter and optimizer state as named host tensors `(name, shape, data)`, one set
    /// per peer whatever the grouping: `peer{i}.layer{l}.weight`, `.bias`, `.weight.state{s}`…
    pub fn named_tensors(&self) -> Result<NamedTensors> {
        let b: &B = &self.backend;
        let mut out = NamedTensors::new();
        for group in &self.groups {
            for (l, layer) in group.layers.iter().enumerate() {
                for (name, t) in layer.saved_names().into_iter().zip(layer.saved()) {
                    let data = b.read(t)?;
                    let dims = t.shape().dims();
                    let per = dims[1..].iter().product::<usize>();
                    for (k, &peer) in group.peers.iter().enumerate() {
                        out.insert(
                            format!("peer{peer}.layer{l}.{name}"),
                            (dims[1..].to_vec(), data[k * per..(k + 1) * per].to_vec()),
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// Overwrites parameters and optimizer state from named tensors (as
    /// [`Self::named_tensors`] gives them; others are ignored, but for optimizer states this
    /// configuration's optimizer does not keep), and the progress counters. Every
    /// tensor must be present with its exact shape and as many values, all finite, and the
    /// counts within [`MAX_RESTORED_STEPS`], the epochs within the run's
    /// ([`Trainer::set_epochs`] first, to restore more); all are checked before any is
    /// written, so an error leaves the trainer as it was (but for a device error while writing).
    pub fn restore(
        &mut self,
        tensors: &NamedTensors,
        epochs_done: usize,
        steps_done: usize,
    ) -> Result<()> {
        if steps_done.max(epochs_done) > MAX_RESTORED_STEPS {
            return Err(CohortError::InvalidConfig(format!(
                "restoring {epochs_done} epochs and {steps_done} steps done: at most \
                 {MAX_RESTORED_STEPS} of each"
            )));
        }
        if epochs_done > self.config.epochs {
            return Err(CohortError::InvalidConfig(format!(
                "restoring {epochs_done} epochs done into a run of {}: Trainer::set_epochs \
                 lengthens it first",
                self.config.epochs
            )));
        }
        // Every tensor checked before any is written, so that a bad one changes nothing.
        if let Some(why) = saved_tensors_mismatch(&self.config, tensors) {
            return Err(CohortError::CheckpointMismatch(why));
        }
        let mut staged: Vec<Vec<f32>> = Vec::new();
        for group in &self.groups {
            for (l, layer) in group.layers.iter().enumerate() {
                for (name, t) in layer.saved_names().into_iter().zip(layer.saved()) {
                    let mut data = Vec::with_capacity(t.shape().numel());
                    for &peer in &group.peers {
                        let key = format!("peer{peer}.layer{l}.{name}");
                        let (_, values) = &tensors[&key];
                        // A NaN weight would not even show in predictions (ReLU maps it to 0).
                        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                            return Err(CohortError::NonFinite {
                                what: format!("{key} to restore (it holds {v})"),
                            });
                        }
                        data.extend_from_slice(values);
                    }
                    staged.push(data);
                }
            }
        }
        let b: &B = &self.backend;
        let mut staged = staged.into_iter();
        for group in &mut self.groups {
            for layer in &mut group.layers {
                for (t, data) in layer.saved_mut().zip(&mut staged) {
                    b.write(t, &data)?;
                }
                if let Some(w16) = &mut layer.w16 {
                    b.convert(&layer.w, w16)?;
                }
            }
        }
        self.epochs_done = epochs_done;
        // Reports of epochs past the restored state no longer describe this trainer.
        self.reports.retain(|r| r.epoch <= epochs_done);
        self.steps_done = steps_done;
        Ok(())
    }
}

/// Row indices and an epoch's correct answers are counted in 32 bits on the device: a data set
/// has at most `u32::MAX` rows.
fn rows_fit_u32(rows: usize) -> Result<()> {
    match u32::try_from(rows) {
        Ok(_) => Ok(()),
        Err(_) => Err(CohortError::InvalidConfig(format!(
            "{rows} rows: cohort indexes and counts rows in 32 bits, at most {} in one data set",
            u32::MAX
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn data_sets_past_32_bit_row_counts_are_refused() {
        assert!(super::rows_fit_u32(u32::MAX as usize).is_ok());
        let err = super::rows_fit_u32(1 << 32).unwrap_err();
        assert!(err.to_string().contains("counts rows in 32 bits"), "{err}");
    }
}
