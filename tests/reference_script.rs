//! `benches/reference/torch_reference.py` without PyTorch: its comparison and issue-4 target
//! report over saved results (`--from-json`), so the script the GPU machine runs cannot rot
//! unseen. Needs `python3` (a loud skip without it; a failure under `CI=true`, where `.ci/run`
//! installs it).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes `files` (name, JSON) into a fresh directory of its own (the tests run in parallel)
/// and returns it.
fn fixture(files: &[(&str, &str)]) -> PathBuf {
    static FIXTURES: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cohort-reference-{}-{}",
        std::process::id(),
        FIXTURES.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, json) in files {
        std::fs::write(dir.join(name), json).unwrap();
    }
    dir
}

/// The script's stdout for `args`, or `None` without python3.
fn run_script(args: &[String]) -> Option<String> {
    let out = common::python("benches/reference/torch_reference.py", args)?;
    assert!(
        out.status.success(),
        "torch_reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The target report's lines that start with `target` (its best variant's row).
fn target_row<'a>(report: &'a str, target: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(target))
        .unwrap_or_else(|| panic!("no row for '{target}' in:\n{report}"))
}

#[test]
fn target_report_picks_the_best_variant_and_judges_it() {
    let dir = fixture(&[
        (
            "torch.json",
            r#"{"source": "pytorch", "device": "fixture", "measures": {
                "matmul/NN/4096x4096x4096/fp32": {"median_ms": 2.0},
                "matmul/NT/256x1024x784/fp32": {"median_ms": 0.02},
                "dml_step/small/graph/fp32": {"median_ms": 0.54, "memory_bytes": 100663296},
                "dml_step/large/graph/fp32": {"median_ms": 5.5}}}"#,
        ),
        (
            "cohort.json",
            r#"{"device": "fixture gpu", "measures": {
                "matmul/NN/4096x4096x4096/fp32": {"median_ms": 5.0},
                "dml_step/small/fp32": {"median_ms": 0.3, "wall_ms": 0.4,
                    "memory_bytes": 50331648},
                "dml_step/large/fp32": {"median_ms": 7.0, "wall_ms": 7.5}}}"#,
        ),
        (
            "cohort-tile64.json",
            r#"{"measures": {"matmul/NN/4096x4096x4096/fp32": {"median_ms": 3.0},
                "matmul/NT/256x1024x784/fp32": {"median_ms": 0.1}}}"#,
        ),
        (
            "cohort-step-split-f32.json",
            r#"{"measures": {"dml_step/large/fp32": {"median_ms": 5.0, "wall_ms": 5.2}}}"#,
        ),
    ]);
    let path = |f: &str| dir.join(f).display().to_string();
    let mut args = vec![
        "--from-json".into(),
        path("torch.json"),
        "--cohort-json".into(),
    ];
    args.extend(
        [
            "cohort.json",
            "cohort-tile64.json",
            "cohort-step-split-f32.json",
        ]
        .map(path),
    );
    args.push("--targets".into());
    let Some(report) = run_script(&args) else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);

    // 4096³: tile64's 3 ms is 66.7% of PyTorch's throughput (met); the default's 5 ms comes
    // second.
    let row = target_row(&report, "f32 matmul 4096^3");
    assert!(
        row.contains("tile64") && row.contains("66.7%") && row.ends_with("yes"),
        "{row}"
    );
    // 20% of SGEMM for NT 256x1024x784: below the 30% asked.
    let row = target_row(&report, "f32 matmul NT 256x1024x784");
    assert!(row.contains("20.0%") && row.ends_with("no"), "{row}");
    // 0.3 ms against 0.27 ms: not met, whatever PyTorch's time.
    assert!(target_row(&report, "small step f32").ends_with("no"));
    // The split-f32 variant's 5 ms beats PyTorch's 5.5 ms graph; the default's 7 ms does not.
    let row = target_row(&report, "large step f32");
    assert!(
        row.contains("step-split-f32") && row.ends_with("yes"),
        "{row}"
    );
    assert!(target_row(&report, "large step mixed").contains("(not measured)"));
    assert!(report.contains("2 of 13 targets met"), "{report}");
    // And the per-file comparison still prints each file's ratios.
    assert!(report.contains("[tile64]") && report.contains("time x"));
    // Device memory: cohort's 48 MiB against PyTorch's 96 MiB for the small step, and no
    // memory row where a measure has none (the large step).
    let memory: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("device memory"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(memory.len(), 1, "{report}");
    let cells: Vec<&str> = memory[0].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "dml_step/small/fp32",
            "48.00",
            "MiB",
            "dml_step/small/graph/fp32",
            "96.00",
            "MiB",
            "0.50"
        ],
        "{report}"
    );
}

#[test]
fn variant_report_compares_each_measure_with_its_parts_default() {
    let dir = fixture(&[
        (
            "cohort.json",
            r#"{"device": "fixture gpu", "measures": {
                "matmul/NN/4096x4096x4096/fp16": {"median_ms": 1.6},
                "dml_step/small/mixed": {"median_ms": 0.40},
                "dml_step/large/mixed": {"median_ms": 3.3}}}"#,
        ),
        (
            "cohort-coop-default.json",
            r#"{"measures": {"matmul/NN/4096x4096x4096/fp16": {"median_ms": 1.5},
                "matmul/NN/1024x1024x1024/fp16": {"median_ms": 0.05}}}"#,
        ),
        (
            "cohort-coop-prefetch2.json",
            r#"{"measures": {"matmul/NN/4096x4096x4096/fp16": {"median_ms": 1.2},
                "matmul/NN/1024x1024x1024/fp16": {"median_ms": 0.06}}}"#,
        ),
        (
            "cohort-step-rows-x.json",
            r#"{"measures": {"dml_step/small/mixed": {"median_ms": 0.39}}}"#,
        ),
    ]);
    let mut args: Vec<String> = [
        "cohort.json",
        "cohort-coop-default.json",
        "cohort-coop-prefetch2.json",
        "cohort-step-rows-x.json",
    ]
    .iter()
    .map(|f| dir.join(f).display().to_string())
    .collect();
    args.insert(0, "--cohort-json".into());
    args.push("--variants".into());
    let Some(report) = run_script(&args) else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);

    // The rows under a measure's heading, as (label, ratio, mark).
    let rows = |key: &str| -> Vec<(String, String, String)> {
        report
            .lines()
            .skip_while(|l| *l != key)
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                let cell = |i: usize| cells.get(i).copied().unwrap_or("").to_string();
                (cell(0), cell(3), cell(4))
            })
            .collect()
    };
    let row = |label: &str, ratio: &str, mark: &str| {
        (label.to_string(), ratio.to_string(), mark.to_string())
    };
    // 4096³: compared with the coop part's own default, not cohort.json's; fastest first.
    assert_eq!(
        rows("matmul/NN/4096x4096x4096/fp16"),
        [
            row("coop-prefetch2", "0.800x", "faster"),
            row("coop-default", "1.000x", "baseline"),
            row("default", "1.067x", "slower")
        ],
        "{report}"
    );
    assert_eq!(
        rows("matmul/NN/1024x1024x1024/fp16"),
        [
            row("coop-default", "1.000x", "baseline"),
            row("coop-prefetch2", "1.200x", "slower")
        ],
        "{report}"
    );
    // Within 3% of cohort.json's (the only default holding it): not marked.
    assert_eq!(
        rows("dml_step/small/mixed"),
        [
            row("step-rows-x", "0.975x", ""),
            row("default", "1.000x", "baseline")
        ],
        "{report}"
    );
    // A measure only one file holds is no comparison.
    assert!(!report.contains("dml_step/large/mixed"), "{report}");
    // The candidates for new defaults: the one variant 3% or more faster.
    let faster: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("Faster than their baseline"))
        .skip(1)
        .collect();
    assert_eq!(faster.len(), 1, "{report}");
    assert!(
        faster[0].contains("coop-prefetch2") && faster[0].contains("0.800x"),
        "{report}"
    );
}
