//! The examples README points to, run to the end and their printed results checked. `cargo
//! test` builds them (into `target/<profile>/examples`, beside this test's own `deps` folder)
//! before it runs any test; `cargo test --test examples` alone does not, and an example not
//! built is a loud skip (a failure under CI). Where `../shared/gpu/stage.sh` staged them for a
//! GPU machine beside this test (`.gpu/bin/example-NAME`, as it does given no words), they run
//! from there; `benches/reference/stage_gpu.sh` leaves them out, for room.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example `name` as `cargo test` built it (or as `../shared/gpu/stage.sh` stages it beside
/// this test, `example-NAME`), or `None` (a loud skip) where it was not.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("this test's path");
    let folder = exe.parent().expect("the test's folder");
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let staged = folder.join(format!("example-{file}"));
    if staged.is_file() {
        return Some(staged);
    }
    let path = folder
        .parent()
        .expect("target/<profile>")
        .join("examples")
        .join(file);
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "examples/{name}.rs was not built ({} missing; `cargo test` without --test builds it), \
         so it did NOT run",
        path.display()
    );
    assert!(!common::in_ci(), "CI is set but {message}");
    common::loud(&format!("SKIPPED: {message}"));
    None
}

/// Runs an example and returns its standard output; it must succeed.
fn run(path: &Path) -> String {
    let out = Command::new(path).output().expect("the example starts");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{}: {stdout}{stderr}", path.display());
    stdout
}

/// The percentages on `line` after `after`, in order (`97.2% 95.8%,` gives 97.2 and 95.8).
fn percentages(line: &str, after: &str) -> Vec<f64> {
    let rest = &line[line.find(after).expect(after) + after.len()..];
    rest.split_whitespace()
        .map(|word| word.trim_end_matches(','))
        .take_while(|word| word.ends_with('%'))
        .map(|word| word.trim_end_matches('%').parse().expect("a percentage"))
        .collect()
}

#[test]
fn the_library_example_trains_saves_reloads_and_predicts() {
    let Some(path) = example("library") else {
        return;
    };
    let out = run(&path);
    // The reloaded cohort scores the test rows as the last epoch's report did, so the
    // checkpoint kept every peer's weights; mutual learning reaches the digits' usual accuracy.
    let last_epoch = out.lines().rfind(|l| l.starts_with("epoch ")).expect(&out);
    let reloaded = out
        .lines()
        .find(|l| l.starts_with("reloaded from "))
        .expect(&out);
    let trained = percentages(last_epoch, "peers ");
    assert_eq!(trained.len(), 2, "{out}");
    assert_eq!(trained, percentages(reloaded, "test accuracy "), "{out}");
    let ensemble = percentages(reloaded, "ensemble ");
    assert!(ensemble[0] >= 90.0, "{out}");
    // Three predictions, each the ensemble's class of a test row, mostly the label.
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("row ")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let right = rows
        .iter()
        .filter(|row| {
            let class = row.split("class ").nth(1).and_then(|r| r.split(' ').next());
            let label = row.rsplit("label ").next();
            class.is_some() && class == label
        })
        .count();
    assert!(right >= 2, "{out}");
}

#[test]
fn the_kernels_example_agrees_with_the_cpu_and_times_a_correct_product() {
    // It needs a GPU (without one it says so and does nothing): skipped as the GPU tests are.
    if common::gpu().is_none() {
        return;
    }
    let Some(path) = example("kernels") else {
        return;
    };
    let out = run(&path);
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line '{start}…' in:\n{out}"))
    };
    let numbers = |text: &str| -> Vec<f64> {
        text.split(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | '-')))
            .filter_map(|word| word.parse().ok())
            .collect()
    };
    // "losses within X, gradients within Y": the fused DML loss on the GPU against its twin.
    let agreement = numbers(line("GPU against the CPU reference:"));
    assert_eq!(agreement.len(), 2, "{out}");
    assert!(agreement.iter().all(|&d| d <= 1e-5), "{out}");
    // "matmul N³: ... (C[0,0] = N)": a product of all-ones N x N matrices holds N everywhere.
    let product = line("matmul ");
    let n = numbers(&product["matmul ".len()..product.find('³').expect(product)]);
    let c00 = numbers(&product[product.find("C[0,0] = ").expect(product) + 9..]);
    assert_eq!((n.len(), c00.len()), (1, 1), "{out}");
    assert_eq!(n[0], c00[0], "{out}");
}
