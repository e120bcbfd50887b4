//! The command line: subcommands and their flags, as clap parses them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The whole command line.
#[derive(Parser)]
#[command(
    name = "cohort",
    version,
    about = "Deep Mutual Learning on any GPU",
    after_help = "GPU settings come from the environment (README, \"Hardware\"): COHORT_ADAPTER, \
                  COHORT_HARDWARE_ONLY, COHORT_MATMUL_TUNE, COHORT_MATMUL_TUNE_FILE, COHORT_COOP, \
                  COHORT_F32_MATMUL and about two dozen for experiments. `cohort devices` shows what they \
                  give on this machine."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands, each with its flags.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Train a cohort (defaults: two MLPs on the embedded UCI digits).
    Train {
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        files: FileArgs,
    },
    /// Train independent (α = 0) and mutual (α > 0) cohorts over several seeds and compare.
    Compare {
        #[command(flatten)]
        train: TrainArgs,
        /// Number of seeds (seed, seed+1, …).
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Write each run's final test accuracy and loss, a row per seed, run and peer (and the
        /// ensemble): CSV (.csv), JSON lines (.jsonl) or a JSON array (.json); rewritten after
        /// every run, so an interrupted comparison keeps the seeds it finished.
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Score a saved cohort on data: each peer's and the ensemble's test loss and accuracy.
    ///
    /// The rows scored are the data's test part, taken as train takes it (so that on the data
    /// it trained on, evaluate repeats train's summary), or with --all-rows every row.
    #[command(allow_negative_numbers = true)]
    Evaluate {
        /// The checkpoint, a file written by train --save.
        checkpoint: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Score every row of the data (its train and test parts), as for a held-out file.
        #[arg(long)]
        all_rows: bool,
        /// Backend.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Predict the classes of rows with a saved cohort, as CSV: each row's ensemble class, each
    /// peer's class and the ensemble's probabilities.
    ///
    /// Every row of the data is predicted. A CSV file may hold features only (as many columns
    /// as the cohort has inputs) or features and a label column; labels, where there are
    /// some, are copied to the output and scored.
    #[command(allow_negative_numbers = true)]
    Predict {
        /// The checkpoint, a file written by train --save.
        checkpoint: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Write the predictions to this file (atomically) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Backend.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// List the GPU adapters wgpu can see.
    Devices,
    /// Run every kernel on the GPU and on its CPU twin and print the largest differences.
    Check,
    /// Time every kernel of a training step on the GPU (timestamps around each dispatch) and
    /// print where the step's time goes; takes train's flags for the data, cohort and step
    /// (it runs on the GPU, a software adapter too, whatever --device says but cpu, refused).
    Profile {
        #[command(flatten)]
        train: TrainArgs,
        /// Steps profiled (after three warm-up steps), and as many timed whole.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Also print what the Vulkan driver reports about each pipeline the step ran
        /// (registers, workgroup and local memory...: VK_KHR_pipeline_executable_properties).
        #[arg(long)]
        driver_stats: bool,
    },
}

/// `--device`: where the kernels run.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeviceChoice {
    /// A hardware GPU if one is found, else the CPU (faster than a software adapter such as
    /// lavapipe, which it passes over unless COHORT_ADAPTER names one).
    Auto,
    /// The GPU, a software adapter too (fails without one).
    Gpu,
    /// The CPU reference backend.
    Cpu,
}

/// `--precision`: the matmuls' input precision.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Precision {
    /// f32 everywhere
    F32,
    /// f16 matmul inputs (tensor cores where the GPU has them), f32 accumulation and master weights
    Mixed,
}

/// `--header`: whether a CSV file's first line names its columns.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HeaderChoice {
    /// Guess: a header when it names the label column, has words beside the label or numbers
    /// the columns (as pandas does)
    Auto,
    /// The first line is a header
    Yes,
    /// There is no header
    No,
}

/// `--optimizer`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OptimizerChoice {
    /// SGD with momentum
    Sgd,
    /// SGD with Nesterov momentum
    Nesterov,
    /// Adam (weight decay added to the gradient)
    Adam,
    /// AdamW (decoupled weight decay)
    Adamw,
}

/// The flags of a training run (train, compare and profile take them).
#[derive(Args, Clone)]
// Negative numbers are values (`--lr -1` is then refused by the configuration check, with the
// reason, instead of by the parser as an unknown flag).
#[command(allow_negative_numbers = true)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Feature standardisation with training statistics: `auto` (one global mean and deviation
    /// for IDX images, per feature otherwise), `feature`, `global` or `none`.
    #[arg(long, default_value = "auto")]
    pub(crate) standardize: String,
    /// Peers: `2x256` (two MLPs, one hidden layer of 256), `784-512-10,784-256-256-10`, or `2x_-256-256-_` (widths from the data).
    #[arg(long, default_value = "2x256")]
    pub(crate) peers: String,
    /// Hidden activation: relu, gelu, tanh, identity.
    #[arg(long, default_value = "relu")]
    pub(crate) activation: String,
    /// Weight α of the KL term (0 = independent training).
    #[arg(long, default_value_t = 1.0, value_parser = f32_in_range)]
    pub(crate) alpha: f32,
    /// Ramp α from 0 over this many steps.
    #[arg(long, default_value_t = 0)]
    pub(crate) alpha_warmup: usize,
    /// Softmax temperature T of the KL term (up to 1000: above, f32 no longer resolves it).
    #[arg(long, default_value_t = 1.0, value_parser = f32_in_range)]
    pub(crate) temperature: f32,
    /// Label smoothing ε of the cross-entropy: 1 − ε + ε/C on the label's class, ε/C on each
    /// other (as PyTorch's); the train CE reported is taken against these targets.
    #[arg(long, default_value_t = 0.0, value_parser = f32_in_range)]
    pub(crate) label_smoothing: f32,
    /// simultaneous (one forward for all peers) or alternating (the paper's Algorithm 1).
    #[arg(long, default_value = "simultaneous")]
    pub(crate) schedule: String,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Nesterov)]
    pub(crate) optimizer: OptimizerChoice,
    /// Learning rate (default 0.05 for SGD, 0.001 for Adam and AdamW).
    #[arg(long, value_parser = f32_in_range)]
    pub(crate) lr: Option<f32>,
    /// Momentum of sgd and nesterov [default: 0.9] (Adam's moments use β1 = 0.9, β2 = 0.999).
    #[arg(long, value_parser = f32_in_range)]
    pub(crate) momentum: Option<f32>,
    /// Weight decay, on weights and biases alike (as PyTorch's optimizers by default).
    #[arg(long, default_value_t = 5e-4, value_parser = f32_in_range)]
    pub(crate) weight_decay: f32,
    /// Learning-rate schedule: constant, cosine, or step:EPOCHS:GAMMA.
    #[arg(long, default_value = "cosine")]
    pub(crate) lr_schedule: String,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub(crate) warmup: usize,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    pub(crate) epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub(crate) batch: usize,
    /// Seed of weights and data order.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Matmul precision: f32, or mixed (f16 weight copies and activations, f16 products on
    /// tensor cores where available, f32 accumulation and master weights).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub(crate) precision: Precision,
    /// Backend.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub(crate) device: DeviceChoice,
    /// Steps between metric reads (progress bar, divergence check).
    #[arg(long, default_value_t = 25)]
    pub(crate) log_every: usize,
    /// No progress bar, no per-epoch (compare: per-run) lines and no note of where CSV labels
    /// came from (the results are still printed: train's summary, compare's table, profile's
    /// report).
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// The data and how to read it (train, compare, profile, evaluate and predict take them).
#[derive(Args, Clone)]
pub(crate) struct DataArgs {
    /// Data: `digits` (embedded), `idx:DIR` (MNIST-style), `csv:FILE`, or `blobs[:ROWS,CLASSES,DIMS[,SEED]]`
    /// (synthetic Gaussian clusters).
    #[arg(long, default_value = "digits")]
    pub(crate) data: String,
    /// CSV data: the label column, from 0, or `first`, `last` or `none` (predict's rows of
    /// features only) [default: the header's one column named label, labels, target or class,
    /// else the last; for predict, none where the rows are as wide as the cohort's inputs].
    #[arg(long)]
    pub(crate) label_column: Option<String>,
    /// CSV data: whether the first line is a header [default: auto, when it names the label
    /// column as above, its label field and another field are not numbers, or it numbers the
    /// columns: `0,1,2,…` from 0 or 1, gaps allowed, at least five].
    #[arg(long, value_enum)]
    pub(crate) header: Option<HeaderChoice>,
    /// CSV data: a second CSV file, read alike, as the test part instead of a split of --data.
    #[arg(long)]
    pub(crate) test_data: Option<PathBuf>,
    /// CSV data: the fraction of rows held out for testing [default: 0.2].
    #[arg(long)]
    pub(crate) test_fraction: Option<f64>,
    /// CSV data: the seed of the train/test split (not --seed's, so that runs with other
    /// seeds, as in compare, test on the same rows) [default: 0].
    #[arg(long)]
    pub(crate) split_seed: Option<u64>,
}

/// The files `train` reads and writes besides the data (compare and profile take none).
#[derive(Args, Clone, Default)]
pub(crate) struct FileArgs {
    /// Save a checkpoint (safetensors) after every epoch.
    #[arg(long)]
    pub(crate) save: Option<PathBuf>,
    /// Resume from a checkpoint, with the same flags and more --epochs (the learning-rate
    /// schedule then spans the new total).
    #[arg(long)]
    pub(crate) resume: Option<PathBuf>,
    /// Write per-epoch metrics: JSON lines (.jsonl), a JSON array (.json) or CSV (.csv).
    #[arg(long)]
    pub(crate) metrics: Option<PathBuf>,
    /// Write learning curves (.svg or .png).
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

/// An f32 flag's value: a number written past f32's range (`1e39`) or so near 0 that it
/// reads as 0 (`1e-50`) is refused here, rather than read as infinity or 0 and refused later as
/// "got inf" or "got 0"; `inf` and `nan` as written pass on to the configuration's own checks.
fn f32_in_range(text: &str) -> Result<f32, String> {
    let value: f32 = text.trim().parse().map_err(|e| format!("{e}"))?;
    if value.is_infinite() && !text.to_ascii_lowercase().contains("inf") {
        return Err(format!("{text} is past f32's range (about ±3.4e38)"));
    }
    if value == 0.0 && text.trim().parse::<f64>().is_ok_and(|v| v != 0.0) {
        return Err(format!(
            "{text} is nearer 0 than f32 holds (about ±1.4e-45): it would read as 0"
        ));
    }
    Ok(value)
}
