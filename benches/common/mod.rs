//! Shared support for cohort's criterion benches (`benches/matmul.rs`, `benches/losses.rs`,
//! `benches/step.rs`): opening
//! the GPU (or a loud skip), choosing the clock, keeping every timed iteration so each bench can
//! print its own median, and merging results into the JSON file named by `COHORT_BENCH_JSON` (the
//! format `benches/reference/torch_reference.py --cohort-json` reads).
//!
//! Environment shared by the benches:
//! - `COHORT_BENCH_SAMPLES`: criterion samples per benchmark (default 20, at least 10); criterion's
//!   own `--sample-size N` takes precedence when given.
//! - `COHORT_BENCH_JSON=path`: merge `{"device", "measures": {key: {...}}}` into that file.
//! - `COHORT_ADAPTER`, `COHORT_HARDWARE_ONLY`: adapter choice, as everywhere in cohort.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cohort::{Backend, CohortError, GpuBackend};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};

/// Where a GPU iteration's time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Timestamp queries around the recorded kernels (`Runtime::time`).
    GpuTimestamps,
    /// Host wall time around recording plus `finish()` (no usable timestamp queries).
    Wall,
}

impl Clock {
    pub fn label(self) -> &'static str {
        match self {
            Clock::GpuTimestamps => "gpu timestamps",
            Clock::Wall => "wall clock",
        }
    }
}

/// Opens the GPU named by the environment, or prints a loud skip banner and returns `None` where
/// there is no adapter. Under `CI=true` a missing adapter is a failure instead, as in the tests
/// (`cargo test` runs every benchmark once). Any other error (an adapter named in
/// `COHORT_ADAPTER` that is missing, an option this device cannot honour, such as a tensor-core
/// layout too big for its workgroup memory) stops the bench with that error: it would measure
/// nothing it was asked to.
pub fn open_gpu(bench: &str) -> Option<GpuBackend> {
    match GpuBackend::from_env() {
        Ok(g) => {
            eprintln!("[{bench}] GPU device: {}", g.describe());
            Some(g)
        }
        Err(
            e @ CohortError::NoAdapter {
                requested: None, ..
            },
        ) => {
            let ci = std::env::var("CI")
                .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false"));
            if ci {
                panic!("CI is set but no GPU adapter is available for the {bench} benches: {e}");
            }
            eprintln!(
                "\n**** SKIPPED: {e}. The {bench} GPU benchmarks did NOT run; only the CPU group \
                 is measured. Install a Vulkan driver (e.g. mesa-vulkan-drivers) to run them. ****\n"
            );
            None
        }
        Err(e) => {
            eprintln!("[{bench}] cannot open the GPU as the environment asks: {e}");
            std::process::exit(2);
        }
    }
}

/// What a bench does when preparing case `what` failed with `e`: a case this device cannot
/// hold or run (a buffer past its limits, more than the host's memory, a feature it lacks) is skipped
/// with a loud line; any other error is a broken kernel or bench, and stops it, so that
/// `cargo test` (which runs each bench once) and the GPU runs fail instead of passing quietly.
pub fn skip_case(what: &str, e: CohortError) {
    match e {
        CohortError::BufferTooLarge { .. }
        | CohortError::HostMemory { .. }
        | CohortError::Unsupported(_) => eprintln!("SKIPPED {what}: {e}"),
        e => panic!("{what}: {e}"),
    }
}

/// Whether criterion runs this bench in test mode (`cargo test`: each benchmark once), not
/// measuring (`cargo bench`, which passes `--bench`).
pub fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// A test-mode run of a bench: its environment settings, and the JSON keys it must record.
pub type TestVariant<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// In test mode, runs this bench binary again once per entry of `variants` (environment
/// settings such as another precision or epilogue), each writing its results to a JSON file of
/// its own, and checks that each succeeds and records every key `expect` lists for it; so the
/// code paths the GPU runs choose by environment cannot rot either. Nothing when measuring,
/// inside such a run, or where the command line names benchmarks (`cargo test FILTER` passes
/// its filter to every test target, these benches included).
pub fn run_test_variants(bench: &str, variants: &[TestVariant]) {
    let filtered = std::env::args().skip(1).any(|a| !a.starts_with('-'));
    if !test_mode() || filtered || std::env::var_os("COHORT_BENCH_VARIANT").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("this bench's path");
    for (i, (env, expect)) in variants.iter().enumerate() {
        let json = std::env::temp_dir().join(format!(
            "cohort-{bench}-variant-{i}-{}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&json);
        let out = std::process::Command::new(&exe)
            .args(std::env::args().skip(1))
            .envs(env.iter().copied())
            .env("COHORT_BENCH_VARIANT", "1")
            .env("COHORT_BENCH_JSON", &json)
            .output()
            .expect("the bench runs again");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "[{bench}] {env:?} failed:\n{said}");
        let written = std::fs::read_to_string(&json).unwrap_or_default();
        let _ = std::fs::remove_file(&json);
        let root: serde_json::Value = serde_json::from_str(&written)
            .unwrap_or_else(|e| panic!("[{bench}] {env:?}: no JSON results ({e}):\n{said}"));
        for key in *expect {
            assert!(
                root["measures"][key].is_object(),
                "[{bench}] {env:?}: no '{key}' in {written}"
            );
        }
        eprintln!(
            "[{bench}] test-mode variant {env:?}: ran, {} keys",
            expect.len()
        );
    }
}

/// Decides once whether timestamp queries give usable times on this device: `Runtime::time` must
/// return a `Some` non-zero duration for `probe` (which records some real work; it also serves as
/// that work's warm-up run).
pub fn pick_clock(
    gpu: &GpuBackend,
    probe: impl FnOnce() -> cohort::Result<()>,
) -> cohort::Result<Clock> {
    let (_, t) = gpu.runtime().time(probe)?;
    gpu.finish()?;
    Ok(match t {
        Some(d) if d > Duration::ZERO => Clock::GpuTimestamps,
        _ => Clock::Wall,
    })
}

/// Runs `record` (which records kernels) once and returns its time under `clock`: the GPU time
/// from `Runtime::time` when it gives one, else host wall time around recording plus `finish()`.
pub fn time_gpu(
    gpu: &GpuBackend,
    clock: Clock,
    mut record: impl FnMut() -> cohort::Result<()>,
) -> Duration {
    match clock {
        Clock::GpuTimestamps => {
            let start = Instant::now();
            let (_, t) = gpu
                .runtime()
                .time(&mut record)
                .expect("recording the kernel failed");
            match t {
                Some(d) => d,
                // No timestamps after all: the work is recorded, not yet run.
                None => {
                    gpu.finish().expect("GPU work failed");
                    start.elapsed()
                }
            }
        }
        Clock::Wall => {
            let start = Instant::now();
            record().expect("recording the kernel failed");
            gpu.finish().expect("GPU work failed");
            start.elapsed()
        }
    }
}

/// Criterion samples per benchmark: `--sample-size N` on the command line, else
/// `COHORT_BENCH_SAMPLES`, else 20 (criterion requires at least 10).
pub fn sample_size() -> usize {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix("--sample-size=") {
            v.parse().ok()
        } else if a == "--sample-size" {
            args.get(i + 1).and_then(|v| v.parse().ok())
        } else {
            None
        }
    });
    let from_env = std::env::var("COHORT_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok());
    from_args.or(from_env).unwrap_or(20usize).max(10)
}

/// Every call criterion made to one `iter_custom` routine, each a list of per-iteration times.
/// Criterion first warms up (calls with 1, 2, 4, ... iterations) and then takes `samples` calls,
/// so the last `samples` calls are the measurement.
#[derive(Default)]
pub struct Samples {
    calls: Vec<Vec<Duration>>,
}

impl Samples {
    /// Runs `one` `iters` times, keeps each time, and returns their sum for criterion.
    pub fn run(&mut self, iters: u64, mut one: impl FnMut() -> Duration) -> Duration {
        let times: Vec<Duration> = (0..iters).map(|_| one()).collect();
        let total = times.iter().sum();
        self.calls.push(times);
        total
    }

    /// Median per-iteration time over the measurement calls, and how many iterations that covers.
    /// `None` when criterion never ran the routine (e.g. filtered out, or `--list`).
    pub fn median(&self, samples: usize) -> Option<(Duration, usize)> {
        let skip = self.calls.len().saturating_sub(samples);
        let mut all: Vec<Duration> = self.calls[skip..].iter().flatten().copied().collect();
        if all.is_empty() {
            return None;
        }
        all.sort();
        let n = all.len();
        let median = if n % 2 == 1 {
            all[n / 2]
        } else {
            (all[n / 2 - 1] + all[n / 2]) / 2
        };
        Some((median, n))
    }
}

/// Benchmarks `one` (which runs one iteration and returns its time) as `id` in `group`, and returns
/// the median per-iteration time over criterion's measurement calls with the iteration count
/// (`None` when criterion did not run it).
pub fn measure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    samples: usize,
    mut one: impl FnMut() -> Duration,
) -> Option<(Duration, usize)> {
    let mut record = Samples::default();
    group.bench_function(id, |bench| {
        bench.iter_custom(|iters| record.run(iters, &mut one))
    });
    record.median(samples)
}

/// Host wall time of `f`.
pub fn wall(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Results merged into `COHORT_BENCH_JSON` (when set) as each is recorded, so that a bench
/// killed part-way (a GPU lease's deadline) keeps what it measured.
#[derive(Default)]
pub struct JsonSink {
    device: Option<String>,
    measures: BTreeMap<String, serde_json::Value>,
}

impl JsonSink {
    pub fn set_device(&mut self, device: String) {
        self.device = Some(device);
    }

    /// Keeps `value` as measure `key` and rewrites the file with it.
    pub fn record(&mut self, key: String, value: serde_json::Value) {
        self.measures.insert(key, value);
        if let Err(why) = self.merge() {
            eprintln!("{why}");
        }
    }

    /// Says how many measures went to the file, at the end of a bench.
    pub fn write(&self) {
        if let Ok(path) = std::env::var("COHORT_BENCH_JSON") {
            if !path.is_empty() && !self.measures.is_empty() {
                eprintln!("wrote {} measures to {path}", self.measures.len());
            }
        }
    }

    /// Merges every measure so far into the file named by `COHORT_BENCH_JSON`, keeping other
    /// benches' keys; written to a temporary file and renamed, so a kill mid-write loses
    /// nothing already there.
    fn merge(&self) -> Result<(), String> {
        let Ok(path) = std::env::var("COHORT_BENCH_JSON") else {
            return Ok(());
        };
        if path.is_empty() {
            return Ok(());
        }
        let mut root: serde_json::Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .filter(|v: &serde_json::Value| v.is_object())
            .unwrap_or_else(|| serde_json::json!({}));
        let obj = root.as_object_mut().expect("object");
        obj.insert("source".into(), "cohort".into());
        obj.insert("cohort_version".into(), env!("CARGO_PKG_VERSION").into());
        if let Some(d) = &self.device {
            obj.insert("device".into(), d.clone().into());
        }
        let measures = obj
            .entry("measures")
            .or_insert_with(|| serde_json::json!({}));
        if !measures.is_object() {
            *measures = serde_json::json!({});
        }
        let m = measures.as_object_mut().expect("object");
        for (k, v) in &self.measures {
            m.insert(k.clone(), v.clone());
        }
        let text = serde_json::to_string_pretty(&root)
            .map_err(|e| format!("could not serialise results: {e}"))?;
        let temporary = format!("{path}.part");
        std::fs::write(&temporary, text + "\n")
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|e| format!("could not write {path}: {e}"))
    }
}

/// Milliseconds of a duration, as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The comma-separated items of environment variable `var` (`default` where it is unset or
/// blank), each read by `parse`; an item `parse` refuses ends the bench, naming the variable.
pub fn env_list<T>(var: &str, default: &str, parse: impl Fn(&str) -> Result<T, String>) -> Vec<T> {
    let text = std::env::var(var).ok().filter(|s| !s.trim().is_empty());
    text.as_deref()
        .unwrap_or(default)
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s).unwrap_or_else(|e| panic!("{var}: {e}")))
        .collect()
}

/// Runs a case once before it is timed, to compile its pipelines and touch its buffers; the
/// first case also picks the clock ([`pick_clock`]) and says which. Returns whether this call
/// picked it.
pub fn warm_up(
    gpu: &GpuBackend,
    clock: &mut Option<Clock>,
    bench: &str,
    run: impl FnOnce() -> cohort::Result<()>,
) -> cohort::Result<bool> {
    if clock.is_some() {
        run()?;
        gpu.finish()?;
        return Ok(false);
    }
    let picked = pick_clock(gpu, run)?;
    eprintln!("[{bench}] timing with {}", picked.label());
    *clock = Some(picked);
    Ok(true)
}

/// Prints a bench's summary: the GPU it ran on (or that it found none) and the CPU, then its
/// rows' lines.
pub fn print_summary(
    bench: &str,
    gpu: Option<&GpuBackend>,
    lines: impl IntoIterator<Item = String>,
) {
    let device = gpu
        .map(|g| g.describe())
        .unwrap_or_else(|| "none (SKIPPED: no GPU adapter)".into());
    eprintln!(
        "\n==== {bench} summary (GPU: {device}; CPU: {}) ====",
        cohort::CpuBackend.describe()
    );
    for line in lines {
        eprintln!("{line}");
    }
}
