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
                "dml_step/small/fp32": {"median_ms": 0.26, "wall_ms": 0.4,
                    "pipelined_ms": 0.3, "memory_bytes": 50331648},
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
    // 0.3 ms back to back against 0.27 ms: not met, whatever PyTorch's time, though one step's
    // GPU time (0.26 ms, beside it) would be.
    let row = target_row(&report, "small step f32");
    assert!(
        row.contains("0.3000") && row.contains("0.2600") && row.ends_with("no"),
        "{row}"
    );
    // The split-f32 variant's 5 ms beats PyTorch's 5.5 ms graph; the default's 7 ms does not.
    let row = target_row(&report, "large step f32");
    assert!(
        row.contains("step-split-f32") && row.ends_with("yes"),
        "{row}"
    );
    assert!(target_row(&report, "large step mixed").contains("(not measured)"));
    assert!(
        report.contains("2 of 13 targets met (4 measured by cohort, 0 of them without"),
        "{report}"
    );
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
fn without_pytorch_the_large_step_is_judged_against_the_issues_figure() {
    // No PyTorch time measured (a PyTorch file without them, or no file): the large f32 step
    // falls back on the issue's 5.5 ms; the share targets have nothing to judge by.
    for (ms, verdict) in [("5.0", "yes"), ("6.0", "no")] {
        let json = format!(
            r#"{{"measures": {{"dml_step/large/fp32": {{"median_ms": {ms}}},
                "matmul/NN/4096x4096x4096/fp32": {{"median_ms": 5.0}}}}}}"#
        );
        let dir = fixture(&[
            ("cohort.json", &json),
            ("torch.json", r#"{"source": "pytorch", "measures": {}}"#),
        ]);
        // A PyTorch file without times, or none at all (`--no-pytorch`: a run cut short).
        let cohort_json = dir.join("cohort.json").display().to_string();
        let torch_json = dir.join("torch.json").display().to_string();
        for pytorch in [
            vec!["--from-json".into(), torch_json],
            vec!["--no-pytorch".into()],
        ] {
            let mut args = pytorch;
            args.extend([
                "--cohort-json".into(),
                cohort_json.clone(),
                "--targets".into(),
            ]);
            let Some(report) = run_script(&args) else {
                return;
            };
            assert!(
                target_row(&report, "large step f32").ends_with(verdict),
                "{ms} ms: {report}"
            );
            assert!(
                target_row(&report, "f32 matmul 4096^3").ends_with('?'),
                "{report}"
            );
            let met = if verdict == "yes" { 1 } else { 0 };
            let count = format!(
                "{met} of 13 targets met (2 measured by cohort, 1 of them without the PyTorch time \
                 they need)"
            );
            assert!(report.contains(&count), "{report}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
#[test]
fn variant_report_compares_each_variant_with_its_parts_defaults() {
    let files = [
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
            "cohort-step-rows-default-f16.json",
            r#"{"measures": {"dml_step/small/mixed": {"median_ms": 0.50}}}"#,
        ),
        (
            "cohort-step-rows-four-f16.json",
            r#"{"measures": {"dml_step/small/mixed": {"median_ms": 0.45}}}"#,
        ),
        (
            "cohort-step-one-pass-f16.json",
            r#"{"measures": {"dml_step/small/mixed": {"median_ms": 0.39}}}"#,
        ),
        (
            "cohort-unchecked.json",
            r#"{"measures": {"matmul/NN/256x1024x784/fp32": {"median_ms": 0.03}}}"#,
        ),
        (
            "cohort-tile128.json",
            r#"{"measures": {"matmul/NN/256x1024x784/fp32": {"median_ms": 0.02}}}"#,
        ),
    ];
    let dir = fixture(&files);
    let mut args: Vec<String> = vec!["--cohort-json".into()];
    args.extend(files.map(|(f, _)| dir.join(f).display().to_string()));
    args.push("--variants".into());
    let Some(report) = run_script(&args) else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);

    // The lines under a measure's heading, words joined by single spaces.
    let rows = |key: &str| -> Vec<String> {
        report
            .lines()
            .skip_while(|l| *l != key)
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    // 4096³: the variant against the coop part's own default, not cohort.json's; fastest first.
    assert_eq!(
        rows("matmul/NN/4096x4096x4096/fp16"),
        [
            "coop-prefetch2 1.2000 ms 0.800x coop-default faster",
            "coop-default 1.5000 ms baseline",
            "default 1.6000 ms baseline",
        ],
        "{report}"
    );
    assert_eq!(
        rows("matmul/NN/1024x1024x1024/fp16"),
        [
            "coop-default 0.0500 ms baseline",
            "coop-prefetch2 0.0600 ms 1.200x coop-default slower",
        ],
        "{report}"
    );
    // Each variant against the default sharing the most words with it: the rows part's for its
    // variant (step, rows, f16) and for the one-pass step (step, f16), not cohort.json's.
    assert_eq!(
        rows("dml_step/small/mixed"),
        [
            "step-one-pass-f16 0.3900 ms 0.780x step-rows-default-f16 faster",
            "default 0.4000 ms baseline",
            "step-rows-four-f16 0.4500 ms 0.900x step-rows-default-f16 faster",
            "step-rows-default-f16 0.5000 ms baseline",
        ],
        "{report}"
    );
    // No default holds this one: shown, not judged.
    assert_eq!(
        rows("matmul/NN/256x1024x784/fp32"),
        [
            "tile128 0.0200 ms (no baseline)",
            "unchecked 0.0300 ms (no baseline)",
        ],
        "{report}"
    );
    // A measure only one file holds is no comparison.
    assert!(!report.contains("dml_step/large/mixed"), "{report}");
    // The candidates for new defaults, best first.
    let faster: Vec<String> = report
        .lines()
        .skip_while(|l| !l.starts_with("Faster than their baseline"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        faster,
        [
            "step-one-pass-f16 dml_step/small/mixed 0.780x step-rows-default-f16",
            "coop-prefetch2 matmul/NN/4096x4096x4096/fp16 0.800x coop-default",
            "step-rows-four-f16 dml_step/small/mixed 0.900x step-rows-default-f16",
        ],
        "{report}"
    );
}

#[test]
fn target_report_sets_the_tensor_core_probes_beside_the_product_and_hgemm() {
    let dir = fixture(&[
        (
            "torch.json",
            r#"{"source": "pytorch", "measures": {
                "matmul/NN/4096x4096x4096/fp16": {"median_ms": 0.2}}}"#,
        ),
        (
            "cohort.json",
            r#"{"measures": {"matmul/NN/4096x4096x4096/fp16": {"median_ms": 2.0},
                "coop-peak/registers": {"median_ms": 1.0, "tflops": 400.0},
                "coop-peak/workgroup": {"median_ms": 2.0, "tflops": 200.0},
                "coop-peak/stores": {"median_ms": 4.0, "tflops": 160.0}}}"#,
        ),
        (
            "cohort-coop-unroll.json",
            r#"{"measures": {"matmul/NN/4096x4096x4096/fp16": {"median_ms": 1.0}}}"#,
        ),
    ]);
    let path = |f: &str| dir.join(f).display().to_string();
    let mut args = vec![
        "--from-json".into(),
        path("torch.json"),
        "--cohort-json".into(),
    ];
    args.extend(["cohort.json", "cohort-coop-unroll.json"].map(path));
    args.push("--targets".into());
    let Some(report) = run_script(&args) else {
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    let row = |what: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no '{what}' in:\n{report}"))
            .to_string()
    };
    // HGEMM: 2·4096³ flops in 0.2 ms = 687.2 TFLOP/s; the best product (1 ms) 137.4. Each row
    // as a share of HGEMM and of the measured row above it; a probe not run says so.
    assert!(row("cuBLAS HGEMM").ends_with("687.2"), "{report}");
    assert!(
        row("fragment products from registers").ends_with("400.0  58.2% of HGEMM"),
        "{report}"
    );
    assert!(
        row("+ fragments loaded").ends_with("29.1% of HGEMM, 50.0% of the row above"),
        "{report}"
    );
    assert!(
        row("+ a barrier per k-slice").ends_with("(not measured)"),
        "{report}"
    );
    assert!(
        row("+ the next k-slice's stores")
            .ends_with("160.0  23.3% of HGEMM, 80.0% of the row above"),
        "{report}"
    );
    let product = row("cohort's f16 product");
    assert!(
        product.ends_with("137.4  20.0% of HGEMM, 85.9% of the row above"),
        "{product}"
    );
}
