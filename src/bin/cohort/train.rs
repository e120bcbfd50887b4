//! `cohort train` and `cohort compare`: training runs, their progress lines, outputs and summaries.

use indicatif::{ProgressBar, ProgressStyle};

use cohort::config::TrainConfig;
use cohort::data::{Split, Standardizer};
use cohort::trainer::{EpochReport, Trainer};
use cohort::{checkpoint, metrics, Backend, CohortError, Result};

use crate::args::{FileArgs, TrainArgs};
use crate::prepare::{Prepared, Resume};
use crate::text::{count, loss_text, number_text, pct};

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

/// The summary table of an epoch: each peer's losses and test accuracy, then the ensemble's.
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
pub(crate) fn check_compare(args: &TrainArgs, seeds: u64) -> Result<()> {
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

/// `cohort compare`: trains independent peers (α = 0) and the cohort as asked, `seeds` times
/// each on the same seeds, and prints each one's accuracy and test loss as mean ± std.
pub(crate) fn compare<B: Backend>(
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
