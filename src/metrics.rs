//! Reporting: per-epoch metrics as JSONL or CSV (one row per epoch per peer, plus the ensemble),
//! and learning curves as an SVG plot. Every file is rewritten atomically after each epoch.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::checkpoint::write_atomic;
use crate::error::{CohortError, Result};
use crate::trainer::EpochReport;

/// One metrics row: a peer's (or the ensemble's) numbers for one epoch.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MetricsRow {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Peer index as text, or "ensemble".
    pub peer: String,
    /// Peer architecture, e.g. `64-128-10`, or "ensemble".
    pub model: String,
    /// Mean training cross-entropy (empty for the ensemble).
    pub train_ce: Option<f32>,
    /// Mean training KL term.
    pub train_kl: Option<f32>,
    /// Training accuracy.
    pub train_accuracy: Option<f32>,
    /// Test cross-entropy.
    pub test_loss: Option<f32>,
    /// Test accuracy.
    pub test_accuracy: f32,
    /// Learning rate at the end of the epoch.
    pub lr: f32,
    /// Seconds of training in the epoch.
    pub seconds: f64,
}

/// Flattens reports into rows, naming each peer by its architecture.
pub fn rows(reports: &[EpochReport], models: &[String]) -> Vec<MetricsRow> {
    let mut out = Vec::new();
    for r in reports {
        for (i, p) in r.peers.iter().enumerate() {
            out.push(MetricsRow {
                epoch: r.epoch,
                peer: i.to_string(),
                model: models.get(i).cloned().unwrap_or_default(),
                train_ce: Some(p.train_ce),
                train_kl: Some(p.train_kl),
                train_accuracy: Some(p.train_accuracy),
                test_loss: Some(p.test_loss),
                test_accuracy: p.test_accuracy,
                lr: r.lr,
                seconds: r.seconds,
            });
        }
        out.push(MetricsRow {
            epoch: r.epoch,
            peer: "ensemble".into(),
            model: "ensemble".into(),
            train_ce: None,
            train_kl: None,
            train_accuracy: None,
            test_loss: None,
            test_accuracy: r.ensemble_accuracy,
            lr: r.lr,
            seconds: r.seconds,
        });
    }
    out
}

/// Writes the rows to `path`: JSON lines for `.jsonl`/`.json`, CSV for `.csv`.
pub fn write_metrics(path: &Path, rows: &[MetricsRow]) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut text = String::new();
    match ext {
        "jsonl" | "json" => {
            for row in rows {
                let line = serde_json::to_string(row)
                    .map_err(|e| CohortError::InvalidConfig(e.to_string()))?;
                text.push_str(&line);
                text.push('\n');
            }
        }
        "csv" => {
            text.push_str("epoch,peer,model,train_ce,train_kl,train_accuracy,test_loss,test_accuracy,lr,seconds\n");
            let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
            for r in rows {
                let _ = writeln!(
                    text,
                    "{},{},{},{},{},{},{},{},{},{:.3}",
                    r.epoch,
                    r.peer,
                    r.model,
                    opt(r.train_ce),
                    opt(r.train_kl),
                    opt(r.train_accuracy),
                    opt(r.test_loss),
                    r.test_accuracy,
                    r.lr,
                    r.seconds
                );
            }
        }
        _ => {
            return Err(CohortError::InvalidConfig(format!(
                "metrics file {} must end in .jsonl or .csv",
                path.display()
            )))
        }
    }
    write_atomic(path, text.as_bytes())
}

/// Draws learning curves (test accuracy of each peer and the ensemble; training loss of each
/// peer) as an SVG file.
pub fn plot_curves(path: &Path, reports: &[EpochReport], models: &[String]) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(CohortError::InvalidConfig(format!(
            "plot file {} must end in .svg",
            path.display()
        )));
    }
    if reports.is_empty() {
        return Err(CohortError::EmptyData("no epochs to plot".into()));
    }
    let mut svg = String::new();
    draw(&mut svg, reports, models)
        .map_err(|e| CohortError::InvalidConfig(format!("plotting: {e}")))?;
    write_atomic(path, svg.as_bytes())
}

fn draw(
    svg: &mut String,
    reports: &[EpochReport],
    models: &[String],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let epochs = reports.len() as f64;
    let peers = reports[0].peers.len();
    let label = |i: usize| format!("peer {i} ({})", models.get(i).cloned().unwrap_or_default());

    let accs = reports.iter().flat_map(|r| {
        r.peers
            .iter()
            .map(|p| p.test_accuracy)
            .chain([r.ensemble_accuracy])
    });
    let lo = accs.fold(1.0f32, f32::min).max(0.0) as f64;
    let mut chart = ChartBuilder::on(&left)
        .caption("test accuracy", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(1.0..epochs.max(2.0), (lo - 0.01).max(0.0)..1.0)?;
    chart.configure_mesh().x_desc("epoch").draw()?;
    for i in 0..peers {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                reports
                    .iter()
                    .map(|r| (r.epoch as f64, r.peers[i].test_accuracy as f64)),
                color.stroke_width(2),
            ))?
            .label(label(i))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .draw_series(LineSeries::new(
            reports
                .iter()
                .map(|r| (r.epoch as f64, r.ensemble_accuracy as f64)),
            BLACK.stroke_width(3),
        ))?
        .label("ensemble")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(3)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    let losses = reports.iter().flat_map(|r| {
        r.peers
            .iter()
            .flat_map(|p| [p.train_ce + p.train_kl, p.test_loss])
    });
    let hi = losses.filter(|v| v.is_finite()).fold(0.0f32, f32::max) as f64;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "loss (solid: train CE + KL, dashed: test CE)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(1.0..epochs.max(2.0), 0.0..(hi * 1.05).max(1e-3))?;
    chart.configure_mesh().x_desc("epoch").draw()?;
    for i in 0..peers {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                reports.iter().map(|r| {
                    (
                        r.epoch as f64,
                        (r.peers[i].train_ce + r.peers[i].train_kl) as f64,
                    )
                }),
                color.stroke_width(2),
            ))?
            .label(label(i))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(DashedLineSeries::new(
            reports
                .iter()
                .map(|r| (r.epoch as f64, r.peers[i].test_loss as f64)),
            6,
            4,
            color.stroke_width(1),
        ))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
