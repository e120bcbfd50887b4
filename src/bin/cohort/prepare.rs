//! What is checked and loaded before a device opens (which may compile the kernels for a
//! while), so that a typo fails at once: the data, its standardisation, the configuration, a
//! checkpoint to resume from and the output paths.

use std::path::PathBuf;

use cohort::config::{
    parse_peers, LrSchedule, OptimizerConfig, OptimizerKind, Schedule, TrainConfig,
};
use cohort::data::csv::{self, Header, LabelColumn};
use cohort::data::{DataSource, Dataset, Split, SplitRows, Standardizer};
use cohort::ops::Activation;
use cohort::{checkpoint, metrics, CohortError, Result};

use crate::args::{DataArgs, FileArgs, HeaderChoice, OptimizerChoice, Precision, TrainArgs};
use crate::text::count;

/// Parses `--lr-schedule`: `constant`, `cosine` or `step:EPOCHS:GAMMA`.
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
pub(crate) type Prepared = (Split, Option<Standardizer>, TrainConfig);

/// The checkpoint `--resume` names, and its path.
pub(crate) type Resume = (PathBuf, checkpoint::Checkpoint);

/// Reads the checkpoint `--resume` names and checks it against this run, before a device
/// opens: the same configuration (more epochs allowed, and needed), the same standardisation
/// and training rows.
pub(crate) fn resume_point(files: &FileArgs, prepared: &Prepared) -> Result<Option<Resume>> {
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
    match ckpt.trained_on {
        Some(f) if f != split.train.fingerprint() => {
            return Err(CohortError::CheckpointMismatch(format!(
                "{} was trained on other training rows (resume with {SAME_DATA})",
                path.display()
            )))
        }
        Some(_) => {}
        None => eprintln!(
            "warning: {} does not record the rows it trained on (written before 2026-12-01): \
             that these are the same cannot be checked (resume with {SAME_DATA})",
            path.display()
        ),
    }
    if ckpt.epochs_done >= config.epochs {
        return Err(CohortError::InvalidConfig(format!(
            "{} has trained {} already: to go on, ask for more with --epochs",
            path.display(),
            count(ckpt.epochs_done as u64, "epoch")
        )));
    }
    ckpt.check_config(config)?;
    // On the same rows and batch each epoch took as many steps as now: a count that disagrees
    // was made otherwise (Trainer::step by hand, or an edited file), and the learning-rate
    // schedule goes on from it.
    let per_epoch = split.train.rows.div_ceil(config.batch_size.max(1));
    let expected = ckpt.epochs_done.saturating_mul(per_epoch);
    if ckpt.trained_on.is_some() && ckpt.steps_done != expected {
        eprintln!(
            "warning: {} records {} over {}, where {} of --batch {} take {expected}: the \
             learning-rate schedule goes on from step {}",
            path.display(),
            count(ckpt.steps_done as u64, "step"),
            count(ckpt.epochs_done as u64, "epoch"),
            count(split.train.rows as u64, "row"),
            config.batch_size,
            ckpt.steps_done
        );
    }
    Ok(Some((path.clone(), ckpt)))
}

impl DataArgs {
    /// The data `--data` names, read as the CSV flags say (which only CSV data takes).
    pub(crate) fn source(&self, classes: Option<usize>) -> Result<DataSource> {
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
    pub(crate) fn load(&self, quiet: bool, classes: Option<usize>) -> Result<(DataSource, Split)> {
        let source = self.source(classes)?;
        let split = match &source {
            DataSource::Csv { path, options } => {
                let (split, layout) = match &self.test_data {
                    Some(test) => {
                        let same = |a: &std::path::Path, b: &std::path::Path| {
                            matches!(
                                (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                                (Ok(a), Ok(b)) if a == b
                            )
                        };
                        if same(path, test) {
                            return Err(CohortError::InvalidConfig(format!(
                                "--test-data names the --data file, {}: test accuracy would \
                                 be measured on the training rows",
                                test.display()
                            )));
                        }
                        let (split, layout) = csv::load_pair(path, test, options)?;
                        if split.train.fingerprint() == split.test.fingerprint() {
                            eprintln!(
                                "warning: --test-data holds the same rows as --data: test \
                                 accuracy is measured on the training rows"
                            );
                        }
                        (split, layout)
                    }
                    None => csv::load(path, options)?,
                };
                report_layout(&layout, quiet, self);
                split
            }
            _ => source.load()?,
        };
        split.validate_compatible()?;
        Ok((source, split))
    }

    /// Every row of the data, its train and test parts together (a CSV file unsplit, in file
    /// order), and the training part as train takes it (none where the file does not split).
    pub(crate) fn load_all(
        &self,
        quiet: bool,
        classes: Option<usize>,
    ) -> Result<(Dataset, Option<Dataset>)> {
        if let (DataSource::Csv { path, options }, None) = (self.source(classes)?, &self.test_data)
        {
            let (data, layout) = csv::read(&path, &options)?;
            report_layout(&layout, quiet, self);
            let train =
                SplitRows::where_they_split(data.rows, options.test_fraction, options.seed)?
                    .map(|parts| data.subset(parts.train()))
                    .transpose()?;
            return Ok((data, train));
        }
        let (_, split) = self.load(quiet, classes)?;
        Ok((split.joined()?, Some(split.train)))
    }
}

/// Says which column a CSV file's labels came from (unless `quiet`: a wrong guess trains, but
/// on nonsense) and warns of a header guessed from a line of numbers (unless `--header` said),
/// of header columns without a name, and (unless `--label-column` said) of columns read as
/// features whose names are a label's.
pub(crate) fn report_layout(layout: &csv::CsvLayout, quiet: bool, data: &DataArgs) {
    let label_given = data.label_column.is_some();
    let header_guessed = matches!(data.header, None | Some(HeaderChoice::Auto));
    if !quiet {
        let header = match layout.names.is_empty() {
            true => "no header",
            false => "a header line",
        };
        eprintln!("csv: labels from {}, {header}", layout.describe_label());
    }
    // A header of numbers only (as pandas writes for unnamed columns) was a guess from a line
    // that could be a row (not where --header yes said so): said even with --quiet, since a
    // row would be lost.
    let numbers = |name: &String| name.is_empty() || name.parse::<u64>().is_ok();
    if header_guessed && !layout.names.is_empty() && layout.names.iter().all(numbers) {
        eprintln!(
            "warning: the first line ({}) was taken for a header of column numbers, as pandas \
             writes one; --header no reads it as a row",
            layout.names.join(",")
        );
    }
    // A column named as labels are, read as a feature (a second such name, or rows as wide
    // as a cohort's inputs taken as features only): the labels would leak into the inputs.
    // Not where --label-column said which column holds them.
    for column in layout
        .features_named_as_labels()
        .into_iter()
        .filter(|_| !label_given)
    {
        eprintln!(
            "warning: column {column} ('{}') is read as a feature though its name is a label's \
             (labels from {}); --label-column says which column holds them",
            layout.names[column],
            layout.describe_label()
        );
    }
    for column in layout.unnamed_features() {
        eprintln!(
            "warning: column {column} has no name in the header (an index column?); it is read \
             as a feature"
        );
    }
}

/// Rows of `cols` features standardised with the training rows' statistics (`whose`: which
/// statistics, which rows): warns where they spread far wider than the training rows did (the
/// median feature's root mean square past 4; the training rows' is 1 per feature standardised
/// per feature, and their mean square 1 standardised globally), the mark of
/// features scaled otherwise (pixels 0..255 against a model trained on 0..1), which the cohort
/// would silently misread (or, in f16, overflow on). The median, so that a few features the
/// training rows hardly varied (a digit's border pixels) do not set it off.
pub(crate) fn warn_of_scale(standardised: &[f32], cols: usize, whose: &str) {
    let rows = standardised.len() / cols.max(1);
    if rows == 0 {
        return;
    }
    let mut spread: Vec<f64> = (0..cols)
        .map(|c| {
            let column = standardised.iter().skip(c).step_by(cols);
            let squares: f64 = column.map(|&v| f64::from(v).powi(2)).sum();
            (squares / rows as f64).sqrt()
        })
        .collect();
    spread.sort_by(f64::total_cmp);
    let median = spread[cols / 2];
    if median > 4.0 {
        eprintln!(
            "warning: {whose} features have a root mean square of {median:.3e} (the median \
             feature's; the training rows': about 1): are they scaled as the training data's \
             were?"
        );
    }
}

/// A [`CohortError::NonFinite`] from standardising `rows` (others as they are), saying which
/// rows and what leaves the features as they are.
pub(crate) fn rows_named(e: CohortError, rows: &str) -> CohortError {
    match e {
        CohortError::NonFinite { what } => CohortError::NonFinite {
            what: format!(
                "{what}, in {rows}; values this far from the others need rescaling before \
                 training (--standardize none leaves features as they are)"
            ),
        },
        other => other,
    }
}

/// Loads and (unless disabled) standardises the data, and builds the configuration from the flags.
pub(crate) fn prepare(args: &TrainArgs) -> Result<Prepared> {
    let (source, mut split) = args.data.load(args.quiet, None)?;
    let images = matches!(source, DataSource::Idx(_));
    let standardizer = match args.standardize.as_str() {
        "none" => None,
        "feature" => Some(Standardizer::fit(&split.train)?),
        "global" => Some(Standardizer::fit_global(&split.train)?),
        "auto" if images => Some(Standardizer::fit_global(&split.train)?),
        "auto" => Some(Standardizer::fit(&split.train)?),
        other => {
            return Err(CohortError::InvalidConfig(format!(
                "standardize '{other}': use auto, feature, global or none"
            )))
        }
    };
    if let Some(s) = &standardizer {
        // The row a value overflowed in, named by its part (a split's rows are shuffled, so
        // the value, which the message holds, is what finds it in the file).
        let part = |e, which: &str| rows_named(e, &format!("{which} (--data {})", args.data.data));
        s.apply(&mut split.train)
            .map_err(|e| part(e, "the training part"))?;
        s.apply(&mut split.test)
            .map_err(|e| match &args.data.test_data {
                Some(file) => rows_named(e, &format!("--test-data {}", file.display())),
                None => part(e, "the test part"),
            })?;
        // A test file of its own may be scaled otherwise.
        warn_of_scale(
            &split.test.features,
            split.test.cols,
            "standardised with the training rows' statistics, the test rows'",
        );
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

/// Warns where some of the `classes` (the largest label + 1; at least 10 for IDX) have no training row: a stray
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
            "warning: {which} no training rows of the {classes} classes the data makes (the \
             largest label + 1; at least 10 for IDX images): check the labels"
        );
    }
}

/// Fails at once, before the data is loaded, where an output file could not be written when
/// the first epoch ends, or would overwrite another output, the data or the checkpoint
/// `--resume` reads (which `--save` may write over, as a run continued in place does).
pub(crate) fn check_outputs(files: &FileArgs, args: &TrainArgs) -> Result<()> {
    let mut taken = files_in_use(&args.data);
    if let Some(Ok(path)) = files.resume.as_ref().map(std::fs::canonicalize) {
        taken.push(("--resume", path));
    }
    type Check = fn(&std::path::Path) -> Result<()>;
    let outputs: [(&str, &Option<PathBuf>, Check); 3] = [
        ("--metrics", &files.metrics, metrics::check_metrics_path),
        ("--plot", &files.plot, metrics::check_plot_path),
        ("--save", &files.save, checkpoint::check_writable),
    ];
    for (flag, path, check) in outputs {
        if let Some(path) = path {
            check(path)?;
            if flag == "--save" {
                taken.retain(|&(other, _)| other != "--resume");
            }
            claim_output(&mut taken, flag, path)?;
        }
    }
    Ok(())
}

/// The files a run reads, which its outputs must not overwrite, resolved, each with what names
/// it: the data (a CSV file, or a folder's IDX files), `--test-data`, and the matmul plan file
/// `COHORT_MATMUL_TUNE_FILE` names. (A path that does not resolve is its reader's to report.)
pub(crate) fn files_in_use(data: &DataArgs) -> Vec<(&'static str, PathBuf)> {
    let mut files = Vec::new();
    let paths = match data.data.parse::<DataSource>() {
        Ok(DataSource::Csv { path, .. }) => vec![path],
        Ok(DataSource::Idx(dir)) => cohort::data::idx::data_files(dir),
        _ => Vec::new(),
    };
    for path in paths {
        if let Ok(path) = checkpoint::resolved_target(&path) {
            files.push(("--data", path));
        }
    }
    if let Some(Ok(path)) = data.test_data.as_ref().map(std::fs::canonicalize) {
        files.push(("--test-data", path));
    }
    if let Some(Ok(path)) = std::env::var_os("COHORT_MATMUL_TUNE_FILE")
        .map(|p| checkpoint::resolved_target(std::path::Path::new(&p)))
    {
        files.push(("COHORT_MATMUL_TUNE_FILE", path));
    }
    files
}

/// Refuses an output `path` (given as `flag`) that names one of the `taken` files (each with
/// what names it), then takes it too.
pub(crate) fn claim_output(
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
