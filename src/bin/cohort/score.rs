//! `cohort evaluate` and `cohort predict`: a saved cohort scored on data.

use cohort::data::csv;
use cohort::data::{DataSource, Dataset};
use cohort::{checkpoint, Backend, CohortError, Result};

use crate::args::DataArgs;
use crate::prepare::{claim_output, files_in_use, report_layout, rows_named, warn_of_scale};
use crate::text::{count, loss_text, pct};

/// Reads the checkpoint `path` and the rows to score (the data's test part, or with `all_rows`
/// all of it), standardised with the checkpoint's statistics (not fitted anew), before a device
/// opens. Scoring a test part, warns where the checkpoint cannot show that it did not train on
/// those rows.
pub(crate) fn evaluation_data(
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
        let named = |e| rows_named(e, &format!("the rows to score (--data {})", data.data));
        s.apply(&mut rows).map_err(named)?;
        train
            .as_mut()
            .map(|t| s.apply(t))
            .transpose()
            .map_err(named)?;
        warn_of_scale(
            &rows.features,
            rows.cols,
            "standardised with the checkpoint's statistics, these rows'",
        );
    }
    // Classes counted over the training part too may exceed the model's: these rows' do not.
    rows.classes = classes;
    // A test part: did the cohort train on other rows (which may be among these)?
    match (&train, ckpt.trained_on) {
        _ if all_rows => warn_of_training_rows(&ckpt, train.as_ref(), || {
            Some((rows.fingerprint(), rows.rows))
        }),
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
    Ok((ckpt, rows))
}

/// Scores the checkpoint's cohort on `rows` and prints the table.
pub(crate) fn evaluate<B: Backend>(
    backend: &B,
    ckpt: &checkpoint::Checkpoint,
    rows: &Dataset,
) -> Result<()> {
    let mut trainer = ckpt.restore(backend, None)?;
    let uploaded = trainer.upload(rows)?;
    let eval = trainer.evaluate(&uploaded)?;
    // As predict: scores of logits that overflowed would be printed as if they meant something.
    if let Some((i, loss)) = eval.loss.iter().enumerate().find(|(_, l)| !l.is_finite()) {
        return Err(CohortError::NonFinite {
            what: format!(
                "peer {i}'s loss on these rows ({loss}): its logits overflow (a diverged \
                 cohort?), so its accuracy would mean nothing"
            ),
        });
    }
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
pub(crate) fn prediction_rows(
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
        let mut taken = files_in_use(data);
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
            report_layout(&layout, false, data);
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
    let named = |e| rows_named(e, &format!("the rows to predict (--data {})", data.data));
    let mut train = match (&layout, rows.labels.is_some()) {
        (_, false) => None,
        (Some((_, options)), true) => rows.training_part(options, classes)?,
        (None, true) => train,
    };
    if let Some(s) = &ckpt.standardizer {
        if let Some(t) = train.as_mut() {
            s.apply(t).map_err(named)?;
        }
        s.apply_rows(&mut rows.features).map_err(named)?;
        warn_of_scale(
            &rows.features,
            rows.cols,
            "standardised with the checkpoint's statistics, these rows'",
        );
    }
    warn_of_training_rows(&ckpt, train.as_ref(), || {
        rows.fingerprint(classes).map(|f| (f, rows.rows))
    });
    Ok((ckpt, rows))
}

/// Every row of the data scored: warns where they include the rows the checkpoint trained on,
/// on which a cohort scores better than on new ones: where the data's training part as train
/// took it (`train`) or all of the rows (`all` gives their fingerprint and count, as train took
/// them with its test rows from `--test-data`; asked only where needed, a pass over the rows),
/// standardised with the checkpoint's statistics, have the fingerprint it recorded. Says
/// nothing where it cannot tell (a checkpoint without the record, rows without labels).
fn warn_of_training_rows(
    ckpt: &checkpoint::Checkpoint,
    train: Option<&Dataset>,
    all: impl FnOnce() -> Option<(u64, usize)>,
) {
    let Some(trained_on) = ckpt.trained_on else {
        return;
    };
    if train.is_some_and(|t| t.fingerprint() == trained_on) {
        eprintln!(
            "warning: these rows include the {} the cohort trained on (the data's training \
             part), on which it scores better than on new rows (evaluate without --all-rows \
             scores the test part alone)",
            count(train.map_or(0, |t| t.rows) as u64, "row")
        );
    } else if let Some((_, rows)) = all().filter(|&(f, _)| f == trained_on) {
        eprintln!(
            "warning: these are the {} the cohort trained on (all of them: its test rows came \
             from --test-data), on which it scores better than on new rows",
            count(rows as u64, "row")
        );
    }
}

/// Predicts `rows` with the checkpoint's cohort and writes the CSV table (to `output`
/// atomically, or to standard output); says on standard error how many rows it predicted and,
/// where they have labels, how many each peer and the ensemble got right.
pub(crate) fn predict<B: Backend>(
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
