//! The `cohort` command: train a cohort by Deep Mutual Learning, compare it with independent
//! training, list GPU adapters, check the kernels against the CPU reference and profile a
//! training step kernel by kernel.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use cohort::config::{
    parse_peers, LrSchedule, OptimizerConfig, OptimizerKind, Schedule, TrainConfig,
};
use cohort::data::csv::{self, Header, LabelColumn};
use cohort::data::{DataSource, Dataset, Split, SplitRows, Standardizer};
use cohort::ops::Activation;
use cohort::trainer::{EpochReport, Trainer};
use cohort::{checkpoint, metrics, Backend, CohortError, CpuBackend, GpuBackend, Result};

#[derive(Parser)]
#[command(
    name = "cohort",
    version,
    about = "Deep Mutual Learning on any GPU",
    after_help = "GPU settings come from the environment (README, \"Hardware\"): COHORT_ADAPTER, \
                  COHORT_HARDWARE_ONLY, COHORT_MATMUL_TUNE, COHORT_MATMUL_TUNE_FILE, COHORT_COOP, \
                  COHORT_F32_MATMUL and a few for experiments. `cohort devices` shows what they \
                  give on this machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// print where the step's time goes; takes train's flags for the data, cohort and step.
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceChoice {
    /// The GPU if one is found, else the CPU.
    Auto,
    /// The GPU (fails without one).
    Gpu,
    /// The CPU reference backend.
    Cpu,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Precision {
    /// f32 everywhere
    F32,
    /// f16 matmul inputs (tensor cores where the GPU has them), f32 accumulation and master weights
    Mixed,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HeaderChoice {
    /// Guess: a header when it names the label column, has words beside the label or numbers
    /// the columns (as pandas does)
    Auto,
    /// The first line is a header
    Yes,
    /// There is no header
    No,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OptimizerChoice {
    /// SGD with momentum
    Sgd,
    /// SGD with Nesterov momentum
    Nesterov,
    /// Adam (weight decay added to the gradient)
    Adam,
    /// AdamW (decoupled weight decay)
    Adamw,
}

#[derive(Args, Clone)]
// Negative numbers are values (`--lr -1` is then refused by the configuration check, with the
// reason, instead of by the parser as an unknown flag).
#[command(allow_negative_numbers = true)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Feature standardisation with training statistics: `auto` (one global mean and deviation
    /// for IDX images, per feature otherwise), `feature`, `global` or `none`.
    #[arg(long, default_value = "auto")]
    standardize: String,
    /// Peers: `2x256` (two MLPs, one hidden layer of 256), `784-512-10,784-256-256-10`, or `_-256-256-_`.
    #[arg(long, default_value = "2x256")]
    peers: String,
    /// Hidden activation: relu, gelu, tanh, identity.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// Weight α of the KL term (0 = independent training).
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// Ramp α from 0 over this many steps.
    #[arg(long, default_value_t = 0)]
    alpha_warmup: usize,
    /// Softmax temperature T of the KL term (up to 1000: above, f32 no longer resolves it).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// simultaneous (one forward for all peers) or alternating (the paper's Algorithm 1).
    #[arg(long, default_value = "simultaneous")]
    schedule: String,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Nesterov)]
    optimizer: OptimizerChoice,
    /// Learning rate (default 0.05 for SGD, 0.001 for Adam).
    #[arg(long)]
    lr: Option<f32>,
    /// Momentum of sgd and nesterov [default: 0.9] (Adam's moments use β1 = 0.9, β2 = 0.999).
    #[arg(long)]
    momentum: Option<f32>,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Learning-rate schedule: constant, cosine, or step:EPOCHS:GAMMA.
    #[arg(long, default_value = "cosine")]
    lr_schedule: String,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of weights and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Matmul precision: f32, or mixed (f16 weight copies and activations, f16 products on
    /// tensor cores where available, f32 accumulation and master weights).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Backend.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Steps between metric reads (progress bar, divergence check).
    #[arg(long, default_value_t = 25)]
    log_every: usize,
    /// No progress bar and no per-epoch lines (train still prints its final summary).
    #[arg(long)]
    quiet: bool,
}

/// The data and how to read it (train, compare, profile and evaluate take them).
#[derive(Args, Clone)]
struct DataArgs {
    /// Data: `digits` (embedded), `idx:DIR` (MNIST-style), `csv:FILE`, or `blobs[:ROWS,CLASSES,DIMS]`.
    #[arg(long, default_value = "digits")]
    data: String,
    /// CSV data: the label column, from 0, or `first`, `last` or `none` (predict's rows of
    /// features only) [default: the header's one column named label, labels, target or class,
    /// else the last; for predict, none where the rows are as wide as the cohort's inputs].
    #[arg(long)]
    label_column: Option<String>,
    /// CSV data: whether the first line is a header [default: auto, when it names the label
    /// column as above, its label field and another field are not numbers, or it numbers the
    /// columns: `0,1,2,…` from 0 or 1, gaps allowed, at least five].
    #[arg(long, value_enum)]
    header: Option<HeaderChoice>,
    /// CSV data: a second CSV file, read alike, as the test part instead of a split of --data.
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// CSV data: the fraction of rows held out for testing [default: 0.2].
    #[arg(long)]
    test_fraction: Option<f64>,
    /// CSV data: the seed of the train/test split (not --seed's, so that runs with other
    /// seeds, as in compare, test on the same rows) [default: 0].
    #[arg(long)]
    split_seed: Option<u64>,
}

/// The files `train` reads and writes besides the data (compare and profile take none).
#[derive(Args, Clone, Default)]
struct FileArgs {
    /// Save a checkpoint (safetensors) after every epoch.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Resume from a checkpoint, with the same flags and more --epochs (the learning-rate
    /// schedule then spans the new total).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Write per-epoch metrics: JSON lines (.jsonl, or .json) or CSV (.csv).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Write learning curves (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The flags, the output paths and the data are checked before a device opens (which
        // may compile the kernels for a while), so that a typo fails at once.
        Command::Train { train: args, files } => (|| {
            check_outputs(&files, &args)?;
            let prepared = prepare(&args)?;
            let resume = resume_point(&files, &prepared)?;
            match open(args.device)? {
                Device::Gpu(g) => train(g.as_ref(), &args, &files, prepared, resume),
                Device::Cpu(c) => train(&c, &args, &files, prepared, resume),
            }
        })(),
        Command::Compare { train, seeds } => (|| {
            check_compare(&train, seeds)?;
            let prepared = prepare(&train)?;
            match open(train.device)? {
                Device::Gpu(g) => compare(g.as_ref(), &train, seeds, prepared),
                Device::Cpu(c) => compare(&c, &train, seeds, prepared),
            }
        })(),
        Command::Evaluate {
            checkpoint,
            data,
            all_rows,
            device,
        } => (|| {
            let (ckpt, rows) = evaluation_data(&checkpoint, &data, all_rows)?;
            match open(device)? {
                Device::Gpu(g) => evaluate(g.as_ref(), &ckpt, &rows),
                Device::Cpu(c) => evaluate(&c, &ckpt, &rows),
            }
        })(),
        Command::Predict {
            checkpoint,
            data,
            output,
            device,
        } => (|| {
            let (ckpt, rows) = prediction_rows(&checkpoint, &data, output.as_deref())?;
            match open(device)? {
                Device::Gpu(g) => predict(g.as_ref(), &ckpt, &rows, output.as_deref()),
                Device::Cpu(c) => predict(&c, &ckpt, &rows, output.as_deref()),
            }
        })(),
        Command::Devices => devices(),
        Command::Check => GpuBackend::from_env().and_then(|g| check(&g)),
        Command::Profile {
            train,
            steps,
            driver_stats,
        } => match (train.device, steps) {
            (DeviceChoice::Cpu, _) => Err(CohortError::InvalidConfig(
                "profile times GPU kernels: --device cpu has none".into(),
            )),
            (_, 0) => Err(CohortError::InvalidConfig("--steps must be ≥ 1".into())),
            _ => (|| {
                let prepared = prepare(&train)?;
                match open(DeviceChoice::Gpu)? {
                    Device::Gpu(g) => profile(&g, steps, driver_stats, prepared),
                    Device::Cpu(_) => unreachable!("open(Gpu) gives a GPU or an error"),
                }
            })(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Device {
    Gpu(Box<GpuBackend>),
    Cpu(CpuBackend),
}

/// Whether `--device auto` runs on the CPU backend after the GPU backend failed to open with
/// `e`: for a missing or failing GPU, not for what the user is to fix: a mistyped COHORT_*
/// setting, one this GPU cannot honour (split f32 products without cooperative matrices), an
/// adapter named in COHORT_ADAPTER that is not there, or a plan file that cannot be read or
/// written.
fn falls_back(e: &CohortError) -> bool {
    match e {
        CohortError::NoAdapter { requested, .. } => requested.is_none(),
        CohortError::InvalidConfig(_)
        | CohortError::Unsupported(_)
        | CohortError::CorruptFile { .. }
        | CohortError::Io { .. } => false,
        _ => true,
    }
}

fn open(choice: DeviceChoice) -> Result<Device> {
    let device = match choice {
        DeviceChoice::Cpu => Device::Cpu(CpuBackend),
        DeviceChoice::Gpu => Device::Gpu(Box::new(GpuBackend::from_env()?)),
        DeviceChoice::Auto => match GpuBackend::from_env() {
            Ok(g) => Device::Gpu(Box::new(g)),
            Err(e) if falls_back(&e) => {
                eprintln!("no GPU ({e}); using the CPU backend");
                Device::Cpu(CpuBackend)
            }
            Err(e) => return Err(e),
        },
    };
    match &device {
        Device::Gpu(g) => {
            eprintln!("device: {}", g.describe());
            g.warm_up()?;
        }
        Device::Cpu(c) => eprintln!("device: {}", c.describe()),
    }
    Ok(device)
}

fn parse_lr_schedule(text: &str) -> Result<LrSchedule> {
    let bad = || {
        CohortError::InvalidConfig(format!(
            "lr schedule '{text}': use constant, cosine or step:EPOCHS:GAMMA"
        ))
    };
    match text.split(':').collect::<Vec<_>>()[..] {
        ["constant"] => Ok(LrSchedule::Constant),
        ["cosine"] => Ok(LrSchedule::Cosine),
        ["step", every, gamma] => Ok(LrSchedule::Step {
            every: every.parse().map_err(|_| bad())?,
            gamma: gamma.parse().map_err(|_| bad())?,
        }),
        _ => Err(bad()),
    }
}

/// What the flags give before a device opens: the data (standardised unless disabled), its
/// standardisation, and the checked configuration.
type Prepared = (Split, Option<Standardizer>, TrainConfig);

/// The checkpoint `--resume` names, and its path.
type Resume = (PathBuf, checkpoint::Checkpoint);

/// Reads the checkpoint `--resume` names and checks it against this run, before a device
/// opens: the same configuration (more epochs allowed, and needed), the same standardisation
/// and training rows.
fn resume_point(files: &FileArgs, prepared: &Prepared) -> Result<Option<Resume>> {
    let Some(path) = &files.resume else {
        return Ok(None);
    };
    let (split, standardizer, config) = prepared;
    let ckpt = checkpoint::load(path)?;
    const SAME_DATA: &str = "the same --data, CSV flags (--label-column, --header, \
                             --test-fraction, --split-seed)";
    if ckpt.standardizer != *standardizer {
        return Err(CohortError::CheckpointMismatch(format!(
            "the inputs are standardised otherwise than in {} (resume with {SAME_DATA} and \
             --standardize)",
            path.display()
        )));
    }
    // Other rows would carry on training on what may have been the test part.
    if ckpt
        .trained_on
        .is_some_and(|f| f != split.train.fingerprint())
    {
        return Err(CohortError::CheckpointMismatch(format!(
            "{} was trained on other training rows (resume with {SAME_DATA})",
            path.display()
        )));
    }
    if ckpt.epochs_done >= config.epochs {
        return Err(CohortError::InvalidConfig(format!(
            "{} has trained {} already: to go on, ask for more with --epochs",
            path.display(),
            count(ckpt.epochs_done as u64, "epoch")
        )));
    }
    ckpt.check_config(config)?;
    Ok(Some((path.clone(), ckpt)))
}

impl DataArgs {
    /// The data `--data` names, read as the CSV flags say (which only CSV data takes).
    fn source(&self, classes: Option<usize>) -> Result<DataSource> {
        let mut source: DataSource = self.data.parse()?;
        let csv_flags = [
            ("--label-column", self.label_column.is_some()),
            ("--header", self.header.is_some()),
            ("--test-fraction", self.test_fraction.is_some()),
            ("--split-seed", self.split_seed.is_some()),
            ("--test-data", self.test_data.is_some()),
        ];
        let DataSource::Csv { options, .. } = &mut source else {
            return match csv_flags.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(CohortError::InvalidConfig(format!(
                    "{flag} applies to csv:FILE data, not to '{}'",
                    self.data
                ))),
                None => Ok(source),
            };
        };
        options.label_column = match self.label_column.as_deref() {
            None => LabelColumn::Auto,
            Some("last") => LabelColumn::Last,
            Some("first") => LabelColumn::Index(0),
            Some("none") => LabelColumn::None,
            Some(column) => LabelColumn::Index(column.parse().map_err(|_| {
                CohortError::InvalidConfig(format!(
                    "--label-column '{column}': use a column number from 0, first, last or none"
                ))
            })?),
        };
        options.header = match self.header {
            None | Some(HeaderChoice::Auto) => Header::Auto,
            Some(HeaderChoice::Yes) => Header::Present,
            Some(HeaderChoice::No) => Header::Absent,
        };
        let splits = [
            ("--test-fraction", self.test_fraction.is_some()),
            ("--split-seed", self.split_seed.is_some()),
        ];
        if let (Some(_), Some((flag, _))) =
            (&self.test_data, splits.iter().find(|(_, given)| *given))
        {
            return Err(CohortError::InvalidConfig(format!(
                "{flag} splits --data, which --test-data replaces"
            )));
        }
        if let Some(f) = self.test_fraction.filter(|f| !(*f > 0.0 && *f < 1.0)) {
            return Err(CohortError::InvalidConfig(format!(
                "--test-fraction {f}: use a fraction between 0 and 1 (both excluded)"
            )));
        }
        options.test_fraction = self.test_fraction.unwrap_or(options.test_fraction);
        options.seed = self.split_seed.unwrap_or(options.seed);
        options.min_classes = classes;
        Ok(source)
    }

    /// Loads the data, saying where CSV labels came from (unless `quiet`) and warning of unnamed
    /// header columns; returns where they came from too. `classes`: at least as many as a
    /// trained model tells apart (a CSV file to score may hold fewer than 2).
    fn load(&self, quiet: bool, classes: Option<usize>) -> Result<(DataSource, Split)> {
        let source = self.source(classes)?;
        let split = match &source {
            DataSource::Csv { path, options } => {
                let (split, layout) = match &self.test_data {
                    Some(test) => csv::load_pair(path, test, options)?,
                    None => csv::load(path, options)?,
                };
                report_layout(&layout, quiet);
                split
            }
            _ => source.load()?,
        };
        split.validate_compatible()?;
        Ok((source, split))
    }

    /// Every row of the data, its train and test parts together (a CSV file unsplit, in file
    /// order), and the training part as train takes it (none where the file does not split).
    fn load_all(&self, quiet: bool, classes: Option<usize>) -> Result<(Dataset, Option<Dataset>)> {
        if let (DataSource::Csv { path, options }, None) = (self.source(classes)?, &self.test_data)
        {
            let (data, layout) = csv::read(&path, &options)?;
            report_layout(&layout, quiet);
            let train = data.training_part(options.test_fraction, options.seed).ok();
            return Ok((data, train));
        }
        let (_, Split { train, test }) = self.load(quiet, classes)?;
        let features = [train.features.as_slice(), &test.features].concat();
        let labels = [train.labels.as_slice(), &test.labels].concat();
        Ok((
            Dataset::new(features, labels, train.cols, train.classes)?,
            Some(train),
        ))
    }
}

/// The training part of a CSV file's labelled `rows` (read whole, in file order) as train
/// takes it with these `options`, where the file splits; `classes` is the model's.
fn csv_training_part(
    rows: &csv::Rows,
    options: &csv::CsvOptions,
    classes: usize,
) -> Option<Dataset> {
    let labels = rows.labels.as_ref()?;
    let parts = SplitRows::new(rows.rows, options.test_fraction, options.seed).ok()?;
    let row = |i: usize| &rows.features[i * rows.cols..(i + 1) * rows.cols];
    let features = parts
        .train()
        .iter()
        .flat_map(|&i| row(i))
        .copied()
        .collect();
    let labels = parts.train().iter().map(|&i| labels[i]).collect();
    Dataset::new(features, labels, rows.cols, classes).ok()
}

/// Says which column a CSV file's labels came from (unless `quiet`: a wrong guess trains, but
/// on nonsense) and warns of header columns without a name.
fn report_layout(layout: &csv::CsvLayout, quiet: bool) {
    if !quiet {
        let header = match layout.names.is_empty() {
            true => "no header",
            false => "a header line",
        };
        eprintln!("csv: labels from {}, {header}", layout.describe_label());
    }
    for column in layout.unnamed_features() {
        eprintln!(
            "warning: column {column} has no name in the header (an index column?); it is read \
             as a feature"
        );
    }
}

/// Loads and (unless disabled) standardises the data, and builds the configuration from the flags.
fn prepare(args: &TrainArgs) -> Result<Prepared> {
    let (source, mut split) = args.data.load(args.quiet, None)?;
    let images = matches!(source, DataSource::Idx(_));
    let standardizer = match args.standardize.as_str() {
        "none" => None,
        "feature" => Some(Standardizer::fit(&split.train)),
        "global" => Some(Standardizer::fit_global(&split.train)),
        "auto" if images => Some(Standardizer::fit_global(&split.train)),
        "auto" => Some(Standardizer::fit(&split.train)),
        other => {
            return Err(CohortError::InvalidConfig(format!(
                "standardize '{other}': use auto, feature, global or none"
            )))
        }
    };
    if let Some(s) = &standardizer {
        s.apply(&mut split.train)?;
        s.apply(&mut split.test)?;
    }
    let activation: Activation = args.activation.parse()?;
    let classes = split.train.classes.max(split.test.classes);
    warn_of_empty_classes(&split.train.labels, classes);
    let peers = parse_peers(&args.peers, split.train.cols, classes, activation)?;
    let schedule = match args.schedule.as_str() {
        "simultaneous" => Schedule::Simultaneous,
        "alternating" => Schedule::Alternating,
        other => {
            return Err(CohortError::InvalidConfig(format!(
                "schedule '{other}': use simultaneous or alternating"
            )))
        }
    };
    let momentum = args.momentum.unwrap_or(0.9);
    if args.momentum.is_some()
        && matches!(
            args.optimizer,
            OptimizerChoice::Adam | OptimizerChoice::Adamw
        )
    {
        return Err(CohortError::InvalidConfig(
            "--momentum is sgd's and nesterov's: Adam's moments use β1 = 0.9, β2 = 0.999".into(),
        ));
    }
    let (kind, default_lr) = match args.optimizer {
        OptimizerChoice::Sgd => (
            OptimizerKind::Sgd {
                momentum,
                nesterov: false,
            },
            0.05,
        ),
        OptimizerChoice::Nesterov => (
            OptimizerKind::Sgd {
                momentum,
                nesterov: true,
            },
            0.05,
        ),
        OptimizerChoice::Adam => (
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            1e-3,
        ),
        OptimizerChoice::Adamw => (
            OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            1e-3,
        ),
    };
    let config = TrainConfig {
        peers,
        alpha: args.alpha,
        alpha_warmup_steps: args.alpha_warmup,
        temperature: args.temperature,
        label_smoothing: args.label_smoothing,
        schedule,
        optimizer: OptimizerConfig {
            kind,
            lr: args.lr.unwrap_or(default_lr),
            weight_decay: args.weight_decay,
            schedule: parse_lr_schedule(&args.lr_schedule)?,
            warmup_steps: args.warmup,
        },
        epochs: args.epochs,
        batch_size: args.batch,
        seed: args.seed,
        mixed_precision: args.precision == Precision::Mixed,
    };
    config.validate()?;
    if args.log_every == 0 {
        return Err(CohortError::InvalidConfig("--log-every must be ≥ 1".into()));
    }
    warn_of_unreachable_settings(&config, split.train.rows);
    Ok((split, standardizer, config))
}

/// Warns of settings that train, but not as asked: a batch larger than the training set (each
/// step then takes the whole set), a learning-rate or α warm-up longer than the run.
fn warn_of_unreachable_settings(config: &TrainConfig, rows: usize) {
    if config.batch_size > rows {
        eprintln!(
            "warning: --batch {} is more than the {rows} training rows: each step takes them all",
            config.batch_size
        );
    }
    let steps = rows
        .div_ceil(config.batch_size)
        .saturating_mul(config.epochs);
    for (flag, warmup) in [
        ("--warmup", config.optimizer.warmup_steps),
        ("--alpha-warmup", config.alpha_warmup_steps),
    ] {
        if warmup > steps {
            eprintln!(
                "warning: {flag} {warmup} is longer than the run's {}: it never ends",
                count(steps as u64, "step")
            );
        }
    }
}

/// Warns where some of the `classes` (the largest label + 1) have no training row: a stray
/// label (a 255 among digits) makes a model with that many outputs, which trains, but worse.
fn warn_of_empty_classes(labels: &[u32], classes: usize) {
    let present: std::collections::BTreeSet<usize> = labels.iter().map(|&l| l as usize).collect();
    let missing = classes.saturating_sub(present.len());
    let first = (0..classes).find(|c| !present.contains(c));
    let last = (0..classes).rev().find(|c| !present.contains(c));
    if let (Some(first), Some(last)) = (first, last) {
        let which = match missing {
            1 => format!("class {first} has"),
            n => format!("{n} classes (from {first} to {last}) have"),
        };
        eprintln!(
            "warning: {which} no training rows; the data's labels make {classes} classes (the \
             largest label + 1): check the labels"
        );
    }
}

/// `1 epoch`, `3 epochs`.
fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

fn pct(v: f32) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// A loss with four decimals, or in scientific notation where that would not fit a column
/// (a diverging run's `3.955e11`).
fn loss_text(v: f32) -> String {
    number_text(v.into(), 4, false)
}

/// `v` with `decimals` decimals (and its sign, where `signed`), or with three in scientific
/// notation from 1e5 on, where fixed decimals would not fit a table's column.
fn number_text(v: f64, decimals: usize, signed: bool) -> String {
    match (v.abs() < 1e5, signed) {
        (true, false) => format!("{v:.decimals$}"),
        (true, true) => format!("{v:+.decimals$}"),
        (false, false) => format!("{v:.3e}"),
        (false, true) => format!("{v:+.3e}"),
    }
}

/// Fails at once, before the data is loaded, where an output file could not be written when
/// the first epoch ends, or would overwrite another output or the data.
fn check_outputs(files: &FileArgs, args: &TrainArgs) -> Result<()> {
    let mut taken = data_files(&args.data);
    type Check = fn(&std::path::Path) -> Result<()>;
    let outputs: [(&str, &Option<PathBuf>, Check); 3] = [
        ("--metrics", &files.metrics, metrics::check_metrics_path),
        ("--plot", &files.plot, metrics::check_plot_path),
        ("--save", &files.save, checkpoint::check_writable),
    ];
    for (flag, path, check) in outputs {
        if let Some(path) = path {
            check(path)?;
            claim_output(&mut taken, flag, path)?;
        }
    }
    Ok(())
}

/// The CSV files `data` names, resolved, each with its flag (a folder of IDX files has fixed
/// names; a path that does not resolve is the data loader's to report).
fn data_files(data: &DataArgs) -> Vec<(&'static str, PathBuf)> {
    let mut files = Vec::new();
    if let Ok(DataSource::Csv { path, .. }) = data.data.parse::<DataSource>() {
        if let Ok(path) = std::fs::canonicalize(&path) {
            files.push(("--data", path));
        }
    }
    if let Some(Ok(path)) = data.test_data.as_ref().map(std::fs::canonicalize) {
        files.push(("--test-data", path));
    }
    files
}

/// Refuses an output `path` (given as `flag`) that names one of the `taken` files (each with
/// what names it), then takes it too.
fn claim_output(
    taken: &mut Vec<(&'static str, PathBuf)>,
    flag: &'static str,
    path: &std::path::Path,
) -> Result<()> {
    let target = checkpoint::resolved_target(path)?;
    if let Some((other, _)) = taken.iter().find(|(_, p)| *p == target) {
        return Err(CohortError::InvalidConfig(format!(
            "{other} and {flag} name the same file, {}: {flag} would overwrite it",
            target.display()
        )));
    }
    taken.push((flag, target));
    Ok(())
}

fn train<B: Backend>(
    backend: &B,
    args: &TrainArgs,
    files: &FileArgs,
    prepared: Prepared,
    resume: Option<Resume>,
) -> Result<()> {
    let (split, standardizer, config) = prepared;
    let models: Vec<String> = config.peers.iter().map(|p| p.name()).collect();
    let history = run_training(
        backend,
        args,
        Outputs {
            files,
            lines: !args.quiet,
        },
        resume,
        &split,
        standardizer,
        config,
    )?;
    // The result, with --quiet too (which leaves out the progress).
    if let Some(last) = history.last() {
        print_summary(last, &models);
    }
    Ok(())
}

/// What a training run writes as it goes.
struct Outputs<'a> {
    /// The files train's flags name.
    files: &'a FileArgs,
    /// The data line and each epoch's line on stderr (the progress bar shows unless --quiet).
    lines: bool,
}

/// Trains the cohort `config` on `split` (from `resume`'s checkpoint, if given), writing
/// `out`.
fn run_training<B: Backend>(
    backend: &B,
    args: &TrainArgs,
    out: Outputs,
    resume: Option<Resume>,
    split: &Split,
    standardizer: Option<Standardizer>,
    config: TrainConfig,
) -> Result<Vec<EpochReport>> {
    let models: Vec<String> = config.peers.iter().map(|p| p.name()).collect();
    let mut trainer = match resume {
        Some((path, ckpt)) => {
            let t = ckpt.restore(backend, Some(&config))?;
            if out.lines {
                eprintln!("resumed {} after epoch {}", path.display(), t.epochs_done());
            }
            t
        }
        None => Trainer::new(backend, config.clone())?,
    };
    trainer.log_every = args.log_every;
    if out.lines {
        eprintln!(
            "data: {} train / {} test rows, {} features, {} classes; cohort: {} (α = {}, T = {}, {:?})",
            split.train.rows,
            split.test.rows,
            split.train.cols,
            config.classes(),
            models.join(", "),
            config.alpha,
            config.temperature,
            config.schedule
        );
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let style =
            ProgressStyle::with_template("epoch {prefix:>3} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        ProgressBar::new(0).with_style(style)
    };
    let current_epoch = std::cell::Cell::new(trainer.epochs_done() + 1);
    let warned_of_divergence = std::cell::Cell::new(false);
    let history = trainer.fit(
        split,
        |trainer, report| {
            bar.finish_and_clear();
            if out.lines {
                let peers: Vec<String> =
                    report.peers.iter().map(|p| pct(p.test_accuracy)).collect();
                eprintln!(
                    "epoch {:>3}  test accuracy {}  ensemble {}  ({:.2}s)",
                    report.epoch,
                    peers.join(" "),
                    pct(report.ensemble_accuracy),
                    report.seconds
                );
            }
            current_epoch.set(report.epoch + 1);
            let diverging = report.diverging_peers(config.classes());
            if !diverging.is_empty() && !warned_of_divergence.replace(true) {
                let losses: Vec<String> = diverging
                    .iter()
                    .map(|&i| format!("peer {i} {}", loss_text(report.peers[i].train_ce)))
                    .collect();
                eprintln!(
                    "warning: epoch {}: training cross-entropy ({}) over twice a uniform \
                     guess's ({:.4}): training is diverging; a smaller --lr (now {}) or a \
                     --warmup steadies it",
                    report.epoch,
                    losses.join(", "),
                    (config.classes() as f32).ln(),
                    config.optimizer.lr
                );
            }
            // Every epoch's report, those before a resume included.
            let history = trainer.reports();
            if let Some(path) = &out.files.metrics {
                metrics::write_metrics(path, &metrics::rows(history, &models))?;
            }
            if let Some(path) = &out.files.plot {
                metrics::plot_curves(path, history, &models)?;
            }
            if let Some(path) = &out.files.save {
                checkpoint::save(trainer, standardizer.as_ref(), path)?;
            }
            bar.reset();
            Ok(())
        },
        |p| {
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64);
            bar.set_prefix(format!("{}", current_epoch.get()));
            let losses: Vec<String> = p.loss.iter().map(|&l| loss_text(l)).collect();
            let accs: Vec<String> = p.accuracy.iter().map(|&a| pct(a)).collect();
            bar.set_message(format!(
                "loss {}  train acc {}",
                losses.join(" "),
                accs.join(" ")
            ));
        },
    )?;
    bar.finish_and_clear();
    Ok(history)
}

fn print_summary(report: &EpochReport, models: &[String]) {
    println!();
    println!("after epoch {}:", report.epoch);
    println!(
        "{:<10} {:<22} {:>10} {:>10} {:>10} {:>10}",
        "peer", "model", "train CE", "train KL", "test loss", "test acc"
    );
    for (i, p) in report.peers.iter().enumerate() {
        println!(
            "{:<10} {:<22} {:>10} {:>10} {:>10} {:>10}",
            i,
            models[i],
            loss_text(p.train_ce),
            loss_text(p.train_kl),
            loss_text(p.test_loss),
            pct(p.test_accuracy)
        );
    }
    println!(
        "{:<10} {:<22} {:>10} {:>10} {:>10} {:>10}",
        "ensemble",
        "mean of probabilities",
        "",
        "",
        "",
        pct(report.ensemble_accuracy)
    );
}

/// Reads the checkpoint `path` and the rows to score (the data's test part, or with `all_rows`
/// all of it), standardised with the checkpoint's statistics (not fitted anew), before a device
/// opens. Scoring a test part, warns where the checkpoint cannot show that it did not train on
/// those rows.
fn evaluation_data(
    path: &std::path::Path,
    data: &DataArgs,
    all_rows: bool,
) -> Result<(checkpoint::Checkpoint, Dataset)> {
    let ckpt = checkpoint::load(path)?;
    let (inputs, classes) = (ckpt.config.inputs(), ckpt.config.classes());
    // With the training part as train took it (from the rows scored with `all_rows`).
    let (mut rows, mut train) = match all_rows {
        true => data.load_all(false, Some(classes))?,
        false => {
            let (_, split) = data.load(false, Some(classes))?;
            (split.test, Some(split.train))
        }
    };
    let mismatch = |labels: String| {
        CohortError::CheckpointMismatch(format!(
            "the cohort in {} takes {inputs} features and tells {classes} classes apart; the \
             rows to score have {} features{labels}",
            path.display(),
            rows.cols
        ))
    };
    if rows.cols != inputs {
        return Err(mismatch(String::new()));
    }
    if let Some(&label) = rows.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(mismatch(format!(" and a label {label}")));
    }
    if let Some(s) = &ckpt.standardizer {
        s.apply(&mut rows)?;
        train.as_mut().map(|t| s.apply(t)).transpose()?;
    }
    // A test part: did the cohort train on other rows (which may be among these)?
    match (&train, ckpt.trained_on) {
        _ if all_rows => warn_of_training_rows(&ckpt, train.as_ref()),
        (None, _) => {}
        _ if data.test_data.is_some() => {}
        (Some(_), None) => eprintln!(
            "warning: {} does not record the rows it trained on (written before 2026-12-01): \
             whether this test part holds some cannot be checked",
            path.display()
        ),
        (Some(t), Some(f)) if f != t.fingerprint() => eprintln!(
            "warning: these training rows are not those {} trained on (other data or split): \
             its test part may hold rows the cohort trained on",
            path.display()
        ),
        (Some(_), Some(_)) => {}
    }
    // Classes counted over the training part too may exceed the model's: these rows' do not.
    rows.classes = classes;
    Ok((ckpt, rows))
}

/// Scores the checkpoint's cohort on `rows` and prints the table.
fn evaluate<B: Backend>(backend: &B, ckpt: &checkpoint::Checkpoint, rows: &Dataset) -> Result<()> {
    let mut trainer = ckpt.restore(backend, None)?;
    let uploaded = trainer.upload(rows)?;
    let eval = trainer.evaluate(&uploaded)?;
    let models: Vec<String> = ckpt.config.peers.iter().map(|p| p.name()).collect();
    println!(
        "after {} ({}):",
        count(ckpt.epochs_done as u64, "epoch"),
        count(rows.rows as u64, "row")
    );
    println!(
        "{:<10} {:<22} {:>10} {:>10}",
        "peer", "model", "loss", "accuracy"
    );
    for (i, model) in models.iter().enumerate() {
        println!(
            "{:<10} {:<22} {:>10} {:>10}",
            i,
            model,
            loss_text(eval.loss[i]),
            pct(eval.accuracy[i])
        );
    }
    println!(
        "{:<10} {:<22} {:>10} {:>10}",
        "ensemble",
        "mean of probabilities",
        "",
        pct(eval.ensemble_accuracy)
    );
    Ok(())
}

/// The checkpoint and every row of the data to predict (labelled or not; standardised with the
/// checkpoint's statistics), before a device opens; refuses an output that would overwrite the
/// data or the checkpoint.
fn prediction_rows(
    path: &std::path::Path,
    data: &DataArgs,
    output: Option<&std::path::Path>,
) -> Result<(checkpoint::Checkpoint, csv::Rows)> {
    let split_flags = [
        ("--test-data", data.test_data.is_some()),
        ("--test-fraction", data.test_fraction.is_some()),
        ("--split-seed", data.split_seed.is_some()),
    ];
    if let Some((flag, _)) = split_flags.iter().find(|(_, given)| *given) {
        return Err(CohortError::InvalidConfig(format!(
            "{flag}: predict takes every row of --data, unsplit"
        )));
    }
    if let Some(output) = output {
        checkpoint::check_writable(output)?;
        let mut taken = data_files(data);
        if let Ok(checkpoint) = std::fs::canonicalize(path) {
            taken.push(("the checkpoint", checkpoint));
        }
        claim_output(&mut taken, "--output", output)?;
    }
    let ckpt = checkpoint::load(path)?;
    let (inputs, classes) = (ckpt.config.inputs(), ckpt.config.classes());
    // With the training part as train took it (for a CSV file, found once the rows are known
    // to have labels).
    let (mut rows, layout, train) = match data.source(Some(classes))? {
        DataSource::Csv {
            path: file,
            options,
        } => {
            let (rows, layout) = csv::read_rows(&file, &options, Some(inputs))?;
            report_layout(&layout, false);
            (rows, Some((layout, options)), None)
        }
        _ => {
            let (all, train) = data.load_all(false, Some(classes))?;
            let rows = csv::Rows {
                rows: all.rows,
                cols: all.cols,
                features: all.features,
                labels: Some(all.labels),
            };
            (rows, None, train)
        }
    };
    if rows.cols != inputs {
        let label = match layout.as_ref().and_then(|(l, _)| l.label_column.map(|_| l)) {
            Some(l) => format!(
                " besides the labels in {} (--label-column none reads every column as a \
                 feature)",
                l.describe_label()
            ),
            None => String::new(),
        };
        return Err(CohortError::CheckpointMismatch(format!(
            "the cohort in {} takes {inputs} features; the rows to predict have {}{label}",
            path.display(),
            rows.cols
        )));
    }
    if let Some(&label) = rows
        .labels
        .iter()
        .flatten()
        .find(|&&l| l as usize >= classes)
    {
        return Err(CohortError::CheckpointMismatch(format!(
            "the cohort in {} tells {classes} classes apart; the rows to predict have a label \
             {label} (--label-column none reads rows without labels)",
            path.display()
        )));
    }
    if rows.labels.is_some() {
        let mut train = match &layout {
            Some((_, options)) => csv_training_part(&rows, options, classes),
            None => train,
        };
        if let (Some(s), Some(t)) = (&ckpt.standardizer, train.as_mut()) {
            s.apply(t)?;
        }
        warn_of_training_rows(&ckpt, train.as_ref());
    }
    if let Some(s) = &ckpt.standardizer {
        s.apply_rows(&mut rows.features)?;
    }
    Ok((ckpt, rows))
}

/// Every row of the data scored: warns where they include the rows the checkpoint trained on
/// (`train`, the data's training part as train took it, standardised with the checkpoint's
/// statistics, has the fingerprint it recorded), on which a cohort scores better than on new
/// ones. Says nothing where it cannot tell (a checkpoint without the record, data that does not
/// split).
fn warn_of_training_rows(ckpt: &checkpoint::Checkpoint, train: Option<&Dataset>) {
    let (Some(trained_on), Some(train)) = (ckpt.trained_on, train) else {
        return;
    };
    if train.fingerprint() == trained_on {
        eprintln!(
            "warning: these rows include the {} the cohort trained on (the data's training \
             part), on which it scores better than on new rows (evaluate without --all-rows \
             scores the test part alone)",
            count(train.rows as u64, "row")
        );
    }
}

/// Predicts `rows` with the checkpoint's cohort and writes the CSV table (to `output`
/// atomically, or to standard output); says on standard error how many rows it predicted and,
/// where they have labels, how many each peer and the ensemble got right.
fn predict<B: Backend>(
    backend: &B,
    ckpt: &checkpoint::Checkpoint,
    rows: &csv::Rows,
    output: Option<&std::path::Path>,
) -> Result<()> {
    let mut trainer = ckpt.restore(backend, None)?;
    let predictions = trainer.predict(&rows.features)?;
    let table = prediction_table(
        &predictions,
        ckpt.config.peers.len(),
        rows.labels.as_deref(),
    );
    match output {
        Some(path) => checkpoint::write_atomic(path, table.as_bytes())?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(table.as_bytes()).and_then(|()| out.flush()) {
                // A reader that stopped early (`| head`) wanted no more.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.map_err(|e| CohortError::io("standard output", e))?,
            }
        }
    }
    let written = output.map_or(String::new(), |p| format!(" into {}", p.display()));
    eprintln!(
        "predicted {}{written} with the cohort of {} ({})",
        count(rows.rows as u64, "row"),
        checkpoint_name(ckpt),
        count(ckpt.epochs_done as u64, "epoch")
    );
    if let Some(labels) = &rows.labels {
        let right = |classes: &[usize]| {
            let n = classes
                .iter()
                .zip(labels)
                .filter(|&(&c, &l)| c == l as usize)
                .count();
            pct(n as f32 / rows.rows as f32)
        };
        let peers: Vec<String> = (0..ckpt.config.peers.len())
            .filter_map(|i| predictions.peer_classes(i).map(|c| right(&c)))
            .collect();
        eprintln!(
            "accuracy on the rows' labels: ensemble {}, peers {}",
            right(&predictions.ensemble_classes()),
            peers.join(", ")
        );
    }
    Ok(())
}

/// The peers' models, as train names them: `784-128-10 + 784-128-10`.
fn checkpoint_name(ckpt: &checkpoint::Checkpoint) -> String {
    let models: Vec<String> = ckpt.config.peers.iter().map(|p| p.name()).collect();
    models.join(" + ")
}

/// The CSV table of `predict`: a header, then one line per row: its index from 0, its label
/// (where the rows have labels), the ensemble's class, each peer's class and the ensemble's
/// probability of each class (the mean of the peers' softmax), shortest round-trip decimals.
fn prediction_table(
    predictions: &cohort::trainer::Predictions,
    peers: usize,
    labels: Option<&[u32]>,
) -> String {
    use std::fmt::Write;
    let peer_classes: Vec<Vec<usize>> = (0..peers)
        .filter_map(|i| predictions.peer_classes(i))
        .collect();
    let mut header = vec!["row".to_string()];
    if labels.is_some() {
        header.push("label".into());
    }
    header.push("predicted".into());
    header.extend((0..peers).map(|i| format!("peer{i}")));
    header.extend((0..predictions.classes).map(|c| format!("p{c}")));
    let mut table = header.join(",") + "\n";
    let ensemble = predictions.ensemble_classes();
    let probabilities = predictions.ensemble.chunks_exact(predictions.classes);
    for (r, (class, p)) in ensemble.iter().zip(probabilities).enumerate() {
        let _ = write!(table, "{r}");
        if let Some(labels) = labels {
            let _ = write!(table, ",{}", labels[r]);
        }
        let _ = write!(table, ",{class}");
        for classes in &peer_classes {
            let _ = write!(table, ",{}", classes[r]);
        }
        for v in p {
            let _ = write!(table, ",{v}");
        }
        table.push('\n');
    }
    table
}

/// Mean and sample standard deviation (None for a single value, where it is undefined).
fn mean_std(values: &[f32]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (values.len() > 1).then(|| {
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        var.sqrt()
    });
    (mean, std)
}

/// Compare's own flag checks.
fn check_compare(args: &TrainArgs, seeds: u64) -> Result<()> {
    if seeds == 0 {
        return Err(CohortError::InvalidConfig("--seeds must be ≥ 1".into()));
    }
    if args.alpha <= 0.0 {
        return Err(CohortError::InvalidConfig(
            "compare needs --alpha > 0 for the mutual run".into(),
        ));
    }
    Ok(())
}

fn compare<B: Backend>(
    backend: &B,
    args: &TrainArgs,
    seeds: u64,
    prepared: Prepared,
) -> Result<()> {
    let (split, standardizer, base) = prepared;
    let models: Vec<String> = base.peers.iter().map(|p| p.name()).collect();
    let p = base.peers.len();
    // Final test accuracy ([mode][seed][peer..., ensemble]) and test loss ([mode][seed][peer]).
    let mut accuracy: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    let mut loss: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    for seed in (0..seeds).map(|i| args.seed.wrapping_add(i)) {
        for (mode, alpha) in [(0, 0.0), (1, args.alpha)] {
            let mut config = base.clone();
            config.alpha = alpha;
            config.seed = seed;
            // The progress bar only (unless --quiet): a line per run follows.
            let no_files = FileArgs::default();
            let history = run_training(
                backend,
                args,
                Outputs {
                    files: &no_files,
                    lines: false,
                },
                None,
                &split,
                standardizer.clone(),
                config,
            )?;
            let last = history
                .last()
                .ok_or_else(|| CohortError::EmptyData("no epochs".into()))?;
            let mut accs: Vec<f32> = last.peers.iter().map(|r| r.test_accuracy).collect();
            accs.push(last.ensemble_accuracy);
            eprintln!(
                "seed {seed} {}: test accuracy of the peers {}, of the ensemble {}",
                ["independent", "mutual     "][mode],
                accs[..p]
                    .iter()
                    .map(|a| pct(*a))
                    .collect::<Vec<_>>()
                    .join(" "),
                pct(last.ensemble_accuracy)
            );
            accuracy[mode].push(accs);
            loss[mode].push(last.peers.iter().map(|r| r.test_loss).collect());
        }
    }
    println!();
    println!(
        "after {}, mean ± std over {} (α = {}, T = {}, {:?})",
        count(base.epochs as u64, "epoch"),
        count(seeds, "seed"),
        args.alpha,
        base.temperature,
        base.schedule
    );
    println!(
        "{:<28} {:>19} {:>19} {:>8}",
        "test accuracy %", "independent (α=0)", "mutual", "gain"
    );
    let row = |name: String, table: &[Vec<Vec<f32>>; 2], k: usize, scale: f64| {
        let column = |mode: usize| table[mode].iter().map(|r| r[k]).collect::<Vec<_>>();
        let ((im, is), (mm, ms)) = (mean_std(&column(0)), mean_std(&column(1)));
        // Three decimals, or scientific notation for a diverged run's huge losses.
        let num = |v: f64, signed: bool| number_text(v, 3, signed);
        let spread = |s: Option<f64>| s.map_or("n/a".into(), |s| num(scale * s, false));
        println!(
            // Spreads up to 99.999 keep the columns in line.
            "{:<28} {:>10} ± {:<6} {:>10} ± {:<6} {:>8}",
            name,
            num(scale * im, false),
            spread(is),
            num(scale * mm, false),
            spread(ms),
            num(scale * (mm - im), true)
        );
    };
    for (k, model) in models.iter().enumerate() {
        row(format!("peer {k} ({model})"), &accuracy, k, 100.0);
    }
    row("ensemble".into(), &accuracy, p, 100.0);
    println!("{:<28}", "test cross-entropy (lower is better)");
    for (k, model) in models.iter().enumerate() {
        row(format!("peer {k} ({model})"), &loss, k, 1.0);
    }
    Ok(())
}

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
fn devices() -> Result<()> {
    let list = cohort::gpu::list_adapters();
    if list.is_empty() {
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
                "  loss and accuracy rows: {}; threads per row: {} for 10 classes, {} for 1000",
                row_status(&g),
                g.row_threads(10),
                g.row_threads(1000)
            );
            println!(
                "  largest storage binding {} MiB",
                c.max_storage_binding >> 20
            );
        }
        Err(e) if falls_back(&e) => {
            println!("\nno usable GPU ({e}); cohort will use the CPU backend")
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn check(gpu: &GpuBackend) -> Result<()> {
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
fn profile(gpu: &GpuBackend, steps: usize, driver_stats: bool, prepared: Prepared) -> Result<()> {
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
        "GPU time per step over {steps} steps of {} (batch {batch}, {}):",
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
/// keeps none), and the `failed` pipelines' errors.
fn print_driver_statistics(stats: &cohort::gpu::driver_stats::DriverStatistics, failed: usize) {
    let n = stats.pipelines.len();
    match &stats.not_kept {
        Some(why) => println!(
            "driver statistics: none ({why}); the {n} pipelines profiled were rebuilt for them{}",
            if failed == 0 { " without error" } else { "" }
        ),
        None => println!(
            "driver statistics of the {n} pipelines profiled \
             (VK_KHR_pipeline_executable_properties; rebuilt from the same WGSL and constants):"
        ),
    }
    for p in &stats.pipelines {
        match &p.executables {
            Ok(_) if stats.not_kept.is_some() => {}
            Ok(executables) => {
                println!("  {}", p.label);
                for e in executables {
                    let stats: Vec<String> = e
                        .statistics
                        .iter()
                        .map(|s| format!("{} {}", s.name, s.value))
                        .collect();
                    println!(
                        "    {} (subgroups of {}): {}",
                        e.name,
                        e.subgroup_size,
                        stats.join(", ")
                    );
                }
            }
            Err(err) => println!("  {}\n    {err}", p.label),
        }
    }
}
