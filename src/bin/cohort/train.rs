//! `cohort train` and `cohort compare`: training runs, their progress lines, outputs and summaries.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use cohort::config::TrainConfig;
use cohort::data::{Split, Standardizer};
use cohort::trainer::{EpochReport, Trainer};
use cohort::{checkpoint, metrics, Backend, CohortError, Result};

use crate::args::{FileArgs, TrainArgs};
use crate::prepare::{claim_output, files_in_use, Prepared, Resume};
use crate::text::{count, loss_text, number_text, pct};
use cohort::config::short_number;

/// `cohort train`: trains the cohort `prepared` describes on `backend` (from `resume`, if given),
/// writing the files `files` names, then prints the last epoch's summary.
pub(crate) fn train<B: Backend>(
    backend: &B,
    args: &TrainArgs,
    files: &FileArgs,
    prepared: Prepared,
    resume: Option<Resume>,
) -> Result<()> {
    let (split, standardizer, config) = prepared;
    let epochs = config.epochs;
    let models: Vec<String> = config.peers.iter().map(|p| p.name()).collect();
    let smoothing = (config.label_smoothing, config.classes());
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
        print_summary(last, &models, smoothing);
    }
    let epoch = history.last().map_or(0, |r| r.epoch);
    if crate::interrupt::asked().is_some() && epoch < epochs {
        let resume = match &files.save {
            Some(path) => format!("; --resume {} with the same flags goes on", path.display()),
            None => String::new(),
        };
        eprintln!("stopped after epoch {epoch} of {epochs}: interrupted{resume}");
        return Err(CohortError::Stopped);
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
            // The message cut to the terminal's width: a line that wraps is redrawn as two.
            ProgressStyle::with_template("epoch {prefix:>3} [{bar:20}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let steps = split.train.rows.div_ceil(config.batch_size.max(1));
        ProgressBar::new(steps as u64).with_style(style)
    };
    let current_epoch = std::cell::Cell::new(trainer.epochs_done() + 1);
    bar.set_prefix(format!("{}", current_epoch.get()));
    // Said once, from here rather than the signal handler (which may only set a flag).
    let announced = std::cell::Cell::new(false);
    let announce_interrupt = || {
        if !announced.replace(true) {
            eprintln!(
                "interrupted: stopping once this epoch is done and written (again to stop at once)"
            );
        }
    };
    let warned_of_divergence = std::cell::Cell::new(false);
    let warned_of_test_loss = std::cell::Cell::new(false);
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
                     guess's (ln C = {:.4}): training is diverging; a smaller --lr (now {}) or \
                     a --warmup steadies it{}",
                    report.epoch,
                    losses.join(", "),
                    (config.classes() as f32).ln(),
                    short_number(config.optimizer.lr),
                    unscaled(args)
                );
            }
            let overflowing: Vec<String> = (report.peers.iter().enumerate())
                .filter(|(_, r)| !r.test_loss.is_finite())
                .map(|(i, r)| format!("peer {i} {}", r.test_loss))
                .collect();
            if !overflowing.is_empty() && !warned_of_test_loss.replace(true) {
                let f16 = if config.mixed_precision {
                    " (in mixed precision, past f16's 65504 in a hidden layer)"
                } else {
                    ""
                };
                // Where training diverges (warned of above), that is the likelier cause.
                let cause = match warned_of_divergence.get() {
                    true => "the training diverging (above)?",
                    false => "are the test rows scaled as the training rows?",
                };
                eprintln!(
                    "warning: epoch {}: test loss {}: the logits of some test rows overflow{f16}, \
                     so the test accuracy means nothing; {cause}",
                    report.epoch,
                    overflowing.join(", ")
                );
            }
            // The checkpoint first: a metrics or plot file that cannot be written ends the run
            // with the epoch saved (and a resumed run rewrites both from its reports).
            if let Some(path) = &out.files.save {
                checkpoint::save(trainer, standardizer.as_ref(), path)?;
            }
            // Every epoch's report, those before a resume included.
            let history = trainer.reports();
            if let Some(path) = &out.files.metrics {
                metrics::write_metrics(path, &metrics::rows(history, &models))?;
            }
            if let Some(path) = &out.files.plot {
                metrics::plot_curves(path, history, &models)?;
            }
            if crate::interrupt::asked().is_some() {
                announce_interrupt();
                return Err(CohortError::Stopped);
            }
            // Redrawn at 0 steps: under the next epoch's number, without this one's losses.
            bar.set_prefix(format!("{}", report.epoch + 1));
            bar.set_message("");
            bar.reset();
            Ok(())
        },
        |p| {
            if crate::interrupt::asked().is_some() {
                bar.suspend(announce_interrupt);
            }
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
    );
    bar.finish_and_clear();
    if let Err(CohortError::Diverged { .. }) = &history {
        if config.mixed_precision {
            // In f16 an overflow looks like a learning rate too high.
            eprintln!(
                "note: in mixed precision the layers' outputs are f16, and past its 65504 they \
                 overflow: the same flags with --precision f32 tell that from a learning rate \
                 too high{}",
                unscaled(args)
            );
        } else {
            eprintln!(
                "note: the steps grew the weights until the loss overflowed: a smaller --lr \
                 (now {}), a --warmup, or a smaller --alpha or --weight-decay steadies them{}",
                short_number(config.optimizer.lr),
                unscaled(args)
            );
        }
    }
    history
}

/// A hint for messages of overflow and divergence where the features are not standardised.
fn unscaled(args: &TrainArgs) -> &'static str {
    match args.standardize.as_str() {
        "none" => " (and the features are not standardised: --standardize none)",
        _ => "",
    }
}

/// The summary table of an epoch: each peer's losses and test accuracy, then the ensemble's;
/// where the labels were smoothed (`(ε, classes)`), a line under it says what the train CE was
/// taken against.
fn print_summary(report: &EpochReport, models: &[String], (epsilon, classes): (f32, usize)) {
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
    if epsilon > 0.0 {
        println!(
            "(train CE against the labels smoothed by ε = {}: at least their entropy, {:.4}; the \
             test loss against the labels)",
            short_number(epsilon),
            smoothed_entropy(epsilon as f64, classes)
        );
    }
}

/// The entropy of a label smoothed by `epsilon` over `classes` classes (1 − ε + ε/C on the
/// label, ε/C on each other class): the least cross-entropy against it.
fn smoothed_entropy(epsilon: f64, classes: usize) -> f64 {
    let (c, other) = (classes as f64, epsilon / classes as f64);
    let label = 1.0 - epsilon + other;
    let term = |q: f64| if q > 0.0 { -q * q.ln() } else { 0.0 };
    term(label) + (c - 1.0) * term(other)
}

/// Mean and sample standard deviation (None for a single value, where it is undefined).
fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        var.sqrt()
    });
    (mean, std)
}

/// The file formats of compare's --results, by extension.
const RESULTS_EXTENSIONS: [&str; 3] = ["csv", "jsonl", "json"];

/// `path`'s extension if it is one --results writes.
fn results_format(path: &Path) -> Result<String> {
    metrics::extension_of(path, "--results", &RESULTS_EXTENSIONS)
}

/// Compare's own flag checks, and that --results (if given) can be written and is not the data.
pub(crate) fn check_compare(args: &TrainArgs, seeds: u64, results: Option<&Path>) -> Result<()> {
    if seeds == 0 {
        return Err(CohortError::InvalidConfig("--seeds must be ≥ 1".into()));
    }
    if args.alpha <= 0.0 {
        return Err(CohortError::InvalidConfig(
            "compare needs --alpha > 0 for the mutual run".into(),
        ));
    }
    if let Some(path) = results {
        results_format(path)?;
        checkpoint::check_writable(path)?;
        claim_output(&mut files_in_use(&args.data), "--results", path)?;
    }
    Ok(())
}

/// The two runs compare makes on each seed.
const RUNS: [&str; 2] = ["independent", "mutual"];

/// One run's end: its final test accuracies (each peer's, then the ensemble's) and each peer's
/// test cross-entropy.
struct RunEnd {
    seed: u64,
    /// Index into [`RUNS`].
    run: usize,
    alpha: f32,
    accuracy: Vec<f32>,
    loss: Vec<f32>,
}

/// A line of --results: one peer's (or the ensemble's) end of one run.
#[derive(serde::Serialize)]
struct ResultRow<'a> {
    seed: u64,
    run: &'a str,
    alpha: f32,
    /// Peer index as text, or "ensemble".
    peer: String,
    model: &'a str,
    test_accuracy: f32,
    /// Test cross-entropy (none for the ensemble).
    test_loss: Option<f32>,
}

/// Writes every finished run's rows to `path` (atomically), in the format its extension names.
fn write_results(path: &Path, ends: &[RunEnd], models: &[String]) -> Result<()> {
    let mut rows = Vec::new();
    for end in ends {
        for (k, &test_accuracy) in end.accuracy.iter().enumerate() {
            rows.push(ResultRow {
                seed: end.seed,
                run: RUNS[end.run],
                alpha: end.alpha,
                peer: models.get(k).map_or("ensemble".into(), |_| k.to_string()),
                model: models.get(k).map_or("ensemble", |m| m.as_str()),
                test_accuracy,
                test_loss: end.loss.get(k).copied(),
            });
        }
    }
    let mut text = String::new();
    if results_format(path)? == "csv" {
        text.push_str("seed,run,alpha,peer,model,test_accuracy,test_loss\n");
        for r in &rows {
            let loss = r.test_loss.map(|l| l.to_string()).unwrap_or_default();
            text.push_str(&format!(
                "{},{},{},{},{},{},{loss}\n",
                r.seed, r.run, r.alpha, r.peer, r.model, r.test_accuracy
            ));
        }
    } else {
        text = metrics::json_rows(&rows, results_format(path)? == "jsonl")?;
    }
    checkpoint::write_atomic(path, text.as_bytes())
}

/// How the mutual runs differ from the independent ones of the same seeds (which share their
/// initial weights and batch order): the mean difference, its standard error (None for one
/// seed), and on how many seeds the mutual run came out ahead and behind.
struct PairedGain {
    mean: f64,
    standard_error: Option<f64>,
    ahead: usize,
    behind: usize,
}

impl PairedGain {
    /// The gain of `mutual` over `independent` (values in seed order); `lower_is_better` for
    /// losses, where ahead means lower.
    fn of(independent: &[f64], mutual: &[f64], lower_is_better: bool) -> Self {
        let diffs: Vec<f64> = mutual.iter().zip(independent).map(|(m, i)| m - i).collect();
        let (mean, std) = mean_std(&diffs);
        // A NaN difference (a run whose test loss overflowed) is neither.
        let better = |d: f64| if lower_is_better { d < 0.0 } else { d > 0.0 };
        let worse = |d: f64| if lower_is_better { d > 0.0 } else { d < 0.0 };
        let ahead = diffs.iter().filter(|&&d| better(d)).count();
        let behind = diffs.iter().filter(|&&d| worse(d)).count();
        Self {
            mean,
            standard_error: std.map(|s| s / (diffs.len() as f64).sqrt()),
            ahead,
            behind,
        }
    }
}

/// `cohort compare`: trains independent peers (α = 0) and the cohort as asked, `seeds` times
/// each on the same seeds, and prints each one's accuracy and test loss as mean ± std with the
/// paired gain; writes every run's end to `results`, if given.
pub(crate) fn compare<B: Backend>(
    backend: &B,
    args: &TrainArgs,
    seeds: u64,
    results: Option<&Path>,
    prepared: Prepared,
) -> Result<()> {
    let (split, standardizer, base) = prepared;
    let models: Vec<String> = base.peers.iter().map(|p| p.name()).collect();
    let p = base.peers.len();
    let mut ends: Vec<RunEnd> = Vec::new();
    for seed in (0..seeds).map(|i| args.seed.wrapping_add(i)) {
        for (run, alpha) in [(0, 0.0), (1, args.alpha)] {
            let mut config = base.clone();
            config.alpha = alpha;
            config.seed = seed;
            // The progress bar only (unless --quiet); a line per run follows, also unless --quiet.
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
            let mut accuracy: Vec<f32> = last.peers.iter().map(|r| r.test_accuracy).collect();
            accuracy.push(last.ensemble_accuracy);
            if !args.quiet {
                eprintln!(
                    "seed {seed} {:<11}: test accuracy of the peers {}, of the ensemble {}",
                    RUNS[run],
                    accuracy[..p]
                        .iter()
                        .map(|a| pct(*a))
                        .collect::<Vec<_>>()
                        .join(" "),
                    pct(last.ensemble_accuracy)
                );
            }
            ends.push(RunEnd {
                seed,
                run,
                alpha,
                accuracy,
                loss: last.peers.iter().map(|r| r.test_loss).collect(),
            });
            if let Some(path) = results {
                write_results(path, &ends, &models)?;
            }
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
        "{:<28} {:>19} {:>19} {:>17} {:>7}",
        "test accuracy %", "independent (α=0)", "mutual", "gain ± s.e.", "+/-"
    );
    // One member's values of one run kind, in seed order (`loss`: test loss, else accuracy).
    let column = |run: usize, k: usize, loss: bool| -> Vec<f64> {
        let values = |e: &RunEnd| if loss { e.loss[k] } else { e.accuracy[k] };
        let runs = ends.iter().filter(|e| e.run == run);
        runs.map(|e| f64::from(values(e))).collect()
    };
    let row = |name: String, k: usize, loss: bool| {
        let scale = if loss { 1.0 } else { 100.0 };
        let (independent, mutual) = (column(0, k, loss), column(1, k, loss));
        let ((im, is), (mm, ms)) = (mean_std(&independent), mean_std(&mutual));
        let gain = PairedGain::of(&independent, &mutual, loss);
        // Three decimals, or scientific notation for a diverged run's huge losses.
        let num = |v: f64, signed: bool| number_text(v, 3, signed);
        let spread = |s: Option<f64>| s.map_or("n/a".into(), |s| num(scale * s, false));
        println!(
            // Spreads up to 99.999 keep the columns in line.
            "{:<28} {:>10} ± {:<6} {:>10} ± {:<6} {:>8} ± {:<6} {:>7}",
            name,
            num(scale * im, false),
            spread(is),
            num(scale * mm, false),
            spread(ms),
            num(scale * gain.mean, true),
            spread(gain.standard_error),
            format!("{}/{}", gain.ahead, gain.behind)
        );
    };
    for (k, model) in models.iter().enumerate() {
        row(format!("peer {k} ({model})"), k, false);
    }
    row("ensemble".into(), p, false);
    println!("{:<28}", "test cross-entropy (lower is better)");
    for (k, model) in models.iter().enumerate() {
        row(format!("peer {k} ({model})"), k, true);
    }
    println!(
        "gain: the mean over seeds of mutual − independent on the same seed (same initial weights \
         and batches)\n      ± its standard error; +/-: the seeds on which mutual did better / worse"
    );
    if let Some(path) = results {
        eprintln!("results: {}", path.display());
    }
    Ok(())
}
