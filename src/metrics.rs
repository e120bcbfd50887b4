//! Reporting: per-epoch metrics as JSONL or CSV (one row per epoch per peer, plus the ensemble),
//! and learning curves as an SVG or PNG plot. Every file is rewritten atomically after each epoch.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use serde::Serialize;

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

/// `path`'s extension, lower-cased, if it is one of `allowed` (a name that is all extension,
/// `.jsonl`, counts); else the error that names them, the file called a `what` file.
pub fn extension_of(path: &Path, what: &str, allowed: &[&str]) -> Result<String> {
    // A name that is all extension (`.jsonl`) has none to `Path`, but ends in one all the same.
    let name_only = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .or(name_only)
        .map(str::to_ascii_lowercase)
        .filter(|e| allowed.contains(&e.as_str()));
    ext.ok_or_else(|| {
        CohortError::InvalidConfig(format!(
            "{what} file {} must end in .{}",
            path.display(),
            allowed.join(" or .")
        ))
    })
}

const METRICS_EXTENSIONS: [&str; 3] = ["jsonl", "json", "csv"];
const PLOT_EXTENSIONS: [&str; 2] = ["svg", "png"];

/// Checks, before training, that [`write_metrics`] can write `path`: a known extension, and a
/// folder that takes new files.
pub fn check_metrics_path(path: &Path) -> Result<()> {
    extension_of(path, "metrics", &METRICS_EXTENSIONS)?;
    crate::checkpoint::check_writable(path)
}

/// Checks, before training, that [`plot_curves`] can write `path`: `.svg` or `.png`, and a
/// folder that takes new files.
pub fn check_plot_path(path: &Path) -> Result<()> {
    extension_of(path, "plot", &PLOT_EXTENSIONS)?;
    crate::checkpoint::check_writable(path)
}

/// `rows` as JSON: one object a line (JSON lines, `lines`), or one array of them (a JSON
/// document, as a `.json` file is expected to hold), its objects a line each.
pub fn json_rows<T: Serialize>(rows: &[T], lines: bool) -> Result<String> {
    let objects = (rows.iter())
        .map(|row| {
            serde_json::to_string(row).map_err(|e| CohortError::InvalidConfig(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(match lines {
        true => objects.iter().map(|o| format!("{o}\n")).collect(),
        false if objects.is_empty() => "[]\n".to_string(),
        false => format!("[\n{}\n]\n", objects.join(",\n")),
    })
}

/// Writes the rows to `path`: JSON lines for `.jsonl`, a JSON array for `.json`, CSV for
/// `.csv`.
pub fn write_metrics(path: impl AsRef<Path>, rows: &[MetricsRow]) -> Result<()> {
    let path = path.as_ref();
    let ext = extension_of(path, "metrics", &METRICS_EXTENSIONS)?;
    let mut text = String::new();
    match ext.as_str() {
        "jsonl" | "json" => text = json_rows(rows, ext == "jsonl")?,
        _ => {
            // csv, the one other extension extension_of lets through
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
    }
    write_atomic(path, text.as_bytes())
}

/// Plot size in pixels (SVG user units): two charts side by side.
const PLOT_SIZE: (u32, u32) = (1100, 450);

/// Draws learning curves (test accuracy of each peer and the ensemble; training loss of each
/// peer) as an SVG or PNG file, by the path's extension.
pub fn plot_curves(
    path: impl AsRef<Path>,
    reports: &[EpochReport],
    models: &[String],
) -> Result<()> {
    let path = path.as_ref();
    let ext = extension_of(path, "plot", &PLOT_EXTENSIONS)?;
    if reports.is_empty() {
        return Err(CohortError::EmptyData("no epochs to plot".into()));
    }
    let peers = reports[0].peers.len();
    if let Some(r) = reports.iter().find(|r| r.peers.len() != peers) {
        return Err(CohortError::InvalidConfig(format!(
            "plotting: epoch {} reports {} peers, epoch {} {peers}",
            r.epoch,
            r.peers.len(),
            reports[0].epoch
        )));
    }
    register_font()?;
    let plotting =
        |e: Box<dyn std::error::Error>| CohortError::InvalidConfig(format!("plotting: {e}"));
    let bytes = if ext == "svg" {
        let mut svg = String::new();
        draw(
            SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area(),
            reports,
            models,
        )
        .map_err(plotting)?;
        svg.into_bytes()
    } else {
        let (w, h) = PLOT_SIZE;
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        draw(
            BitMapBackend::with_buffer(&mut rgb, PLOT_SIZE).into_drawing_area(),
            reports,
            models,
        )
        .map_err(plotting)?;
        encode_png(&rgb, PLOT_SIZE)?
    };
    write_atomic(path, &bytes)
}

/// Gives plotters its one font (Ubuntu Light, embedded): text layout needs it for SVG too, and no
/// system font is assumed.
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(CohortError::InvalidConfig(
            "plotting: the embedded font did not load".into(),
        ))
    }
}

/// An 8-bit RGB image as PNG bytes.
fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| CohortError::InvalidConfig(format!("encoding PNG: {e}"));
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// Radius of the dots at each epoch's values (a one-epoch run has no lines to draw).
const POINT: u32 = 3;

/// A chart of one value per epoch on `area`: its caption, whole epochs on the x axis, `y` on
/// the other.
fn epoch_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    epochs: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> std::result::Result<Chart<'a, DB>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(epochs.clone(), y)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((epochs.end - epochs.start + 1.0).round().clamp(2.0, 12.0) as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    Ok(chart)
}

/// The charts' coordinates: epochs and a value, both as f64.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A solid line with dots through `points`, in the legend as `label`.
fn solid_line<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    points: impl Iterator<Item = (f64, f64)>,
    style: ShapeStyle,
    label: String,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(points, style).point_size(POINT))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[EpochReport],
    models: &[String],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(PLOT_SIZE.0 / 2);
    // The epochs reported (a resumed run's may not start at 1), at least one epoch wide.
    let first = reports.iter().map(|r| r.epoch).min().unwrap_or(1) as f64;
    let last = reports.iter().map(|r| r.epoch).max().unwrap_or(1) as f64;
    let epochs = first..last.max(first + 1.0);
    let peers = reports[0].peers.len();
    let label = |i: usize| format!("peer {i} ({})", models.get(i).cloned().unwrap_or_default());
    let per_epoch = |value: &dyn Fn(&EpochReport) -> f32| {
        let points: Vec<(f64, f64)> = (reports.iter())
            .map(|r| (r.epoch as f64, value(r) as f64))
            .collect();
        points.into_iter()
    };

    let accs = reports.iter().flat_map(|r| {
        r.peers
            .iter()
            .map(|p| p.test_accuracy)
            .chain([r.ensemble_accuracy])
    });
    let lo = accs.fold(1.0f32, f32::min).max(0.0) as f64;
    let y = (lo - 0.01).max(0.0)..1.0;
    let mut chart = epoch_chart(&left, "test accuracy", epochs.clone(), y)?;
    for i in 0..peers {
        let color = Palette99::pick(i).to_rgba();
        let accuracy = per_epoch(&|r| r.peers[i].test_accuracy);
        solid_line(&mut chart, accuracy, color.stroke_width(2), label(i))?;
    }
    let ensemble = per_epoch(&|r| r.ensemble_accuracy);
    solid_line(
        &mut chart,
        ensemble,
        BLACK.stroke_width(3),
        "ensemble".into(),
    )?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    let losses = reports
        .iter()
        .flat_map(|r| r.peers.iter().flat_map(|p| [p.train_ce, p.test_loss]));
    let hi = losses.filter(|v| v.is_finite()).fold(0.0f32, f32::max) as f64;
    let caption = "cross-entropy (solid: train, dashed: test)";
    let mut chart = epoch_chart(&right, caption, epochs, 0.0..(hi * 1.05).max(1e-3))?;
    for i in 0..peers {
        let color = Palette99::pick(i).to_rgba();
        // CE alone, comparable across values of α (the KL term's weight), and with the test
        // CE where labels are not smoothed (else it is taken against the smoothed targets);
        // the metrics file has the KL.
        let train_ce = per_epoch(&|r| r.peers[i].train_ce);
        solid_line(&mut chart, train_ce, color.stroke_width(2), label(i))?;
        let test = per_epoch(&|r| r.peers[i].test_loss);
        chart.draw_series(DashedLineSeries::new(
            test.clone(),
            6,
            4,
            color.stroke_width(1),
        ))?;
        chart.draw_series(test.map(|at| Circle::new(at, POINT, color.stroke_width(1))))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::PeerReport;

    #[test]
    fn json_rows_are_lines_or_one_array() {
        let rows = rows(&reports(), &["64-8-10".into(), "64-16-10".into()]);
        let array = json_rows(&rows, false).unwrap();
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&array).unwrap();
        assert_eq!(parsed.len(), rows.len());
        let lines = json_rows(&rows, true).unwrap();
        assert_eq!(lines.lines().count(), rows.len());
        for (line, object) in lines.lines().zip(&parsed) {
            assert_eq!(
                &serde_json::from_str::<serde_json::Value>(line).unwrap(),
                object
            );
        }
        // A JSON document even with no rows; JSON lines then hold none.
        let empty: [MetricsRow; 0] = [];
        assert_eq!(json_rows(&empty, false).unwrap(), "[]\n");
        assert_eq!(json_rows(&empty, true).unwrap(), "");
    }

    fn reports() -> Vec<EpochReport> {
        (1..=3)
            .map(|epoch| {
                let e = epoch as f32;
                EpochReport {
                    epoch,
                    peers: (0..2)
                        .map(|i| PeerReport {
                            train_ce: 1.0 / e + 0.1 * i as f32,
                            train_kl: 0.05,
                            train_accuracy: 0.5 + 0.1 * e,
                            test_loss: 1.2 / e,
                            test_accuracy: 0.5 + 0.1 * e + 0.02 * i as f32,
                        })
                        .collect(),
                    ensemble_accuracy: 0.55 + 0.1 * e,
                    lr: 0.1,
                    seconds: 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn a_name_that_is_all_extension_has_it() {
        let allowed = &METRICS_EXTENSIONS;
        for (name, want) in [
            ("d/.jsonl", Some("jsonl")),
            ("a.CSV", Some("csv")),
            (".txt", None),
        ] {
            let got = extension_of(Path::new(name), "metrics", allowed).ok();
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }

    #[test]
    fn png_and_svg_plots_are_drawn_and_other_extensions_refused() {
        let dir = std::env::temp_dir().join(format!("cohort-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let models = vec!["64-32-10".to_string(), "64-16-10".to_string()];

        let png_path = dir.join("curves.png");
        plot_curves(&png_path, &reports(), &models).unwrap();
        // Read from memory: an open file could not be removed at the end on Windows.
        let png_bytes = std::fs::read(&png_path).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), PLOT_SIZE);
        let pixels = &pixels[..info.buffer_size()];
        // Drawn, not blank: black axes and text, and the first two palette colours of the peers.
        let has = |rgb: (u8, u8, u8)| pixels.chunks_exact(3).any(|p| (p[0], p[1], p[2]) == rgb);
        assert!(has((0, 0, 0)), "black axes, text and ensemble line");
        for i in 0..2 {
            let c = Palette99::pick(i).to_rgba();
            assert!(has((c.0, c.1, c.2)), "peer {i}'s line colour {c:?}");
        }

        // One epoch: no line to draw, but a dot per value (the plot was blank): each peer's
        // test accuracy, train loss and test loss, and the ensemble's accuracy.
        let one_path = dir.join("one.svg");
        plot_curves(&one_path, &reports()[..1], &models).unwrap();
        let one = std::fs::read_to_string(&one_path).unwrap();
        assert_eq!(one.matches("<circle").count(), 2 * 3 + 1, "{one}");

        let svg_path = dir.join("curves.svg");
        plot_curves(&svg_path, &reports(), &models).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("ensemble"));
        // The loss panel plots cross-entropies only: a large KL leaves its axis alone (the CEs
        // are below 1.3, the epochs 1 to 3; train CE + KL would put a tick past 40).
        let mut large_kl = reports();
        large_kl.iter_mut().for_each(|r| r.peers[1].train_kl = 40.0);
        plot_curves(&svg_path, &large_kl, &models).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.contains("cross-entropy (solid: train, dashed: test)"));
        let ticks: Vec<f64> = svg
            .split('>')
            .filter_map(|t| t.split('<').next()?.trim().parse().ok())
            .collect();
        let top = ticks.iter().copied().fold(0.0, f64::max);
        assert!(top < 10.0, "the axes reach {top}: {ticks:?}");

        let err = plot_curves(dir.join("curves.jpg"), &reports(), &models).unwrap_err();
        assert!(err.to_string().contains(".svg or .png"), "{err}");
        let err = plot_curves(&png_path, &[], &models).unwrap_err();
        assert!(matches!(err, CohortError::EmptyData(_)), "{err}");

        // Reports with different peer counts are an error, not an index panic.
        let mut uneven = reports();
        uneven[2].peers.pop();
        let err = plot_curves(&svg_path, &uneven, &models).unwrap_err();
        assert!(err.to_string().contains("epoch 3 reports 1 peers"), "{err}");

        // A resumed run's epochs 5 to 7: the x axis spans them (it ran from 1 to the number of
        // reports, leaving the curves outside the plot).
        let mut later = reports();
        for r in &mut later {
            r.epoch += 4;
        }
        plot_curves(&svg_path, &later, &models).unwrap();
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        let ticks = |epoch: usize| svg.matches(&format!(">\n{epoch}\n</text>")).count();
        assert_eq!(
            (ticks(1), ticks(2), ticks(5), ticks(7)),
            (0, 0, 2, 2),
            "both charts' x axes run from epoch 5 to 7"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
